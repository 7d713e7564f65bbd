package election

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/retry"
)

// resignTimeout bounds the resignation that Run (and a failed Campaign) send on a context of their own: the
// caller's context may be what ended the leadership, and the lock must be given back all the same.
const resignTimeout = 5 * time.Second

// Campaign waits until this candidate leads the election, as long as ctx allows, and returns its leadership.
// When ctx ends first it returns an error matching ctx's error and its cause, naming the election, and leaves no
// lock, subscription or goroutine behind.
//
// Campaign rides out errors that may pass (Redis restarting or unreachable for a while, a failover): the Locker's
// Obtain waits through them, and a record that cannot be written is tried again after a backoff (10 ms
// doubling to 1 s, jittered; each told to the observer as an Error event), until ctx ends; the error then matches
// ctx's error and the last error alike. Errors that will not pass return at once, wrapped with the election's
// name: ErrInvalid, ErrWrongType, ErrNoPermission, ErrClosed (the Locker's client was closed), a closed client or
// watcher.
//
// ctx bounds the wait only: once elected, the candidate leads until it calls [Leadership.Resign] or the
// leadership is lost ([Leadership.Done] is closed then), and it must call Resign in either case. The leadership
// renews its lease every ttl/3 meanwhile.
//
// Waiting costs no polling: the candidate waits for the lock as [keyward.Locker.Obtain] does, woken by the
// leader's resignation or by a timer at the leader's remaining lease. Once it holds the lock, Campaign writes
// the election's record (with WithRedis) and returns.
func (e *Election) Campaign(ctx context.Context) (*Leadership, error) {
	var parent context.Context
	if ctx != nil { // a nil one is refused by campaign, as a call the observer hears
		parent = context.WithoutCancel(ctx)
	}
	return e.campaign(ctx, parent)
}

// campaignOp names Campaign in its errors.
const campaignOp = "campaign"

// campaign is Campaign with the parent of the leadership's context: Run's ctx, so that a leader's fn stops when
// Run's ctx ends; Campaign's ctx without its cancellation, so that the leadership outlives the wait.
func (e *Election) campaign(ctx, parent context.Context) (lead *Leadership, err error) {
	ctx, call := observe.Start(ctx, e.observer, "election", campaignOp, "", e.name)
	defer func() {
		var term int64
		if lead != nil {
			term = lead.Term()
		}
		call.End(term, err)
	}()
	if ctx == nil { // observe.Start keeps a nil ctx nil
		return nil, errs.NilContext("election", campaignOp, e.name)
	}
	start := time.Now()
	var backoff retry.Backoff
	// again reports err, which may pass, and waits a backoff; a non-nil result ends the campaign.
	again := func(err error) error {
		if ctx.Err() != nil {
			return e.ctxErr(ctx, campaignOp, err)
		}
		err = e.wrap(fmt.Errorf("campaign: %w", err))
		if retry.Permanent(err) {
			return err
		}
		e.emitError(0, err)
		if !backoff.Wait(ctx) {
			return e.ctxErr(ctx, campaignOp, err)
		}
		return nil
	}
	if ctx.Err() != nil {
		return nil, errs.Context(ctx, "election", campaignOp, e.name)
	}
	for {
		l, err := e.locker.Obtain(ctx, e.name, e.ttl)
		if err != nil {
			if err := again(err); err != nil {
				return nil, err
			}
			continue
		}
		keeping, stopKeeping := context.WithCancel(context.Background())
		lead := &Leadership{
			e:           e,
			lock:        l,
			ctx:         newLeaderContext(parent, l),
			elected:     time.Now(),
			stopKeeping: stopKeeping,
			kept:        make(chan struct{}),
		}
		lead.quiet.Store(true) // until the term is announced
		lead.ctx.onLost = lead.tellLost
		go lead.keep(keeping)
		err = lead.publish(ctx)
		if err == nil {
			lead.quiet.Store(false)
			e.emit(ctx, keyward.Event{Kind: keyward.Obtained, Fence: lead.Term(), Wait: time.Since(start)})
			return lead, nil
		}
		// Nobody was told of this term: it is given back without a Released event, and a failure to give it back
		// (the lock then expires with its lease) is a background error.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(e.ttl, resignTimeout))
		if rerr := lead.Resign(rctx); rerr != nil && !errors.Is(rerr, keyward.ErrNotHeld) {
			e.emitError(lead.Term(), rerr)
		}
		cancel()
		if errors.Is(err, keyward.ErrNotHeld) && ctx.Err() == nil {
			// The lease ran out before the record was written (the process stalled for a whole lease), or a
			// later term was elected meanwhile: this candidate does not lead; campaign on.
			continue
		}
		if err := again(err); err != nil {
			return nil, err
		}
	}
}

// A Leadership is one term of this candidate as the election's leader. Its methods are safe for concurrent use.
type Leadership struct {
	e           *Election
	lock        keyward.Lock
	ctx         *leaderContext
	stopKeeping context.CancelFunc // called by Resign: the keeper stops renewing, even mid-renewal
	kept        chan struct{}      // closed when the keeper has returned

	elected  time.Time   // when the lock was obtained: Held of the term's events counts from here
	quiet    atomic.Bool // the observer is not told of this term (it was never handed out)
	lostOnce sync.Once   // the observer is told of a loss once

	mu       sync.Mutex // serialises Resign
	resigned bool       // the lock was given back (or found lost); Resign is done
}

// Term returns the term number: the fencing token of the leadership's lock, larger than that of every earlier
// term. Storage that refuses terms smaller than the largest it has seen cannot be written by a leader that was
// paused past its lease.
func (lead *Leadership) Term() int64 { return lead.lock.Fence() }

// Until returns the local time until which the leadership is known to be held; renewals move it forward.
func (lead *Leadership) Until() time.Time { return lead.lock.Until() }

// Context returns a context that is cancelled when the leadership ends: lost (the cause matches ErrLost),
// resigned (ErrResigned) or, in Run, when Run's ctx ends (its cause). Its Err also compares the clock with
// [Leadership.Until], so that a leader that was paused past its lease sees the loss on its first check after
// waking, before the timers that would report it have had a chance to run. [TermFrom] of it is the term number.
//
// Check Err on this context itself, not on one derived from it, right before an action that must not happen
// after the leadership ended: a derived context learns of the end only when the timers have run.
func (lead *Leadership) Context() context.Context { return lead.ctx }

// Done returns a channel that is closed when the leadership ends: lost, resigned, or (in Run) when Run's ctx
// ends.
func (lead *Leadership) Done() <-chan struct{} { return lead.ctx.Done() }

// Err returns nil while this candidate leads, and why it stopped otherwise: an error matching ErrLost, ErrResigned,
// or the cause of Run's ctx.
func (lead *Leadership) Err() error {
	if lead.ctx.Err() == nil {
		return nil
	}
	return context.Cause(lead.ctx)
}

// Resign ends the leadership: its context is cancelled with ErrResigned (unless it ended before), its lease is
// no longer renewed, its lock is released, so that a waiting candidate leads within a few round trips, and its
// record is withdrawn. Stop the term's work before calling it.
//
// After the leadership was lost, Resign returns the loss (an error matching ErrLost); the next leader's lock
// and record are left alone. After any other error (network, timeout, ctx ended) the outcome is unknown and Resign
// may be called again; the lock expires at the end of its lease in any case. Once Resign has succeeded, further
// calls return nil without a round trip.
//
// The observer hears a Released event for each call that made a round trip (Err: the error Resign returns), and
// a Lost event if the resignation found the leadership lost.
func (lead *Leadership) Resign(ctx context.Context) error {
	if ctx == nil {
		return errs.NilContext("election", "resign", lead.e.name)
	}
	lead.mu.Lock()
	if lead.resigned {
		lead.mu.Unlock()
		return nil
	}
	err := lead.resign(ctx)
	lead.mu.Unlock()
	if errors.Is(err, keyward.ErrNotHeld) {
		lead.tellLost(err)
	}
	if !lead.quiet.Load() {
		lead.e.emit(ctx, keyward.Event{Kind: keyward.Released, Fence: lead.Term(), Held: time.Since(lead.elected),
			Err: err})
	}
	return err
}

// resign is Resign, with lead.mu held.
func (lead *Leadership) resign(ctx context.Context) error {
	lead.ctx.cancel(ErrResigned)
	lead.stopKeeping()
	<-lead.kept

	err := lead.lock.Release(ctx)
	if err != nil && !errors.Is(err, keyward.ErrNotHeld) {
		return lead.resignErr(ctx, err)
	}
	lead.resigned = true
	if lead.e.rdb != nil {
		// After the release, not before: the next candidate is woken one round trip sooner, and the vacate is
		// term-checked, so it cannot delete the record of a leader elected meanwhile.
		err = errors.Join(err, lead.e.record.vacate(ctx, lead.e.rdb, lead.Term()))
	}
	if err != nil {
		return lead.resignErr(ctx, err)
	}
	return nil
}

// resignErr is the error of a resignation that failed with err.
func (lead *Leadership) resignErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, keyward.ErrNotHeld) {
		return lead.e.ctxErr(ctx, "resign", err)
	}
	return lead.e.wrap(fmt.Errorf("resign: %w", err))
}

// lose ends the leadership, lost for cause, unless it ended before.
func (lead *Leadership) lose(cause error) {
	lead.ctx.cancel(cause)
	if context.Cause(lead.ctx) == cause {
		lead.tellLost(cause)
	}
}

// tellLost tells the observer, once, that the leadership was lost for cause.
func (lead *Leadership) tellLost(cause error) {
	if lead.quiet.Load() {
		return
	}
	lead.lostOnce.Do(func() {
		lead.e.emit(context.Background(), keyward.Event{Kind: keyward.Lost, Fence: lead.Term(),
			Held: time.Since(lead.elected), Err: cause})
	})
}

// leader describes this leadership as observers see it.
func (lead *Leadership) leader() Leader {
	return Leader{Identity: lead.e.identity, Term: lead.Term(), TTL: max(time.Until(lead.Until()), 0)}
}

// publish writes the election's record: this candidate leads this term, for the lease it has left.
func (lead *Leadership) publish(ctx context.Context) error {
	if lead.e.rdb == nil {
		return nil
	}
	return lead.e.record.put(ctx, lead.e.rdb, lead.Term(), lead.e.identity, time.Until(lead.Until()))
}

// keep renews the lease (and the record) every ttl/3 until Resign, and ends the leadership when it is lost. A
// renewal that fails for another reason (network, a server restarting) is told to the observer (RefreshFailed)
// and retried every ttl/10 (at most every second); if none succeeds before the lease runs out, the lock reports
// the loss, which ends the leadership.
//
// keep renews the lock itself rather than relying on the Locker's auto-refresh, which a Locker may not have
// been given; a Locker that also refreshes does no harm.
func (lead *Leadership) keep(ctx context.Context) {
	defer close(lead.kept)
	ttl := lead.e.ttl
	timer := time.NewTimer(ttl / 3)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-lead.lock.Lost():
			lead.lose(lead.e.wrap(lead.lock.Err()))
			return
		case <-timer.C:
		}
		err := lead.renew(ctx)
		switch {
		case ctx.Err() != nil: // resigned mid-renewal
			return
		case err == nil:
			timer.Reset(ttl / 3)
		case errors.Is(err, keyward.ErrNotHeld): // the lock was found taken, or a later term was elected
			lead.lose(lead.e.wrap(err))
			return
		default: // tried again until the lease runs out
			if !lead.quiet.Load() {
				lead.e.emit(context.Background(), keyward.Event{Kind: keyward.RefreshFailed, Fence: lead.Term(),
					Err: lead.e.wrap(fmt.Errorf("renew: %w", err))})
			}
			timer.Reset(max(min(ttl/10, time.Second), time.Millisecond))
		}
	}
}

// renew refreshes the lock, then the record, within the lease.
func (lead *Leadership) renew(ctx context.Context) error {
	ctx, cancel := context.WithDeadline(ctx, lead.Until())
	defer cancel()
	if err := lead.lock.Refresh(ctx, lead.e.ttl); err != nil {
		return err
	}
	return lead.publish(ctx)
}

// leaderContext is a leadership's context. Its Err also compares the clock with the lease's deadline.
//
// Why: when a process is paused (SIGSTOP, a long GC, a frozen VM) past its lease and then resumes, the timer
// that marks the lease lost and the work's own timers fire together, in no set order: a leader checking
// ctx.Err() right after waking could see nil and act, although another candidate leads by then. Comparing the
// monotonic clock with the deadline on every Err call closes that window: the first check after waking reports
// the loss.
type leaderContext struct {
	context.Context
	cancel context.CancelCauseFunc
	until  func() time.Time
	onLost func(cause error) // called when Err finds the lease run out; nil: nothing
}

func newLeaderContext(parent context.Context, l keyward.Lock) *leaderContext {
	ctx, cancel := context.WithCancelCause(context.WithValue(parent, termKey{}, l.Fence()))
	return &leaderContext{Context: ctx, cancel: cancel, until: l.Until}
}

// Err returns the context's error, and context.Canceled (cause: an error matching ErrLost) once the lease's
// deadline has passed, even if no timer has reported it yet.
func (c *leaderContext) Err() error {
	if err := c.Context.Err(); err != nil {
		return err
	}
	if time.Now().Before(c.until()) {
		return nil
	}
	cause := fmt.Errorf("%w: the lease ran out", keyward.ErrLeaseExpired)
	c.cancel(cause)
	if c.onLost != nil && context.Cause(c.Context) == cause {
		c.onLost(cause)
	}
	return c.Context.Err()
}
