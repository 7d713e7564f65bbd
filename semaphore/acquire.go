package semaphore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/lease"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/retry"
	"github.com/keyward/keyward/internal/waitq"
	"github.com/keyward/keyward/internal/watch"
)

// Acquire takes a permit for ttl, waiting as long as ctx allows when the semaphore is full. When ctx ends first it
// returns an error matching ctx's error and its cause, naming the semaphore, and leaves no goroutine behind. After
// Close, and to calls waiting when Close runs, it returns an error matching ErrClosed.
//
// Acquire rides out errors that may pass (the server restarting or unreachable for a while, a dropped
// connection, a failover): it tries again after a backoff (10 ms doubling to 1 s, jittered) until ctx ends, and
// then returns an error that matches ctx's error and the last try's error alike. Errors that will not pass return
// at once: ErrInvalid, ErrWrongType, ErrNoPermission, ErrClosed, a closed client.
//
// Waiting costs no polling. Acquire calls of one Semaphore queue up in arrival order and only the first contends
// at Redis. A try that finds no room puts the Semaphore in the line of waiting processes kept in Redis; the first
// wait subscribes, through the pub/sub connection its client shares and confirmed by the server, to the semaphore's channel and to the
// Semaphore's own, and tries once more, which closes the window in which a release could slip by unseen. Then it
// waits for the first of: a place reserved for it by a release, a place announced free, a keyspace notification
// for the semaphore's key, a timer at the earliest time enough permits expire to make room (their holders may have
// crashed), or ctx.
//
// Hand-off is fair across processes: a release reserves its place for the first process in line for a short
// claim window and wakes only it. A holder whose own Semaphore has waiters hands its permit to the first of them in
// the release's round trip, up to [WithCohort] times in a row while other processes wait.
//
// An Acquire that has to wait tells the observer WaitStarted and, when the wait is over, WaitEnded; Obtained when
// it returns a permit.
func (s *Semaphore) Acquire(ctx context.Context, ttl time.Duration, opts ...AcquireOption) (p *Permit, err error) {
	ctx, call := s.start(ctx, acquireOp)
	defer func() { call.End(observe.Fence(p), err) }()
	return s.acquire(ctx, ttl, acquireSettings(opts).autoRefresh)
}

// Do takes a permit as Acquire does, with auto-refresh (whatever opts say), and runs fn while holding it. fn's
// context is cancelled the moment the permit is lost, with a cause matching ErrLost (see context.Cause). The
// permit is released when fn returns, also when fn panics. Do returns fn's error joined with the release's, or the
// error of Acquire.
func (s *Semaphore) Do(ctx context.Context, ttl time.Duration, fn func(ctx context.Context) error,
	opts ...AcquireOption) (err error) {
	ctx, call := s.start(ctx, "do")
	var fence int64
	defer func() { call.End(fence, err) }()
	p, err := s.Acquire(ctx, ttl, WithAutoRefresh())
	if err != nil {
		return err
	}
	fence, err = p.fence, observe.ErrPanicked // what Ended reports if fn panics
	return lease.Run(ctx, p, fn)
}

// waiter is one goroutine in Acquire. It is woken when it became the contender, was handed a permit, or a
// hand-off to it fell through.
type waiter struct {
	waitq.Entry // its place in the Semaphore's line, guarded by Semaphore.mu
	a           *attempt
	permit      *Permit   // handed over by a releasing holder; guarded by Semaphore.mu
	waitStart   time.Time // when it began to wait; zero while it has not (only its own goroutine uses it)
}

// acquireOp names Acquire and Do in their errors.
const acquireOp = "acquire"

func (s *Semaphore) acquire(ctx context.Context, ttl time.Duration, autoRefresh bool) (*Permit, error) {
	start := time.Now()
	a, err := s.newAttempt(ctx, acquireOp, ttl, autoRefresh)
	if err != nil {
		return nil, err
	}
	w := &waiter{Entry: waitq.NewEntry(), a: a}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errs.Closed("semaphore", acquireOp, s.name)
	}
	s.waiters.Add(w)
	s.mu.Unlock()
	p, err := s.wait(ctx, w)
	if !w.waitStart.IsZero() {
		s.emit(ctx, keyward.Event{Kind: keyward.WaitEnded, Wait: time.Since(w.waitStart), Err: err})
	}
	if p != nil {
		s.obtained(ctx, p, start)
	}
	return p, err
}

// startWait tells the observer that w began to wait, the first time it is called for w. It runs on w's goroutine,
// without s.mu.
func (s *Semaphore) startWait(ctx context.Context, w *waiter) {
	if w.waitStart.IsZero() {
		w.waitStart = time.Now()
		s.emit(ctx, keyward.Event{Kind: keyward.WaitStarted})
	}
}

// contenderLocked returns the waiter that may contend at Redis: the first one.
func (s *Semaphore) contenderLocked() *waiter { return s.waiters.First() }

// removeLocked takes w out of the line and wakes the contender.
func (s *Semaphore) removeLocked(w *waiter) {
	s.waiters.Remove(w)
	s.waiters.SignalFirst()
}

// wait runs w's turn: it waits in line until it is handed a permit, or until it is the contender, which tries at
// Redis when what it knows says it may find room, and otherwise waits for a message, its timer or its ctx.
func (s *Semaphore) wait(ctx context.Context, w *waiter) (*Permit, error) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		s.mu.Lock()
		if p := w.permit; p != nil {
			s.mu.Unlock()
			return p, nil
		}
		if s.closed || s.line.closed {
			s.mu.Unlock()
			return s.leave(ctx, w, errs.Closed("semaphore", acquireOp, s.name))
		}
		if err := s.line.failed; err != nil {
			// The watches ended: the next wait subscribes again, which fails at once or, when the permission is
			// back, works.
			watch, own := s.watch, s.own
			s.watch, s.own, s.line.failed = nil, nil, nil
			s.mu.Unlock()
			if watch != nil {
				watch.Close()
				own.Close()
			}
			return s.leave(ctx, w, fmt.Errorf("semaphore %q: %w", s.name, err))
		}
		contender := s.contenderLocked() == w && !w.Handing && s.leaving == 0
		// After a try that failed without an answer, the contender waits a backoff, then tries again.
		backingOff := contender && w.BackingOff()
		mustTry := contender && !backingOff && (s.watch == nil || !s.line.queued || s.line.stale || w.Failed != nil)
		var ready, mine <-chan struct{}
		var deadline time.Time
		if mustTry {
			// Whatever the watches reported before this try is answered by the try itself.
			s.hearLocked(time.Now())
			w.Trying, s.line.stale = true, false
		} else if contender {
			if s.watch != nil {
				ready, mine = s.watch.Ready(), s.own.Ready()
				deadline = s.line.deadline()
			}
			if backingOff {
				deadline = w.RetryAt
			}
		}
		s.mu.Unlock()

		if mustTry {
			if p, err := s.contend(ctx, w); p != nil || err != nil {
				return p, err
			}
			s.startWait(ctx, w) // no room (or an error that may pass): this call waits
			continue
		}
		s.startWait(ctx, w)

		var fire <-chan time.Time
		if !deadline.IsZero() {
			// A little after the deadline, so that the permit has expired on the server, with a jitter.
			timer.Reset(waitq.Late(time.Until(deadline)))
			fire = timer.C
		}
		select {
		case <-w.Wake():
		case <-ready:
			s.mu.Lock()
			s.hearLocked(time.Now())
			s.mu.Unlock()
		case <-mine:
			s.mu.Lock()
			s.hearLocked(time.Now())
			s.mu.Unlock()
		case <-fire:
			s.mu.Lock()
			s.line.stale = true
			s.mu.Unlock()
		case <-s.done:
		case <-ctx.Done():
			return s.abandon(ctx, w)
		}
		timer.Stop()
	}
}

// contend runs the contender's try. It returns the permit, an error, or neither when w must wait: it is then in
// the Redis queue, subscribed.
func (s *Semaphore) contend(ctx context.Context, w *waiter) (*Permit, error) {
	s.mu.Lock()
	requeue := s.waiters.Len() > 1
	s.mu.Unlock()
	p, st, err := s.try(ctx, w.a, s.id, requeue)
	received := time.Now()

	s.mu.Lock()
	w.Trying = false
	if err != nil && !errors.Is(err, keyward.ErrNotObtained) {
		s.mu.Unlock()
		switch {
		case ctx.Err() != nil:
			return s.leave(ctx, w, s.ctxErr(ctx, acquireOp, w.Failed))
		case retry.Permanent(err):
			return s.leave(ctx, w, err)
		}
		w.Fail(err) // the server may be restarting: wait a backoff, then try again
		return nil, nil
	}
	w.Answered()
	s.line.learn(st, received, w.a.ttl)
	if p != nil {
		s.line.queued = requeue
		s.removeLocked(w)
		stray := s.waiters.Len() == 0 && s.line.queued // the others gave up during the try
		if stray {
			s.leaveQueueLocked()
		}
		s.mu.Unlock()
		if stray {
			s.leaveQueue(ctx)
		}
		return p, nil
	}
	s.line.queued = true
	subscribed := s.watch != nil
	s.mu.Unlock()
	if subscribed {
		return nil, nil
	}

	watch, own, err := s.subscribe(ctx)
	if err != nil {
		if ctx.Err() != nil {
			err = s.ctxErr(ctx, acquireOp, w.Failed)
		}
		return s.leave(ctx, w, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		watch.Close()
		own.Close()
		return nil, nil // the loop sees the Semaphore closed
	}
	s.watch, s.own = watch, own
	s.line.stale = true // try again: a release between the last try and the subscription was not heard
	return nil, nil
}

// subscribe opens the Semaphore's subscriptions, confirmed by the server: to the semaphore's channel (and its
// key's keyspace notifications), where free places are announced to everyone, and to the channel of this
// Semaphore's own, where the scripts tell it what concerns only it (a place reserved for it; what the first in
// line must watch).
func (s *Semaphore) subscribe(ctx context.Context) (all, own *watch.Watch, err error) {
	if all, err = s.watcher.Watch(ctx, s.keys.Holders); err != nil {
		return nil, nil, s.watchErr(err)
	}
	if own, err = s.watcher.WatchChannel(ctx, s.keys.WaiterChannel(s.id)); err != nil {
		all.Close()
		return nil, nil, s.watchErr(err)
	}
	return all, own, nil
}

// watchErr is the error of a subscription that failed with err: ErrClosed when the Watcher was closed.
func (s *Semaphore) watchErr(err error) error {
	if errors.Is(err, keyward.ErrClosed) {
		return errs.Closed("semaphore", acquireOp, s.name)
	}
	return fmt.Errorf("semaphore %q: %w", s.name, err)
}

// leave takes w out of the line with err, passing its turn on.
func (s *Semaphore) leave(ctx context.Context, w *waiter, err error) (*Permit, error) {
	s.mu.Lock()
	var handed *Permit
	if handed = w.permit; handed == nil {
		w.Abandoned = w.Handing // the releasing holder releases what it hands over
		s.removeLocked(w)
	}
	maybeHeld := handed == nil && w.MaybeHeld
	last := s.waiters.Len() == 0 && s.line.queued
	if last {
		s.leaveQueueLocked()
	}
	s.mu.Unlock()
	if handed == nil && !maybeHeld && !last {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if handed != nil {
		s.cleanedUp(rctx, handed.fence, handed.lease.Release(rctx))
	}
	if maybeHeld {
		s.cleanUp(rctx, w.a)
	}
	if last {
		s.leaveQueue(rctx) // nobody here waits any more
	}
	return nil, err
}

// abandon takes w out of the line because ctx ended. A permit handed to w meanwhile is released.
func (s *Semaphore) abandon(ctx context.Context, w *waiter) (*Permit, error) {
	return s.leave(ctx, w, s.ctxErr(ctx, acquireOp, w.Failed))
}
