package election

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/retry"
	"github.com/keyward/keyward/internal/watch"
)

// Observe returns a channel that receives who leads the election: first the leader at the time of the call (a
// Leader with an empty Identity when nobody leads), then every change, in order — each new term, and each
// vacancy (the leader resigned, or its lease ran out without renewal). The channel is closed when ctx ends (or
// the server refuses the subscription after the user's permission for the election's channel was taken away: an
// observer that hears nothing must not pretend to watch). It returns once the subscription is confirmed by the
// server; an ErrInvalid error when the Election has no Redis (WithRedis), and, when ctx ends first, an error
// matching ctx's error and its cause.
//
// Observing costs no polling. Changes arrive as messages on the election's channel; the record is read again
// only when messages may have been lost (the pub/sub connection dropped), when a keyspace notification says it
// was deleted, expired or evicted, and when the leader's lease should have run out — a leader that died sends
// no message, and its record then expires with its lease.
//
// Changes from before the call are not replayed. An observer that falls far behind (more than 64 changes not
// taken from the channel) sees the latest state instead of each change it missed. A read of the record that fails
// is tried again after a backoff, and told to the Election's observer as an Error event.
func (e *Election) Observe(ctx context.Context) (<-chan Leader, error) {
	const op = "observe"
	if ctx == nil {
		return nil, errs.NilContext("election", op, e.name)
	}
	if e.rdb == nil {
		return nil, e.errNoRedis("Observe")
	}
	if ctx.Err() != nil {
		return nil, errs.Context(ctx, "election", op, e.name)
	}
	// The pub/sub connection of e.rdb, shared with every other user of that client; its Reconnected and Error
	// events go to the Election's observer.
	w := watch.Attach(e.rdb, e.observer)
	wt, err := w.Watch(ctx, e.record.key)
	if err != nil {
		_ = w.Close() // an error of the last user's Close goes to the observer given to Attach
		switch {
		case ctx.Err() != nil:
			return nil, e.ctxErr(ctx, op, err)
		case errors.Is(err, keyward.ErrClosed):
			return nil, errs.Closed("election", op, e.name)
		}
		return nil, e.wrap(err)
	}
	o := &observer{e: e, watch: wt, watcher: w, out: make(chan Leader)}
	go o.run(ctx)
	return o.out, nil
}

// observer is one Observe call's goroutine and what it has told its caller.
type observer struct {
	e       *Election
	watch   *watch.Watch
	watcher *watch.Handle // the observer's use of the shared pub/sub connection; closed at the end
	out     chan Leader

	cur     Leader // the state last sent
	sent    bool   // whether anything was sent yet
	timer   *time.Timer
	backoff retry.Backoff
}

func (o *observer) run(ctx context.Context) {
	defer func() {
		o.watch.Close()
		_ = o.watcher.Close() // an error of the last user's Close goes to the observer given to Attach
		close(o.out)
	}()
	o.timer = time.NewTimer(0) // the first read, now that the subscription is confirmed
	defer o.timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.timer.C:
			if !o.read(ctx) {
				return
			}
		case <-o.watch.Ready():
			reread := false
			for _, ev := range o.watch.Events() {
				switch ev.Kind {
				case watch.Released:
					c, ok := parseChange(ev.Payload)
					if !ok {
						reread = true // not ours: look at the record itself
						continue
					}
					if !o.apply(ctx, c) {
						return
					}
				case watch.Closed, watch.Failed: // the watch hears nothing more
					return
				default: // deleted, expired, evicted by another tool or the server; or messages may be lost
					reread = true
				}
			}
			if reread && !o.read(ctx) {
				return
			}
		}
	}
}

// apply acts on an announced change. Terms only go forward: a message about a term older than the one sent
// (published before the first read but delivered after it) changes nothing. It returns false when ctx ended.
func (o *observer) apply(ctx context.Context, c change) bool {
	if c.elected {
		if o.sent && (c.leader.Term < o.cur.Term || c.leader.Term == o.cur.Term && o.cur.Identity != "") {
			return true
		}
		o.arm(c.leader.TTL)
		return o.send(ctx, c.leader)
	}
	if o.sent && (o.cur.Identity == "" || c.leader.Term < o.cur.Term) {
		return true
	}
	o.timer.Stop()
	return o.send(ctx, c.leader)
}

// read reads the record and sends what changed. A failed read is tried again after a backoff. It returns false
// when ctx ended.
func (o *observer) read(ctx context.Context) bool {
	l, ok, err := o.e.record.read(ctx, o.e.rdb)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		o.e.emitError(0, o.e.wrap(fmt.Errorf("observe: %w", err)))
		o.timer.Reset(o.backoff.Next())
		return true
	}
	o.backoff.Reset()
	switch {
	case ok && o.sent && l.Term == o.cur.Term && o.cur.Identity != "":
		o.cur.TTL = l.TTL // the same term, renewed
		o.arm(l.TTL)
		return true
	case ok:
		o.arm(l.TTL) // look again when this lease runs out, even if the record tells nothing new
		return o.apply(ctx, change{elected: true, leader: l})
	case !o.sent:
		o.timer.Stop()
		return o.send(ctx, Leader{})
	case o.cur.Identity != "":
		// The leader's record is gone without a message: its lease ran out (it died, or could not renew).
		o.timer.Stop()
		return o.send(ctx, Leader{Term: o.cur.Term})
	}
	o.timer.Stop()
	return true
}

// arm sets the timer to read the record again just after the leader's lease, as last announced, runs out: a
// leader that died sends no message. A lease of 0 (unknown) arms nothing.
func (o *observer) arm(ttl time.Duration) {
	o.timer.Stop()
	if ttl > 0 {
		o.timer.Reset(ttl + time.Millisecond)
	}
}

func (o *observer) send(ctx context.Context, l Leader) bool {
	o.cur, o.sent = l, true
	select {
	case o.out <- l:
		return true
	case <-ctx.Done():
		return false
	}
}
