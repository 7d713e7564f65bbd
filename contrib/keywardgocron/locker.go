package keywardgocron

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/go-co-op/gocron/v2"

	"github.com/keyward/keyward"
)

// releaseTimeout bounds a release (or the refresh that starts a minimum hold) that Unlock, the end of a minimum
// hold or Close sends: gocron calls Unlock with the job's context, which its shutdown cancels, and the lock must be
// given back all the same.
const releaseTimeout = 5 * time.Second

// holdMargin is how long the key of a lock in its minimum hold outlives the end of the hold, should the process die
// meanwhile. The release sent at the end finds the lock still held (and the observer hears a clean release) even
// when the timer that sends it runs late on a busy machine: the lease's validity deadline, which the Locker's
// auto-refresh may not move before it (it waits a third of the lock's former ttl), is a second after the end.
const holdMargin = time.Second

// A Locker is a gocron.Locker on a keyward Locker: give it to gocron.WithDistributedLocker (every job of the
// scheduler) or gocron.WithDistributedJobLocker (one job). Its methods are safe for concurrent use.
type Locker struct {
	locker  keyward.Locker
	prefix  string
	ttl     time.Duration
	minHold time.Duration

	mu      sync.Mutex
	closed  bool
	running map[context.Context]*jobLock // the locks of the runs under way, by the job's context
	holding map[*jobLock]struct{}        // the locks of runs that ended within their minimum hold
}

// NewLocker returns a gocron.Locker that takes a job's lock through l: lock.Client.Locker (one Redis) or
// redlock.Client.Locker (a quorum).
//
// l must be built with auto-refresh — locks.Locker(lock.WithAutoRefresh()) or
// quorum.Locker(redlock.WithAutoRefresh()) — so that a run keeps its lock however long it takes: the Locker hands
// every lock it takes to gocron as it comes from l and refreshes nothing itself (see the package documentation).
// With a Locker that does not refresh, a run that lasts longer than the ttl loses its lock: the context of a job
// wrapped by [Locker.Job] is then cancelled, and Unlock reports the loss.
//
// It returns an ErrInvalid error for a nil l and for an invalid option.
func NewLocker(l keyward.Locker, opts ...Option) (*Locker, error) {
	if isNil(l) {
		return nil, fmt.Errorf("keywardgocron: %w: nil keyward Locker", keyward.ErrInvalid)
	}
	c, err := newConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("keywardgocron: %w", err)
	}
	return &Locker{
		locker:  l,
		prefix:  c.prefix,
		ttl:     c.ttl,
		minHold: c.minHold,
		running: make(map[context.Context]*jobLock),
		holding: make(map[*jobLock]struct{}),
	}, nil
}

// Lock takes the lock of the job named key (with the Locker's prefix) if it is free, and never waits: gocron calls
// it when the job's tick fires, and skips the run when it returns an error. Only one instance gets the lock of a
// tick; the others get an error matching keyward.ErrNotObtained, which gocron passes to the job's AfterLockError
// listener. On a Redlock quorum, tries that arrive together can split the nodes so that none gets a majority: all
// of them skip that tick (keyward.ErrNotObtained, or keyward.ErrQuorum). Lock also fails, and the run is skipped,
// when Redis cannot be reached (the error of the keyward Locker), after Close (an error matching
// keyward.ErrClosed), and when ctx ends first.
//
// gocron calls Lock, the job function and Unlock with the same context, the job's: [Locker.Job] finds the run's
// lock by it.
func (l *Locker) Lock(ctx context.Context, key string) (gocron.Lock, error) {
	if l == nil || l.locker == nil {
		return nil, fmt.Errorf("keywardgocron: %w: Locker not made by NewLocker", keyward.ErrInvalid)
	}
	if ctx == nil {
		return nil, fmt.Errorf("keywardgocron: %w: nil context", keyward.ErrInvalid)
	}
	if l.isClosed() {
		return nil, fmt.Errorf("keywardgocron: job %q: %w", key, keyward.ErrClosed)
	}
	start := time.Now()
	kl, err := l.locker.TryObtain(ctx, l.prefix+key, l.ttl)
	if err != nil {
		return nil, fmt.Errorf("keywardgocron: job %q: %w", key, err)
	}
	jl := &jobLock{l: l, lock: kl, key: key, start: start, released: make(chan struct{})}
	if hashable(ctx) {
		jl.ctx = ctx
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		jl.release()
		return nil, fmt.Errorf("keywardgocron: job %q: %w", key, keyward.ErrClosed)
	}
	if jl.ctx != nil {
		l.running[jl.ctx] = jl
	}
	l.mu.Unlock()
	return jl, nil
}

// Job returns fn as a gocron job function that runs fn while the run holds its lock, for jobs that need to know it:
// fn's ctx carries the lock's fencing token ([FenceFrom]), and it is cancelled the moment the lock is lost, with a
// cause matching keyward.ErrLost (see context.Cause). Give it to gocron.NewTask; gocron passes the job's context,
// which Job uses to find the lock that this Locker took for the run.
//
// When the run holds no lock of this Locker (the job is scheduled with another Locker, or with
// gocron.WithDisabledDistributedJobLocker) fn is not run and the job fails with an error matching
// keyward.ErrNotHeld. A nil fn fails the job with an ErrInvalid error.
func (l *Locker) Job(fn func(ctx context.Context) error) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if fn == nil {
			return fmt.Errorf("keywardgocron: %w: nil job function", keyward.ErrInvalid)
		}
		jl := l.runOf(ctx)
		if jl == nil {
			return fmt.Errorf("keywardgocron: %w: the run holds no lock of this Locker (is the job scheduled with it?)",
				keyward.ErrNotHeld)
		}
		return runFenced(ctx, jl.lock.Fence(), jl.lock.Lost(), jl.lock.Err, fn)
	}
}

// runOf returns the lock of the run whose job context is ctx, or nil.
func (l *Locker) runOf(ctx context.Context) *jobLock {
	if l == nil || ctx == nil || !hashable(ctx) {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.running[ctx]
}

// Close stops the Locker: Lock fails from then on with an error matching keyward.ErrClosed, and a run that ends
// later releases its lock at once. Close waits until the minimum hold of every run that has ended is over and its
// lock released; when ctx ends first, it releases the remaining locks at once (an instance whose tick fires late
// may then run that tick again) and returns an error matching ctx's error. It also returns the errors of the
// releases that failed (those locks expire with their ttl). Call it after the scheduler's Shutdown.
func (l *Locker) Close(ctx context.Context) error {
	if l == nil || l.locker == nil {
		return fmt.Errorf("keywardgocron: %w: Locker not made by NewLocker", keyward.ErrInvalid)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	l.mu.Lock()
	l.closed = true
	holding := make([]*jobLock, 0, len(l.holding))
	for jl := range l.holding {
		holding = append(holding, jl)
	}
	l.mu.Unlock()
	var errs []error
	early := false
	for _, jl := range holding {
		select {
		case <-jl.released:
		case <-ctx.Done():
			early = true
			jl.timer.Stop()
			jl.release() // waits for a release under way
		}
		errs = append(errs, jl.releaseErr)
	}
	if early {
		errs = append(errs, fmt.Errorf("keywardgocron: close: locks released before their minimum hold: %w",
			context.Cause(ctx)))
	}
	return errors.Join(errs...)
}

func (l *Locker) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// jobLock is the lock of one run: the gocron.Lock that Lock returns.
type jobLock struct {
	l     *Locker
	lock  keyward.Lock
	key   string          // the job name, as gocron gave it
	ctx   context.Context // the job's context it is registered under; nil when it cannot be a map key
	start time.Time       // before the lock was sent for: the minimum hold counts from here

	unlockOnce sync.Once
	unlockErr  error

	timer       *time.Timer // releases the lock at the end of its minimum hold; set under l.mu
	releaseOnce sync.Once
	releaseErr  error         // the release's error, ErrNotHeld left out; set before released is closed
	released    chan struct{} // closed when the lock has been released (or the release failed)
}

// Unlock ends the run's hold of the lock; gocron calls it when the job function has returned. A run that lasted at
// least the minimum hold (WithMinHold) releases the lock at once. A shorter one keeps it until the minimum hold is
// over: its ttl is set to the rest of it and a second (so the key expires soon after even if this process dies)
// and it is released then. Unlock uses ctx's values but not its cancellation, as gocron's shutdown cancels the
// job's context before the last Unlock. A second call returns what the first returned.
//
// It returns an error matching keyward.ErrLost when the lock was lost during the run, and the release's error,
// with which the lock expires with its ttl; the keyward Locker's observer hears of both.
func (jl *jobLock) Unlock(ctx context.Context) error {
	jl.unlockOnce.Do(func() { jl.unlockErr = jl.unlock(ctx) })
	return jl.unlockErr
}

func (jl *jobLock) unlock(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	l := jl.l
	l.mu.Lock()
	if jl.ctx != nil && l.running[jl.ctx] == jl {
		delete(l.running, jl.ctx)
	}
	closed := l.closed
	l.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := jl.lock.Err(); err != nil { // lost during the run: nothing to hold on to
		jl.release()
		return fmt.Errorf("keywardgocron: job %q: %w", jl.key, err)
	}
	end := jl.start.Add(l.minHold)
	if closed || !time.Now().Before(end) {
		jl.release()
		return jl.releaseErr
	}
	// The minimum hold. The lock keeps being refreshed (the Locker's auto-refresh cannot be stopped but by
	// releasing), now with the rest of the hold and holdMargin as its ttl, so that the key expires soon after the
	// hold if this process dies; the timer releases it at the end. A refresh that fails otherwise than by finding
	// the lock gone (a network error) leaves the ttl as it was: the timer still releases the lock on time.
	if err := jl.lock.Refresh(ctx, time.Until(end)+holdMargin); errors.Is(err, keyward.ErrNotHeld) {
		jl.release()
		return fmt.Errorf("keywardgocron: job %q: %w", jl.key, err)
	}
	l.mu.Lock()
	if l.closed { // Close came meanwhile, and does not wait for this one
		l.mu.Unlock()
		jl.release()
		return jl.releaseErr
	}
	l.holding[jl] = struct{}{}
	jl.timer = time.AfterFunc(time.Until(end), jl.release)
	l.mu.Unlock()
	return nil
}

// release gives the lock back, once; a second call waits for the first.
func (jl *jobLock) release() {
	jl.releaseOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		err := jl.lock.Release(ctx)
		cancel()
		if err != nil && !errors.Is(err, keyward.ErrNotHeld) {
			jl.releaseErr = fmt.Errorf("keywardgocron: job %q: %w", jl.key, err)
		}
		jl.l.mu.Lock()
		delete(jl.l.holding, jl)
		jl.l.mu.Unlock()
		close(jl.released)
	})
}

// isNil reports whether v is nil or an interface holding a nil pointer (or map, slice, channel, function): calling
// through it would panic.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch r := reflect.ValueOf(v); r.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.Interface:
		return r.IsNil()
	}
	return false
}

// hashable reports whether v can be a map key: a comparable type whose value holds nothing that is not (a struct
// of comparable type can hold a slice in an interface field, and hashing it panics). gocron's job contexts are
// pointers; a caller of Lock may pass anything.
func hashable(v any) (ok bool) {
	if !reflect.TypeOf(v).Comparable() {
		return false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	_ = map[any]struct{}{v: {}}
	return true
}
