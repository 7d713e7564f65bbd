package lock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/lease"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/retry"
	"github.com/keyward/keyward/internal/script"
	"github.com/keyward/keyward/internal/waitq"
	"github.com/keyward/keyward/internal/watch"
)

// Obtain takes the lock key for ttl, waiting as long as ctx allows when another holder has it. When ctx ends
// first it returns an error that matches ctx's error and its cause and names the key, and leaves no goroutine
// behind; after Close (also when Close ends its wait), an error matching ErrClosed. A subscription it needed
// outlives the last waiter of its key by a second, for the next one; Close ends it at once.
//
// Obtain rides out errors that may pass (the server restarting or unreachable for a while, a dropped connection,
// a failover): it tries again after a backoff (10 ms doubling to 1 s, jittered) until ctx ends, and then returns
// an error that matches ctx's error and the last try's error alike. Errors that will not pass return at once:
// ErrInvalid, ErrWrongType, ErrNoPermission, a closed watcher.
//
// Waiting costs no polling. Goroutines of one Client that wait for the same key queue up in arrival order and
// only the first contends at Redis. The first try costs one round trip and no subscription; after a failed try
// the waiter subscribes to the lock's release channel through the pub/sub connection its client shares (confirmed by the
// server), tries once more — that try closes the window in which a release could slip by unseen — and then
// waits for the first of: a release message, a keyspace notification for the key, a timer at the holder's
// remaining ttl (the holder may have crashed), or ctx.
//
// Hand-off is fair across processes: waiting processes queue in Redis, and a release reserves the lock for the
// first of them for a short claim window and wakes only it. A holder whose own Client has waiters hands the lock
// to the first of them in the release's round trip, up to [WithCohort] times in a row while other processes
// wait.
//
// The observer hears Obtained (Wait: since the call began), and, when the call had to wait, WaitStarted and
// WaitEnded.
func (c *Client) Obtain(ctx context.Context, key string, ttl time.Duration, opts ...ObtainOption) (l *Lock, err error) {
	ctx, call := c.start(ctx, "obtain", key)
	defer func() { call.End(observe.Fence(l), err) }()
	a, err := c.newAttempt(ctx, "obtain", key, ttl, opts)
	if err != nil {
		return nil, err
	}
	l, err = c.obtain(ctx, a)
	if err != nil {
		return nil, err
	}
	c.emit(ctx, keyward.Event{Kind: keyward.Obtained, Key: a.names.Lock, Fence: l.fence, Wait: time.Since(a.start)})
	return l, nil
}

// obtain is Obtain once its arguments are checked.
func (c *Client) obtain(ctx context.Context, a *attempt) (*Lock, error) {
	w := &waiter{Entry: waitq.NewEntry(), a: a}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errs.Closed("lock", a.op, a.key)
	}
	q := c.queueLocked(a.names.Lock)
	q.waiters.Add(w)
	// With a subscription in place (it outlives the last waiter by watchLinger: the key was contended a moment
	// ago), the first try is the waiting one, which joins the Redis queue: it comes after a confirmed
	// subscription, so no second try is needed.
	first := q.contenderLocked() == w && q.watch == nil
	w.Trying = first
	c.mu.Unlock()

	if first {
		// The uncontended path: one round trip, no subscription, no place in the Redis queue.
		l, _, err := a.try(ctx)
		c.endTry(w)
		if err == nil {
			c.obtained(q, w, l)
			return l, nil
		}
		if !errors.Is(err, keyward.ErrNotObtained) {
			if ctx.Err() != nil || retry.Permanent(err) {
				return c.quit(ctx, q, w, err)
			}
			w.Fail(err) // the server may be restarting: wait a backoff, then try again
		}
	}
	c.emit(ctx, keyward.Event{Kind: keyward.WaitStarted, Key: a.names.Lock})
	start := time.Now()
	l, err := c.wait(ctx, q, w)
	c.emit(ctx, keyward.Event{Kind: keyward.WaitEnded, Key: a.names.Lock, Wait: time.Since(start), Err: err})
	return l, err
}

// Do obtains the lock key as Obtain does, with auto-refresh, and runs fn while holding it. fn's context is
// cancelled the moment the lock is lost, with a cause matching ErrLost (see context.Cause), and carries the lock's
// fencing token (FenceFrom). The lock is released when fn returns, also when fn panics. Do returns fn's error
// joined with the release's, or the error of Obtain (matching ErrClosed after Close, ctx's error and cause when
// ctx ended first).
func (c *Client) Do(ctx context.Context, key string, ttl time.Duration, fn func(ctx context.Context) error, opts ...ObtainOption) (err error) {
	ctx, call := c.start(ctx, "do", key)
	var fence int64
	defer func() { call.End(fence, err) }()
	l, err := c.Obtain(ctx, key, ttl, append(slices.Clip(opts), WithAutoRefresh())...)
	if err != nil {
		return err
	}
	fence, err = l.fence, observe.ErrPanicked // what Ended reports if fn panics
	return l.wrap(lease.Run(context.WithValue(ctx, fenceKey{}, l.fence), l.lease, fn))
}

// fenceKey is the context key of the fencing token Do gives fn.
type fenceKey struct{}

// FenceFrom returns the fencing token of the lock Do holds while it runs fn, from fn's ctx, and whether ctx has
// one. Storage that refuses a write whose fence is smaller than the largest it has seen is safe from a holder that
// paused past its lease (see Lock.Fence). A nil ctx has none.
func FenceFrom(ctx context.Context) (int64, bool) {
	if ctx == nil {
		return 0, false
	}
	f, ok := ctx.Value(fenceKey{}).(int64)
	return f, ok
}

// queue is a Client's line of goroutines waiting for one lock key. Its fields are guarded by Client.mu.
type queue struct {
	key     string
	waiters waitq.Line[*waiter]
	holder  *Lock        // a lock on this key held through this Client, if any
	cohort  int          // hand-offs to this Client's own waiters since the lock last went through Redis
	joined  bool         // a waiter sent a try that joins the Redis queue: the last to give up leaves it
	watch   *watch.Watch // the subscription the contender waits on; shared by the successive contenders
	linger  *time.Timer  // closes watch and drops the queue, once nobody has waited for watchLinger
}

// watchLinger is how long a queue keeps its subscription after its last waiter left. A key that is contended
// now is likely to be contended again soon: keeping the subscription spares the next waiter a SUBSCRIBE, the
// UNSUBSCRIBE before it, and the second try that must follow a new subscription. It costs a subscription per
// key contended in the last second.
const watchLinger = time.Second

// waiter is one goroutine in Obtain. It is woken when it became the contender, or was handed the lock.
type waiter struct {
	waitq.Entry // its place in the queue, guarded by Client.mu
	a           *attempt
	// Guarded by Client.mu:
	lock *Lock // the lock handed over by a releasing holder
	// queued: a release by this Client put it back in the Redis queue, after the waiter's subscription was
	// confirmed; its next try could only fail, so it waits for the next event instead.
	queued bool
}

// errBackOff is tryAsWaiter's report of a try that failed with an error that may pass: the waiter backs off.
var errBackOff = errors.New("back off")

// errNoTry is tryAsWaiter's report of a try it did not send: the waiter is no longer the contender, or a lock is
// being handed to it.
var errNoTry = errors.New("no try")

// startTry marks w as trying at Redis, unless it may not: it is not the contender, or a release is handing it the
// lock, or did.
func (c *Client) startTry(q *queue, w *waiter) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w.Handing || w.lock != nil || q.contenderLocked() != w {
		return false
	}
	w.Trying = true
	return true
}

// endTry marks w's try as answered (or failed).
func (c *Client) endTry(w *waiter) {
	c.mu.Lock()
	w.Trying = false
	c.mu.Unlock()
}

func (c *Client) queueLocked(key string) *queue {
	q := c.queues[key]
	if q == nil {
		q = &queue{key: key}
		c.queues[key] = q
	}
	if q.linger != nil {
		q.linger.Stop()
		q.linger = nil
	}
	return q
}

// contenderLocked returns the waiter that may contend at Redis: the first one, unless a lock held through this
// Client will be handed to it.
func (q *queue) contenderLocked() *waiter {
	if q.holder != nil && q.holder.Err() == nil {
		return nil
	}
	return q.waiters.First()
}

// tidyLocked drops the queue once nobody waits and nothing is held through it; a queue with a subscription is
// dropped with it after watchLinger, unless somebody waits for the key again before (or at once after Close).
func (c *Client) tidyLocked(q *queue) {
	if q.waiters.Len() > 0 || q.holder != nil || q.linger != nil {
		return
	}
	if q.watch == nil || c.closed {
		delete(c.queues, q.key)
		return
	}
	var linger *time.Timer
	linger = time.AfterFunc(watchLinger, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if q.linger == linger { // not stopped by a new waiter in the meantime
			c.dropLocked(q)
		}
	})
	q.linger = linger
}

// dropLocked closes q's subscription and forgets q.
func (c *Client) dropLocked(q *queue) {
	if q.linger != nil {
		q.linger.Stop()
		q.linger = nil
	}
	if q.watch != nil {
		q.watch.Close()
		q.watch = nil
	}
	if c.queues[q.key] == q {
		delete(c.queues, q.key)
	}
}

// obtained records that w got l and lets the next waiter take its turn.
func (c *Client) obtained(q *queue, w *waiter, l *Lock) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q.waiters.Remove(w)
	q.holder = l
}

// wait is Obtain after its first try failed, or when other goroutines were in line first.
func (c *Client) wait(ctx context.Context, q *queue, w *waiter) (*Lock, error) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	<-timer.C
	for {
		// Until it is this waiter's turn to contend at Redis: a hand-over, or the turn itself.
		c.mu.Lock()
		if l := w.lock; l != nil {
			c.mu.Unlock()
			return l, nil
		}
		if c.closed {
			c.mu.Unlock()
			return c.quit(ctx, q, w, nil)
		}
		contend := q.contenderLocked() == w && !w.Handing
		var holderLost <-chan struct{}
		if q.holder != nil {
			holderLost = q.holder.Lost()
		}
		c.mu.Unlock()
		if !contend {
			select {
			case <-w.Wake():
			case <-holderLost:
			case <-c.done:
			case <-ctx.Done():
				return c.quit(ctx, q, w, nil)
			}
			continue // handed the lock, or the contender now, or closed
		}

		if w.Failed != nil {
			l, err, again := c.retry(ctx, q, w, timer)
			if l != nil || err != nil {
				return l, err
			}
			if again {
				continue
			}
		}
		watch, err := c.subscribe(ctx, q)
		if err != nil {
			return c.quit(ctx, q, w, err)
		}
		if l, err := c.contend(ctx, q, w, watch, timer); l != nil || err != nil {
			return l, err
		}
		// No longer the contender (a holder of this Client will hand the lock over), or backing off.
	}
}

// retry is the contender's way back after a try that failed without an answer (the server restarting, a dropped
// connection): it waits a backoff, taking a hand-over meanwhile, and then, unless the waiter is subscribed, tries
// once without a subscription, which cannot be confirmed while the server is away. It returns the lock, an error,
// or neither; again when the waiter must start its turn over (woken, or the try failed again).
func (c *Client) retry(ctx context.Context, q *queue, w *waiter, timer *time.Timer) (_ *Lock, _ error, again bool) {
	if d := time.Until(w.RetryAt); d > 0 {
		timer.Reset(d)
		select {
		case <-timer.C:
		case <-w.Wake():
			timer.Stop()
			return nil, nil, true // handed the lock, or no longer the contender
		case <-c.done:
			timer.Stop()
			return nil, nil, true // closed
		case <-ctx.Done():
			timer.Stop()
			l, err := c.quit(ctx, q, w, nil)
			return l, err, true
		}
	}
	c.mu.Lock()
	subscribed := q.watch != nil
	c.mu.Unlock()
	if subscribed {
		return nil, nil, false // the queued try follows
	}
	if !c.startTry(q, w) {
		select { // a release is handing the lock to w, or w is no longer the contender
		case <-w.Wake():
			return nil, nil, true
		case <-c.done:
			return nil, nil, true
		case <-ctx.Done():
			l, err := c.quit(ctx, q, w, nil)
			return l, err, true
		}
	}
	l, _, err := w.a.try(ctx)
	c.endTry(w)
	switch {
	case err == nil:
		c.obtained(q, w, l)
		return l, nil, false
	case errors.Is(err, keyward.ErrNotObtained):
		w.Answered() // the server is back: subscribe, then try as a waiter
		return nil, nil, false
	case ctx.Err() != nil || retry.Permanent(err):
		l, err := c.quit(ctx, q, w, err)
		return l, err, true
	}
	w.Fail(err)
	return nil, nil, true
}

// contend tries at Redis as the contender, then waits for a reason to try again. It returns the lock, an error,
// or neither when the waiter is no longer the contender.
func (c *Client) contend(ctx context.Context, q *queue, w *waiter, watch *watch.Watch, timer *time.Timer) (*Lock, error) {
	for {
		c.mu.Lock()
		queued := w.queued
		w.queued = false
		c.mu.Unlock()
		if queued {
			// The release that queued this Client reserved the lock for another process, and the watch will
			// hear what happens to it next; should that process not claim it, the timer ends the wait.
			arm(timer, c.opts.ClaimWindow)
		} else if l, err := c.tryAsWaiter(ctx, q, w, watch, timer); l != nil || err != nil {
			if err == errBackOff || err == errNoTry {
				return nil, nil
			}
			return l, err
		}

		for waiting := true; waiting; {
			select {
			case <-watch.Ready():
				now, err := c.tryNow(watch.Events(), timer)
				if err != nil {
					return c.quit(ctx, q, w, fmt.Errorf("lock %q: %w", w.a.key, err))
				}
				waiting = !now
			case <-timer.C:
				waiting = false
			case <-w.Wake():
				c.mu.Lock()
				still := q.contenderLocked() == w && !w.Handing && w.lock == nil
				c.mu.Unlock()
				if !still {
					return nil, nil // handed the lock, or a holder of this Client will hand it over
				}
				waiting = false // a holder of this Client gave the lock back to Redis: try
			case <-c.done:
				return c.quit(ctx, q, w, nil)
			case <-ctx.Done():
				return c.quit(ctx, q, w, nil)
			}
		}
	}
}

// tryAsWaiter is one try of the contender w, which joins (or keeps its place in) the Redis queue when the lock is
// taken; the timer is then set to the holder's remaining ttl. It returns the lock, an error, or neither; errBackOff
// when the try failed with an error that may pass, errNoTry when w may not try (see startTry).
func (c *Client) tryAsWaiter(ctx context.Context, q *queue, w *waiter, watch *watch.Watch, timer *time.Timer) (*Lock, error) {
	// Whatever the watch reported before this try is answered by the try itself.
	select {
	case <-watch.Ready():
	default:
	}
	watch.Events()

	if !c.startTry(q, w) {
		return nil, errNoTry
	}
	c.mu.Lock()
	q.joined = true
	c.mu.Unlock()
	c.tries.Add(1)
	start := time.Now()
	res, err := script.AcquireQueued(ctx, c.rdb, w.a.names, w.a.value, w.a.ttl, c.id, script.QueueTTL(w.a.ttl))
	c.endTry(w)
	if err != nil {
		if !script.IsReply(err) {
			w.a.cleanUp(ctx)
		}
		err = fmt.Errorf("lock %q: %s: %w", w.a.key, w.a.op, err)
		if ctx.Err() != nil || retry.Permanent(err) {
			return c.quit(ctx, q, w, err)
		}
		w.Fail(err)
		return nil, errBackOff
	}
	w.Answered()
	if res.OK {
		l := c.newLock(w.a, start, res.Fence)
		c.obtained(q, w, l)
		return l, nil
	}
	c.failedTries.Add(1)
	arm(timer, res.PTTL)
	return nil, nil
}

// tryNow reads the watch's events: whether one says the lock may be free for this Client (a release, a
// reservation for this Client, a deletion, expiry, eviction, a reconnect), or whether the watch ended, with why:
// ErrClosed when the Client was closed, or the refusal of the subscription (the user's permission for
// the release channel was taken away), which waiting on timers alone would hide. A reservation for another
// process re-arms the timer to its claim window (that process may not claim it).
func (c *Client) tryNow(events []watch.Event, timer *time.Timer) (now bool, err error) {
	for _, e := range events {
		switch e.Kind {
		case watch.Closed:
			return false, keyward.ErrClosed
		case watch.Failed:
			if e.Err != nil {
				return false, e.Err
			}
			return false, keyward.ErrNoPermission
		case watch.Released:
			id, window, reserved := script.ParseReservation(e.Payload)
			if reserved && id != c.id {
				arm(timer, window)
				continue
			}
		}
		now = true
	}
	return now, nil
}

// arm sets the timer to fire a little after d (see waitq.Late: the key has expired on the server by then, and
// processes whose timers were set by the same event do not all try at once). A negative d (the key has no expiry)
// leaves the timer stopped.
func arm(timer *time.Timer, d time.Duration) {
	timer.Stop()
	if d < 0 {
		return
	}
	timer.Reset(waitq.Late(d))
}

// subscribe returns the queue's subscription, creating it (confirmed by the server) for the first contender.
func (c *Client) subscribe(ctx context.Context, q *queue) (*watch.Watch, error) {
	c.mu.Lock()
	watch := q.watch
	if watch != nil && watch.Err() != nil {
		// The watch ended (its subscription was refused, or the watcher closed): subscribing again either
		// returns that error at once or, when the permission is back, gives a working watch.
		watch.Close()
		q.watch, watch = nil, nil
	}
	c.mu.Unlock()
	if watch != nil {
		return watch, nil
	}
	watch, err := c.watcher.Watch(ctx, q.key)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if q.watch != nil { // cannot happen: only the contender subscribes
		watch.Close()
		return q.watch, nil
	}
	q.watch = watch
	return watch, nil
}

// quit takes w out of the line: it gives up, because ctx ended or the Client was closed (err is nil, or the error
// that caused) or with err, which will not pass. It returns ctx's error (with w's last failure), errs.Closed, or
// err. A lock handed to w meanwhile is released, and so is one a releasing holder is handing to it right now, or
// may have handed to it (its answer was lost): the observer hears CleanedUp. When nobody of this Client waits any
// more, the Client leaves the Redis queue, giving back the lock if a release reserved it for the Client: the next
// process gets it at once, not after a claim window.
func (c *Client) quit(ctx context.Context, q *queue, w *waiter, err error) (*Lock, error) {
	switch {
	case ctx.Err() != nil:
		err = ctxEnded(ctx, w.a.op, w.a.key, w.Failed)
	case c.isClosed():
		err = errs.Closed("lock", w.a.op, w.a.key)
	}
	c.mu.Lock()
	handed := w.lock
	if handed == nil && w.Handing {
		w.Abandoned = true // the releasing holder releases what it hands over
	}
	maybeHeld := handed == nil && !w.Handing && w.MaybeHeld
	q.waiters.Remove(w)
	if n := q.contenderLocked(); n != nil {
		n.Signal()
	}
	lastOut := q.waiters.Len() == 0
	giveBack := lastOut && q.joined
	if giveBack {
		q.joined = false
	}
	if lastOut && q.holder == nil && ctx.Err() != nil {
		c.dropLocked(q) // a waiter that gives up is no sign of contention to come: no linger
	} else {
		c.tidyLocked(q)
	}
	c.mu.Unlock()
	if handed == nil && !maybeHeld && !giveBack {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if handed != nil {
		c.undo(rctx, handed)
	}
	if maybeHeld {
		w.a.cleanUp(rctx)
	}
	if giveBack {
		// Nobody of this Client waits any more: leave the Redis queue, so that the next release does not reserve
		// the lock for a Client that will not claim it, and pass on a reservation already made for it. Should
		// that fail, the place expires with the queue, and releases reserve the lock for this Client meanwhile.
		if _, gerr := script.GiveBack(rctx, c.rdb, w.a.names, c.id, c.publish, c.opts.ClaimWindow); gerr != nil {
			c.emit(ctx, keyward.Event{Kind: keyward.Error, Key: w.a.names.Lock,
				Err: fmt.Errorf("lock %q: leaving the queue of waiting processes: %w", w.a.key, gerr)})
		}
	}
	return nil, err
}

// release is the release operation of every Lock of this Client: it hands the lock to the first waiter of this
// Client when there is one (in the same round trip), else releases it to Redis, which reserves it for the next
// waiting process.
func (c *Client) release(ctx context.Context, l *Lock) (bool, error) {
	c.mu.Lock()
	q := c.queues[l.names.Lock]
	var next *waiter
	if q != nil && !c.closed { // after Close, the waiters are leaving
		// The first waiter that is not trying at Redis; it does not try while Handing is set.
		next = q.waiters.NextForHandOver()
	}
	cohort := q != nil && q.cohort < c.opts.Cohort
	// Only a waiter whose subscription was confirmed before the script runs will hear of the lock's next
	// release; without one, the contender subscribes and tries after all.
	subscribed := q != nil && q.watch != nil && q.watch.Err() == nil // an ended watch hears nothing
	c.mu.Unlock()

	n := script.Next{Window: c.opts.ClaimWindow, Waiter: c.id, Fence: l.fence, HolderTTL: l.ttl}
	if next != nil {
		n.Successor, n.TTL, n.Cohort, n.QueueTTL = next.a.value, next.a.ttl, cohort, script.QueueTTL(next.a.ttl)
	}
	start := time.Now()
	out, fence, err := c.releaseNext(ctx, l, n)

	c.mu.Lock()
	var abandoned *Lock
	if q != nil {
		if q.holder == l {
			q.holder = nil
		}
		if next != nil {
			next.Handing = false
			// A lost answer may hide a hand-over: next's next try takes the lock over (it holds next's value), and
			// next releases its value if it gives up instead.
			next.MaybeHeld = next.MaybeHeld || err != nil
		}
		switch {
		case err == nil && out == script.HandedOver:
			nl := c.newLock(next.a, start, fence)
			c.handOffs.Add(1)
			q.cohort++
			q.waiters.Remove(next)
			if next.Abandoned {
				abandoned = nl
			} else {
				next.lock = nl
				q.holder = nl
				next.Signal()
			}
		default:
			// Freed, reserved for another process, not held, or unknown: the first waiter contends at Redis
			// (once the lock is free again, when the release queued this Client).
			q.cohort = 0
			if w := q.contenderLocked(); w != nil {
				w.queued = err == nil && out == script.Requeued && subscribed
				w.Signal()
			}
		}
		c.tidyLocked(q)
	}
	c.mu.Unlock()
	if abandoned != nil {
		c.undo(ctx, abandoned)
	}
	return out != script.NotHeld, err
}
