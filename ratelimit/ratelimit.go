package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/bound"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/lockopt"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/script"
	"github.com/keyward/keyward/internal/slot"
)

// A Limiter lets events through at its limit's rate, across every process that uses the same name on the same
// Redis: each decision is one script on the server, on the server's clock. It is safe for concurrent use. It holds
// no connection and no goroutine of its own (there is nothing to close); it is cheap, but meant to be kept: it
// remembers the latest reservation it saw, which keeps the limit should the server lose its state.
type Limiter struct {
	// rdb runs the scripts on the caller's client so that they return when their ctx ends, whatever the
	// client's options (internal/bound).
	rdb      redis.Scripter
	name     string
	key      string
	observer keyward.Observer // nil: nobody listens

	limit atomic.Pointer[Limit]
	// hint is the latest end of a reservation this Limiter saw, in µs of the server's clock: the server starts
	// no reservation before it, should it have lost its state. See DESIGN.md, "A server that lost its state".
	hint atomic.Int64
}

// New returns the rate limiter name, which lets events through at limit, used through rdb. It does not talk to
// Redis. It returns an ErrInvalid error for a nil rdb (also a typed nil such as a nil *redis.Client), an empty
// name or an invalid limit (see [Limit]).
//
// The limit is this Limiter's: every decision sends it, and Redis stores only the limiter's state (one time).
// Processes that use different limits for one name (during a rolling change) each space their own requests by
// their own limit; see [Limiter.SetLimit].
func New(rdb redis.UniversalClient, name string, limit Limit, opts ...Option) (*Limiter, error) {
	if err := lockopt.CheckClient(rdb); err != nil {
		return nil, err
	}
	if name == "" {
		return nil, fmt.Errorf("%w: empty rate limiter name", keyward.ErrInvalid)
	}
	if err := limit.Validate(); err != nil {
		return nil, fmt.Errorf("ratelimit %q: %w", name, err)
	}
	var cfg config
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	l := &Limiter{
		rdb:      bound.New(rdb).Scripter(),
		name:     name,
		key:      cfg.prefix + name,
		observer: cfg.observer,
	}
	l.limit.Store(&limit)
	return l, nil
}

// Name returns the limiter's name, without the prefix.
func (l *Limiter) Name() string { return l.name }

// Limit returns the Limiter's limit.
func (l *Limiter) Limit() Limit { return *l.limit.Load() }

// SetLimit changes the Limiter's limit for every decision it makes from now on; an invalid limit is an
// ErrInvalid error, and the old one stays. Reservations already made keep their times. A new rate spaces the
// next requests by its own interval, from where the reservations made so far end; a larger burst lets through
// at once what the new burst allows, a smaller one holds back what the smaller allows. The limit is this
// Limiter's only: other processes keep theirs until they change it too, and the bound on any window is then that
// of the fastest of the limits in use, with the largest burst (DESIGN.md, "Changing the limit").
func (l *Limiter) SetLimit(limit Limit) error {
	if err := limit.Validate(); err != nil {
		return fmt.Errorf("ratelimit %q: %w", l.name, err)
	}
	l.limit.Store(&limit)
	return nil
}

// Result is the answer of [Limiter.Allow] and [Limiter.AllowN]: redis_rate's Result, so that a migration keeps
// its code.
type Result struct {
	// Limit is the limit the decision was made with.
	Limit Limit
	// Allowed is how many events may happen now: n, or 0 when the request was refused.
	Allowed int
	// Remaining is how many more events could happen at once, after this decision.
	Remaining int
	// RetryAfter is how long until the refused request would be allowed; -1 when it was allowed.
	RetryAfter time.Duration
	// ResetAfter is how long until the limiter is back to a full burst, with nothing reserved.
	ResetAfter time.Duration
}

// Allow is AllowN(ctx, 1).
func (l *Limiter) Allow(ctx context.Context) (Result, error) { return l.AllowN(ctx, 1) }

// AllowN reports whether n events may happen now, and takes their tokens if so, in one round trip. It never
// waits: a refused request takes nothing, and its Result says when to come back (but [Limiter.WaitN] waits
// better: in line, without asking again). An n below 1 is an ErrInvalid error, one above the burst an error
// matching ErrExceedsBurst; when ctx ends first, an error matching ctx's error and its cause.
//
// If the request fails without an answer from the server (a timeout, a dropped connection, a cancelled ctx), the
// tokens may have been taken on the server all the same: the limiter then lets fewer events through, never more.
func (l *Limiter) AllowN(ctx context.Context, n int) (res Result, err error) {
	const op = "allow"
	ctx, call := l.start(ctx, op)
	defer func() {
		if err == nil && res.Allowed == 0 {
			call.End(0, errRefused)
			return
		}
		call.End(0, err)
	}()
	lim, a, _, err := l.take(ctx, op, n, 0)
	if err != nil {
		return Result{}, err
	}
	res = Result{Limit: lim, Remaining: int(a.Remaining), RetryAfter: -1, ResetAfter: micros(a.ResetAfter)}
	if a.Taken {
		res.Allowed = n
	} else {
		res.RetryAfter = micros(a.Delay)
	}
	return res, nil
}

// errRefused is the error of the Ended event of an Allow or AllowN that was refused (the call itself returns no
// error): it matches keyward.ErrNotObtained, as a TryObtain that finds the lock taken does.
var errRefused error = refusedError{}

type refusedError struct{}

func (refusedError) Error() string { return "ratelimit: refused: not enough tokens now" }

func (refusedError) Is(target error) bool { return target == keyward.ErrNotObtained }

// Reserve takes n tokens now or, when there are not enough, the next n that will come, in one round trip, and
// returns the reservation: [Reservation.Delay] is how long to wait before the events may happen, and
// [Reservation.Cancel] gives the tokens back if the caller will not use them (golang.org/x/time/rate's model).
// Reservations are served in the order they reach the server, whatever the process. An n below 1 is an
// ErrInvalid error, one above the burst an error matching ErrExceedsBurst; when ctx ends first, an error matching
// ctx's error and its cause.
func (l *Limiter) Reserve(ctx context.Context, n int) (_ *Reservation, err error) {
	const op = "reserve"
	ctx, call := l.start(ctx, op)
	defer func() { call.End(0, err) }()
	_, a, received, err := l.take(ctx, op, n, -1)
	if err != nil {
		return nil, err
	}
	return l.reservation(n, a, received), nil
}

// Wait is WaitN(ctx, 1).
func (l *Limiter) Wait(ctx context.Context) error { return l.WaitN(ctx, 1) }

// WaitN blocks until n events may happen, or ctx ends. It reserves the next n tokens on the server in one round
// trip and sleeps until their time, never before it: it does not ask again, so waiters across processes are let
// through in the order their reservations reached the server, at the limit's rate, without polling and without a
// stampede when tokens come. When ctx would end before the tokens come (its deadline is nearer than their time),
// WaitN reserves nothing and returns at once an error matching context.DeadlineExceeded; when ctx ends while
// WaitN sleeps, it cancels the reservation (see [Reservation.Cancel]) and returns an error matching ctx's error
// and its cause. An n below 1 is an ErrInvalid error, one above the burst an error matching ErrExceedsBurst.
func (l *Limiter) WaitN(ctx context.Context, n int) (err error) {
	const op = "wait"
	ctx, call := l.start(ctx, op)
	defer func() { call.End(0, err) }()
	start := time.Now()
	maxWait := int64(-1)
	if ctx != nil {
		if deadline, ok := ctx.Deadline(); ok {
			// The turn's local time is the delay stretched by the margin for the clocks' rates: it must come by
			// the deadline.
			left := time.Until(deadline)
			maxWait = max(0, int64((left-left/(rateMargin+1))/time.Microsecond))
		}
	}
	_, a, received, err := l.take(ctx, op, n, maxWait)
	if err != nil {
		return err
	}
	if !a.Taken {
		return fmt.Errorf("ratelimit %q: %s: the tokens would come in %v, after ctx's deadline: %w", l.name, op,
			micros(a.Delay), context.DeadlineExceeded)
	}
	r := l.reservation(n, a, received)
	wait := time.Until(r.at)
	if wait <= 0 {
		return nil
	}
	l.emit(ctx, keyward.Event{Kind: keyward.WaitStarted})
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C:
		l.emit(ctx, keyward.Event{Kind: keyward.WaitEnded, Wait: time.Since(start)})
		return nil
	case <-ctx.Done():
	}
	err = errs.Context(ctx, "ratelimit", op, l.name)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_, cerr := r.Cancel(cctx)
	l.emit(cctx, keyward.Event{Kind: keyward.CleanedUp, Err: cerr})
	l.emit(ctx, keyward.Event{Kind: keyward.WaitEnded, Wait: time.Since(start), Err: err})
	return err
}

// take checks a request for n tokens (op) and runs the decision, which may wait maxWait µs (-1: any wait). It
// returns the limit it was made with, the answer, and the local time the answer arrived.
func (l *Limiter) take(ctx context.Context, op string, n int, maxWait int64) (Limit, script.RateAnswer, time.Time, error) {
	lim := l.Limit()
	if ctx == nil {
		return lim, script.RateAnswer{}, time.Time{}, errs.NilContext("ratelimit", op, l.name)
	}
	if n < 1 {
		return lim, script.RateAnswer{}, time.Time{}, fmt.Errorf("ratelimit %q: %s: %w: n %d is below 1", l.name, op, keyward.ErrInvalid, n)
	}
	if n > lim.Burst {
		return lim, script.RateAnswer{}, time.Time{}, fmt.Errorf("ratelimit %q: %s: %w (%w): n %d is above the burst of %v",
			l.name, op, ErrExceedsBurst, keyward.ErrInvalid, n, lim)
	}
	if err := errs.Context(ctx, "ratelimit", op, l.name); err != nil {
		return lim, script.RateAnswer{}, time.Time{}, err
	}
	a, err := script.RateTakeTokens(ctx, l.rdb, l.key, script.RateTake{
		Interval:  lim.interval(),
		Tolerance: lim.tolerance(),
		N:         int64(n),
		MaxWait:   maxWait,
		Hint:      l.hint.Load(),
	})
	received := time.Now()
	if err != nil {
		if ctx.Err() != nil && !script.IsReply(err) {
			return lim, a, received, l.ctxErr(ctx, op, err)
		}
		return lim, a, received, fmt.Errorf("ratelimit %q: %s: %w", l.name, op, err)
	}
	if a.Taken {
		for {
			h := l.hint.Load()
			if h >= a.End || l.hint.CompareAndSwap(h, a.End) {
				break
			}
		}
		if f := slot.From(ctx); f != nil {
			f(n, a.End-a.ResetAfter+a.Delay, a.Start, a.End) // the decision's time is End − ResetAfter
		}
	}
	return lim, a, received, nil
}

// ctxErr returns the error of op, stopped because ctx ended: it matches ctx's error and cause (errs.Context) and,
// when it says more than ctx's error, last, the error of the request.
func (l *Limiter) ctxErr(ctx context.Context, op string, last error) error {
	err := errs.Context(ctx, "ratelimit", op, l.name)
	if last == nil || errors.Is(last, ctx.Err()) || errs.IsContext(last) {
		return err
	}
	return fmt.Errorf("%w (the request failed: %w)", err, last)
}

// rateMargin stretches a delay for the rates of the clocks: the server's and this process's monotonic clock may
// each run up to 500 ppm off (what NTP allows itself when it slews), so a delay measured here is made 0.1 %
// longer, never to end before the server's time. 32 µs on a wait of 32 ms.
const rateMargin = 1000

// reservation returns the reservation of n tokens the answer a (received at received) made.
func (l *Limiter) reservation(n int, a script.RateAnswer, received time.Time) *Reservation {
	// The server decided before the answer arrived: counting the delay from the answer's arrival never acts
	// before the server's time.
	delay := micros(a.Delay)
	return &Reservation{l: l, tokens: n, at: received.Add(delay + delay/rateMargin), start: a.Start, end: a.End}
}

// start begins the call op for the observer (see keyward.CallObserver): the call runs on the context it returns,
// and ends with the Call's End.
func (l *Limiter) start(ctx context.Context, op string) (context.Context, observe.Call) {
	return observe.Start(ctx, l.observer, "ratelimit", op, "", l.name)
}

// emit tells the observer e, from this limiter.
func (l *Limiter) emit(ctx context.Context, e keyward.Event) {
	if l.observer == nil {
		return
	}
	e.Source, e.Key = "ratelimit", l.name
	observe.Emit(ctx, l.observer, e)
}

// micros converts µs to a Duration.
func micros(us int64) time.Duration { return time.Duration(us) * time.Microsecond }
