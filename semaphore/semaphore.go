package semaphore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/bound"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/lease"
	"github.com/keyward/keyward/internal/lockopt"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/retry"
	"github.com/keyward/keyward/internal/script"
	"github.com/keyward/keyward/internal/token"
	"github.com/keyward/keyward/internal/waitq"
	"github.com/keyward/keyward/internal/watch"
)

// A Semaphore lets at most limit holders at a time, across every process that uses the same name on the same
// Redis, hold a permit. It is safe for concurrent use and meant to be kept for the life of the program: it is one
// place in the line of waiting processes, and its waiters share its two subscriptions (the semaphore's channel and
// its own), opened by the first Acquire that has to wait and kept until [Semaphore.Close].
type Semaphore struct {
	client redis.UniversalClient // the caller's client
	// rdb runs the scripts on client so that they return when their ctx ends, whatever client's options
	// (internal/bound): a refresh must not keep a permit "held" past its deadline on a server that stopped
	// answering.
	rdb      redis.Scripter
	name     string
	keys     script.SemaphoreKeys
	opts     lockopt.Settings
	fencing  bool
	observer keyward.Observer // nil: nobody listens
	publish  script.Publish
	id       string // this Semaphore's name in the Redis queue

	watcher *watch.Handle // the Semaphore's use of the pub/sub connection of its client, shared with the other users

	mu      sync.Mutex
	limit   int
	closed  bool
	done    chan struct{}       // closed by Close
	waiters waitq.Line[*waiter] // Acquire calls, in arrival order; the first is the contender
	watch   *watch.Watch        // on the semaphore's channel; nil until the first wait
	own     *watch.Watch        // on this Semaphore's own channel; set with watch
	line    line
	cohort  int // hand-offs to this Semaphore's own waiters since a place last went through Redis
	leaving int // leaves of the Redis queue on their way; no try starts meanwhile

	tries, failedTries, handOffs atomic.Int64
}

// New returns the semaphore name, which lets at most limit holders at a time hold a permit, used through rdb.
// It does not talk to Redis. It returns an ErrInvalid error for a nil rdb (also a typed nil such as a nil
// *redis.Client), an empty name, a limit below 1 or an invalid option.
//
// The limit is this Semaphore's: every process sends its own with each acquire, and the server admits a holder
// only while fewer than that many permits are held. Processes that use different limits for one name (during a
// rolling change) each stay within their own.
func New(rdb redis.UniversalClient, name string, limit int, opts ...Option) (*Semaphore, error) {
	if err := lockopt.CheckClient(rdb); err != nil {
		return nil, err
	}
	if name == "" {
		return nil, fmt.Errorf("%w: empty semaphore name", keyward.ErrInvalid)
	}
	if err := checkLimit(limit); err != nil {
		return nil, fmt.Errorf("semaphore %q: %w", name, err)
	}
	var cfg config
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	settings, err := lockopt.Defaults().With(cfg.lock...)
	if err != nil {
		return nil, fmt.Errorf("semaphore %q: %w", name, err)
	}
	s := &Semaphore{
		client:   rdb,
		rdb:      bound.New(rdb).Scripter(),
		name:     name,
		keys:     script.SemaphoreKeysFor(settings.Prefix + name),
		opts:     settings,
		fencing:  cfg.fencing,
		observer: cfg.observer,
		publish:  script.PublishPlain,
		id:       token.New(""),
		limit:    limit,
		done:     make(chan struct{}),
	}
	s.watcher = watch.Attach(rdb, cfg.observer) // its Reconnected and Error events go to the observer too
	return s, nil
}

func checkLimit(limit int) error {
	if limit < 1 {
		return fmt.Errorf("%w: limit %d is below 1", keyward.ErrInvalid, limit)
	}
	return nil
}

// Name returns the semaphore's name, without the prefix.
func (s *Semaphore) Name() string { return s.name }

// Limit returns the Semaphore's limit.
func (s *Semaphore) Limit() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limit
}

// SetLimit changes the Semaphore's limit; a limit below 1 is an ErrInvalid error. Lowering it evicts no holder:
// no one new is admitted through this Semaphore until fewer than limit permits are held. Raising it lets this
// Semaphore's waiters try again at once.
func (s *Semaphore) SetLimit(limit int) error {
	if err := checkLimit(limit); err != nil {
		return fmt.Errorf("semaphore %q: %w", s.name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if limit > s.limit {
		s.line.stale = true
		s.waiters.SignalFirst()
	}
	s.limit = limit
	return nil
}

// Close closes the Semaphore's subscriptions and ends its use of its client's pub/sub connection, which it shares
// with every other user of the same client (the connection is closed when none is left). From then on TryAcquire,
// Acquire and Do return an error matching ErrClosed, and so do Acquire calls still waiting. Held permits are not
// released and stay usable: Release, Refresh and auto-refresh work as before. A second Close returns nil.
func (s *Semaphore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	watch, own := s.watch, s.own
	s.watch, s.own = nil, nil
	s.mu.Unlock()

	if watch != nil {
		watch.Close()
		own.Close()
	}
	return s.watcher.Close()
}

// Stats returns the Semaphore's counts so far: acquire attempts sent to Redis (TryAcquire, and Acquire's tries),
// those that found no room, and permits handed to a waiter of this Semaphore in a release's round trip, without a
// try.
func (s *Semaphore) Stats() keyward.Stats {
	return keyward.Stats{Tries: s.tries.Load(), FailedTries: s.failedTries.Load(), HandOffs: s.handOffs.Load()}
}

func (s *Semaphore) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// TryAcquire takes a permit for ttl if the semaphore has room, in one round trip. It returns an error matching
// ErrNotObtained when limit permits are held (or reserved for waiting processes), and never waits. A ttl must
// exceed the drift margin (a ttl ≤ 0 is an ErrInvalid error). After Close it returns an error matching ErrClosed;
// when ctx ends first, an error matching ctx's error and its cause.
//
// If the attempt fails without an answer from the server (a timeout, a dropped connection, a cancelled ctx), the
// permit may have been taken on the server all the same: TryAcquire then sends a best-effort release for it, so
// it does not hold a place until its ttl (the observer hears of it: CleanedUp), and returns the error, never a
// permit.
func (s *Semaphore) TryAcquire(ctx context.Context, ttl time.Duration, opts ...AcquireOption) (_ *Permit, err error) {
	const op = "try acquire"
	ctx, call := s.start(ctx, op)
	var fence int64
	defer func() { call.End(fence, err) }()
	start := time.Now()
	a, err := s.newAttempt(ctx, op, ttl, acquireSettings(opts).autoRefresh)
	if err != nil {
		return nil, err
	}
	p, _, err := s.try(ctx, a, "", false)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, keyward.ErrNotObtained) && !retry.Permanent(err) {
			err = s.ctxErr(ctx, op, err)
		}
		return nil, err
	}
	s.obtained(ctx, p, start)
	fence = p.fence
	return p, nil
}

// start begins the call op for the observer (see keyward.CallObserver): the call runs on the context it returns,
// and ends with the Call's End. A nil ctx stays nil, whatever the observer, so that newAttempt refuses it.
func (s *Semaphore) start(ctx context.Context, op string) (context.Context, observe.Call) {
	return observe.Start(ctx, s.observer, "semaphore", op, "", s.name)
}

// attempt is one caller's attempt to take a permit, with the value it will store.
type attempt struct {
	op          string // the caller's operation, for errors: "try acquire" or "acquire"
	value       string
	ttl         time.Duration
	autoRefresh bool
}

// newAttempt checks an acquisition (op) before anything is sent: ctx not nil, its ttl, the Semaphore not closed, ctx
// not ended.
func (s *Semaphore) newAttempt(ctx context.Context, op string, ttl time.Duration, autoRefresh bool) (*attempt, error) {
	ttl, err := s.opts.Check(ctx, "semaphore", op, s.name, ttl, s.isClosed)
	if err != nil {
		return nil, err
	}
	return &attempt{op: op, value: token.New(s.opts.Metadata), ttl: ttl, autoRefresh: autoRefresh}, nil
}

// ctxErr returns the error of op, stopped because ctx ended: it matches ctx's error and cause (errs.Context) and,
// when it says more than ctx's error, last, the error of the last attempt.
func (s *Semaphore) ctxErr(ctx context.Context, op string, last error) error {
	err := errs.Context(ctx, "semaphore", op, s.name)
	if last == nil || errors.Is(last, ctx.Err()) || errs.IsContext(last) {
		return err
	}
	return fmt.Errorf("%w (the last attempt failed: %w)", err, last)
}

// emit tells the observer e, from this semaphore.
func (s *Semaphore) emit(ctx context.Context, e keyward.Event) {
	if s.observer == nil {
		return
	}
	e.Source, e.Key = "semaphore", s.name
	observe.Emit(ctx, s.observer, e)
}

// obtained tells the observer that p was obtained by a call that started at start.
func (s *Semaphore) obtained(ctx context.Context, p *Permit, start time.Time) {
	s.emit(ctx, keyward.Event{Kind: keyward.Obtained, Fence: p.fence, Wait: time.Since(start)})
}

// cleanedUp tells the observer that a permit nobody will use was given back (fence: its fencing token, 0 when
// unknown); err is the release's error. A permit found not held left nothing behind: no error then.
func (s *Semaphore) cleanedUp(ctx context.Context, fence int64, err error) {
	if errors.Is(err, keyward.ErrNotHeld) {
		err = nil
	}
	if err != nil {
		err = fmt.Errorf("semaphore %q: clean up: %w", s.name, err)
	}
	s.emit(ctx, keyward.Event{Kind: keyward.CleanedUp, Fence: fence, Err: err})
}

// try runs the acquire script once: a plain try when waiter is "", else the try of the waiting process waiter,
// which also claims a place reserved for it, and joins the queue when there is no room (requeue: stays in it,
// at the back, when it takes the permit). A permit a.value holds already (a hand-over whose answer was lost, or
// this try resent by go-redis after a dropped connection) is renewed.
func (s *Semaphore) try(ctx context.Context, a *attempt, waiter string, requeue bool) (*Permit, script.SemaphoreState, error) {
	start := time.Now()
	s.tries.Add(1)
	st, err := script.SemaphoreAcquire(ctx, s.rdb, s.keys, script.SemaphoreTry{
		Value:    a.value,
		TTL:      a.ttl,
		Limit:    s.Limit(),
		Waiter:   waiter,
		QueueTTL: script.QueueTTL(a.ttl),
		Requeue:  requeue,
		Fencing:  s.fencing,
		Publish:  s.publish,
	})
	if err != nil {
		if !script.IsReply(err) {
			s.cleanUp(ctx, a)
		}
		return nil, st, fmt.Errorf("semaphore %q: %s: %w", s.name, a.op, err)
	}
	if !st.OK {
		s.failedTries.Add(1)
		return nil, st, fmt.Errorf("semaphore %q: %w", s.name, keyward.ErrNotObtained)
	}
	return s.newPermit(a, start, st.Fence), st, nil
}

// cleanUp releases the permit in case an acquire whose answer was lost did take it. It uses a context of its own,
// since ctx may be what ended the acquire.
func (s *Semaphore) cleanUp(ctx context.Context, a *attempt) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(a.ttl, 2*time.Second))
	defer cancel()
	_, err := script.SemaphoreRelease(cctx, s.rdb, s.keys, s.giveBack(a.value))
	s.cleanedUp(cctx, 0, err)
}

// giveBack describes the release of value that passes nothing to this Semaphore's waiters and leaves its place in
// the queue as it is (no Waiter).
func (s *Semaphore) giveBack(value string) script.SemaphoreGiveBack {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.giveBackLocked(value)
}

func (s *Semaphore) newPermit(a *attempt, start time.Time, fence int64) *Permit {
	p := &Permit{s: s, value: a.value, fence: fence, obtained: time.Now()}
	cfg := lease.Config{
		Start:       start,
		TTL:         a.ttl,
		Drift:       s.opts.Drift,
		AutoRefresh: a.autoRefresh,
		Ops: lease.Ops{
			Refresh: func(ctx context.Context, ttl time.Duration) (bool, error) {
				return script.SemaphoreRefresh(ctx, s.rdb, s.keys, p.value, ttl, s.Limit(), s.publish)
			},
			Release: func(ctx context.Context) (bool, error) {
				return s.release(ctx, p)
			},
		},
	}
	if s.observer != nil {
		cfg.OnRefreshFailed = func(err error) {
			s.emit(context.Background(), keyward.Event{Kind: keyward.RefreshFailed, Fence: fence,
				Err: fmt.Errorf("semaphore %q: auto-refresh: %w", s.name, err)})
		}
		cfg.OnLost = func(cause error) {
			s.emit(context.Background(), keyward.Event{Kind: keyward.Lost, Fence: fence,
				Held: time.Since(p.obtained), Err: fmt.Errorf("semaphore %q: %w", s.name, cause)})
		}
	}
	p.lease = lease.New(cfg)
	return p
}
