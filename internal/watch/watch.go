package watch

import "sync"

// maxPending bounds the events a watch keeps until its owner takes them; past it, the events are replaced by
// one Reconnected event (something may have been missed: look again), so a slow owner costs memory only once.
// A Closed or Failed event is kept all the same: it ends the watch.
const maxPending = 64

// A Watch is one waiter's registration for one key. Its owner waits on Ready and takes the events with Events.
type Watch struct {
	w      *Watcher
	h      *Handle // the user whose watch it is; nil for a Watcher's own
	key    string
	chans  []*channel    // guarded by w.mu
	signal chan struct{} // capacity 1: one pending signal covers any number of events

	mu      sync.Mutex
	pending []Event
	err     error // why the watch ended: closed, or the refusal of its subscription
	closed  bool
}

// Key returns the watched key.
func (wt *Watch) Key() string { return wt.key }

// Ready returns a channel that receives when events are pending.
func (wt *Watch) Ready() <-chan struct{} { return wt.signal }

// Events takes the pending events, oldest first.
func (wt *Watch) Events() []Event { return wt.take() }

// Err returns nil while the watch works, and after it ended the reason: an error matching keyward.ErrClosed
// when the Watcher (or the watch's Handle) was closed, or an error matching keyward.ErrNoPermission when the server refused the subscription the watch needs (the
// Err of its Failed event). A watch that ended hears nothing more; waiters then fall back on their timers or
// give up with Err.
func (wt *Watch) Err() error {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	return wt.err
}

func (wt *Watch) take() []Event {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	ev := wt.pending
	wt.pending = nil
	return ev
}

func (wt *Watch) deliver(e Event) {
	wt.mu.Lock()
	switch {
	case len(wt.pending) >= maxPending && (e.Kind == Closed || e.Kind == Failed):
		wt.pending = append(wt.pending[:0], Event{Kind: Reconnected}, e)
	case len(wt.pending) >= maxPending:
		wt.pending = append(wt.pending[:0], Event{Kind: Reconnected})
	default:
		wt.pending = append(wt.pending, e)
	}
	wt.mu.Unlock()
	select {
	case wt.signal <- struct{}{}:
	default:
	}
}

// end delivers the event that ends the watch and records why.
func (wt *Watch) end(e Event, err error) {
	wt.mu.Lock()
	if wt.err == nil {
		wt.err = err
	}
	wt.mu.Unlock()
	wt.deliver(e)
}

// Close ends the watch; the last watch of a channel unsubscribes it. Close is idempotent.
func (wt *Watch) Close() {
	wt.mu.Lock()
	if wt.closed {
		wt.mu.Unlock()
		return
	}
	wt.closed = true
	wt.mu.Unlock()
	wt.w.mu.Lock()
	defer wt.w.mu.Unlock()
	if wt.h != nil {
		delete(wt.h.watches, wt)
	}
	wt.w.removeLocked(wt)
}
