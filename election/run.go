package election

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/retry"
)

// Run is the loop a service puts in main: it campaigns, runs fn while this candidate leads, and campaigns again,
// until ctx ends.
//
//   - fn's context is cancelled the moment the leadership is lost, with a cause matching ErrLost (see
//     context.Cause and [Leadership.Context]); when fn has returned, Run campaigns again.
//   - When ctx ends, fn's context is cancelled with ctx's cause; when fn has returned, Run resigns, so that
//     another candidate leads within a few round trips, and returns an error matching ctx's error and its cause
//     (and the resignation's error, if it failed). When ctx ends while it campaigns, it returns Campaign's error.
//   - When fn returns nil while leading, Run resigns (the next candidate in line leads) and campaigns again.
//   - When fn returns an error while leading, Run resigns and returns that error.
//   - When fn panics, Run resigns and the panic goes on.
//
// Errors that may pass (Redis unreachable, a failover in progress) are ridden out as Campaign does: the Locker's
// Obtain waits through them (without reporting them), and a record that cannot be written or a lock that cannot
// be obtained is told to the observer as an Error event and tried again after a backoff (10 ms doubling to 1 s);
// so is a resignation that failed. Errors that will not pass end Run: an invalid argument, a key of another type
// (ErrWrongType), a permission refused (ErrNoPermission), a closed client (ErrClosed). A nil ctx or fn is an
// ErrInvalid error.
func (e *Election) Run(ctx context.Context, fn func(leaderCtx context.Context) error) error {
	if ctx == nil {
		return errs.NilContext("election", runOp, e.name)
	}
	if fn == nil {
		return e.wrap(fmt.Errorf("%w: nil fn", ErrInvalid))
	}
	stop := e.observeForCallbacks(ctx)
	defer stop()
	for {
		lead, err := e.campaign(ctx, ctx) // rides out errors that may pass, telling the observer
		if err != nil {
			return err // when ctx ended: Campaign's error for it, with what the last attempt met
		}
		if over, err := e.serve(ctx, lead, fn); over {
			return err
		}
	}
}

// serve runs fn for one term and resigns it. It returns whether Run is over, and then Run's result.
func (e *Election) serve(ctx context.Context, lead *Leadership, fn func(context.Context) error) (over bool, _ error) {
	leader := lead.leader()
	resign := func() error {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(e.ttl, resignTimeout))
		defer cancel()
		return lead.Resign(rctx)
	}
	panicked := true
	defer func() {
		if panicked {
			if err := resign(); err != nil && !errors.Is(err, keyward.ErrNotHeld) {
				e.emitError(leader.Term, err)
			}
		}
	}()
	if f := e.callbacks.OnStartedLeading; f != nil {
		f(leader)
	}
	fnErr := fn(lead.ctx)
	panicked = false

	cause := lead.Err() // nil: fn returned while leading, as far as it could know
	err := resign()
	lostMeanwhile := errors.Is(err, keyward.ErrNotHeld)
	switch {
	case cause != nil:
	case lostMeanwhile:
		cause = err // the lease ran out, or the lock was taken, after fn's last look
	default:
		cause = lead.Err() // ErrResigned
	}
	if lostMeanwhile {
		err = nil // not a failure to resign: there was nothing left to give back
	}
	if f := e.callbacks.OnStoppedLeading; f != nil {
		f(leader, cause)
	}
	switch {
	case ctx.Err() != nil:
		if err != nil {
			return true, fmt.Errorf("%w (and the resignation failed: %w)", errs.Context(ctx, "election", runOp, e.name), err)
		}
		return true, errs.Context(ctx, "election", runOp, e.name)
	case errors.Is(cause, keyward.ErrNotHeld): // lost (ErrLost matches ErrNotHeld)
		return false, nil // fn's error, if any, was about the loss: campaign again
	case fnErr != nil:
		return true, errors.Join(fnErr, err)
	}
	if err != nil {
		e.emitError(leader.Term, err) // the lock expires with its lease; campaign again
	}
	return false, nil
}

// runOp names Run in its errors.
const runOp = "run"

// observeForCallbacks calls OnNewLeader for every new term until ctx ends or the returned stop is called; stop
// waits for the goroutine to return.
func (e *Election) observeForCallbacks(ctx context.Context) (stop func()) {
	f := e.callbacks.OnNewLeader
	if f == nil {
		return func() {}
	}
	octx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var last int64
		var backoff retry.Backoff
		for {
			leaders, err := e.Observe(octx)
			if err != nil {
				if octx.Err() != nil || errors.Is(err, keyward.ErrClosed) {
					return
				}
				e.emitError(0, err)
				if !backoff.Wait(octx) {
					return
				}
				continue
			}
			backoff.Reset()
			for l := range leaders {
				if l.Identity != "" && l.Term > last {
					last = l.Term
					f(l)
				}
			}
			if octx.Err() != nil {
				return
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
