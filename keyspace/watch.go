package keyspace

import (
	"context"
	"fmt"
	"sync"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/watch"
)

// An Event says why a watched key may have changed. Whatever it is, look at the key again.
type Event int

const (
	// Released: a keyward lock on the key was released, or handed to the next waiter (the message of keyward's
	// release script).
	Released Event = iota + 1
	// Deleted: the key was deleted (DEL, UNLINK), from the server's keyspace notifications.
	Deleted
	// Expired: the key expired, from the server's keyspace notifications.
	Expired
	// Evicted: the key was evicted under maxmemory, from the server's keyspace notifications.
	Evicted
	// Reconnected: messages may have been lost — the connection dropped, went silent, was found deaf after a
	// failover, or the key moved to another cluster master. It comes once when that is found, and once more when
	// the watch is subscribed again.
	Reconnected
)

var eventNames = [...]string{
	Released: "released", Deleted: "deleted", Expired: "expired", Evicted: "evicted", Reconnected: "reconnected",
}

// String returns the event's name in lower case, e.g. "released".
func (e Event) String() string {
	if e > 0 && int(e) < len(eventNames) {
		return eventNames[e]
	}
	return fmt.Sprintf("Event(%d)", int(e))
}

// A Watch is the watch of one key. Events are kept from the moment Watch returned until Wait takes them, so none
// is missed between two Waits; a watch whose events are not taken keeps at most 64, and then one Reconnected in
// their place.
type Watch struct {
	wt   *watch.Watch
	done chan struct{} // closed by Close
	more chan struct{} // capacity 1: events are left in buf for another Wait

	mu     sync.Mutex
	buf    []watch.Event // taken from wt, not yet returned by Wait
	err    error         // why the watch ended, once it did
	closed bool
}

func newWatch(wt *watch.Watch) *Watch {
	return &Watch{wt: wt, done: make(chan struct{}), more: make(chan struct{}, 1)}
}

// Wait returns the next event, waiting for it if none is pending. It returns an error, and no event, for a nil ctx
// (matching keyward.ErrInvalid), when ctx ends first (matching ctx's error and its cause), when the watch or its
// Watcher was closed (keyward.ErrClosed), or when the server refused the subscription after the user's permission
// for the channel was taken away (keyward.ErrNoPermission). A watch that ended hears nothing more: every later
// Wait returns the same error. Wait may be called from several goroutines; each event goes to one of them.
func (x *Watch) Wait(ctx context.Context) (Event, error) {
	if ctx == nil {
		return 0, errs.NilContext("keyspace", "wait", x.wt.Key())
	}
	for {
		if e, ok, err := x.next(); ok {
			return e, err
		}
		select {
		case <-x.wt.Ready():
		case <-x.more:
		case <-x.done:
		case <-ctx.Done():
			return 0, errs.Context(ctx, "keyspace", "wait", x.wt.Key())
		}
	}
}

// next returns the next pending event or the error that ended the watch; ok is false when there is neither.
func (x *Watch) next() (Event, bool, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for {
		if x.closed {
			return 0, true, errs.Closed("keyspace", "wait", x.wt.Key())
		}
		if x.err != nil {
			return 0, true, x.err
		}
		if len(x.buf) == 0 {
			if x.buf = x.wt.Events(); len(x.buf) == 0 {
				return 0, false, nil
			}
		}
		e := x.buf[0]
		if x.buf = x.buf[1:]; len(x.buf) > 0 {
			select { // another goroutine's Wait may be waiting: it takes the next one
			case x.more <- struct{}{}:
			default:
			}
		}
		switch e.Kind {
		case watch.Released:
			return Released, true, nil
		case watch.Deleted:
			return Deleted, true, nil
		case watch.Expired:
			return Expired, true, nil
		case watch.Evicted:
			return Evicted, true, nil
		case watch.Reconnected:
			return Reconnected, true, nil
		case watch.Closed:
			x.err = errs.Closed("keyspace", "wait", x.wt.Key())
		case watch.Failed:
			if x.err = e.Err; x.err == nil {
				x.err = fmt.Errorf("%w: subscription refused", keyward.ErrNoPermission)
			}
		}
	}
}

// Close ends the watch: a Wait in progress returns an error matching keyward.ErrClosed, and the subscription is
// dropped when no other watch of the client needs it. Close is idempotent.
func (x *Watch) Close() {
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return
	}
	x.closed = true
	close(x.done)
	x.mu.Unlock()
	x.wt.Close()
}
