// Package lease keeps the client's side of a held lock: how long it may still be trusted, keeping it alive,
// noticing when it is lost, and giving it back once. lock/ and redlock/ hold their locks through it; they differ
// only in the refresh and release operations they hand to New.
//
// Validity is measured on the local monotonic clock from a time taken before the acquire (or refresh) was sent:
// the lock is trusted until start + ttl − drift, where drift covers the difference between the client's and the
// server's clocks. Nothing the server says extends that: a refresh whose answer arrives late still counts from
// when it was sent.
package lease

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/keyward/keyward"
)

// Drift is the margin taken off a ttl for clock drift between client and server: Factor × ttl + Fixed.
type Drift struct {
	// Factor is the share of the ttl; keyward's default is 0.01.
	Factor float64
	// Fixed is added to it; keyward's default is 2 ms.
	Fixed time.Duration
}

// DefaultDrift is 1 % of the ttl plus 2 ms, as the Redlock description suggests.
var DefaultDrift = Drift{Factor: 0.01, Fixed: 2 * time.Millisecond}

// Of returns the drift margin for ttl.
func (d Drift) Of(ttl time.Duration) time.Duration {
	return time.Duration(float64(ttl)*d.Factor) + d.Fixed
}

// MaxTTL is the longest ttl a lock, permit or leadership may have. A ttl is how long a holder that died keeps
// everyone else out, so a longer one is almost certainly a mistake (a unit, or "forever"), and a holder that
// needs the lock longer keeps it with refreshes (auto-refresh costs one round trip per ttl/3). Below this bound
// every derived duration stays exact: the queue's ttl (2 × ttl + 1 s) and the fencing counter's (2 × ttl) cannot
// overflow time.Duration, which a ttl above 146 years did (the negative PEXPIRE then deleted the queue on every
// join), and every ttl is far below what Redis accepts for PX and in sorted-set scores.
const MaxTTL = keyward.MaxTTL

// CheckTTL returns an ErrInvalid error unless a lock with this ttl is valid for some time after the drift margin,
// and the ttl is at most MaxTTL.
func (d Drift) CheckTTL(ttl time.Duration) error {
	if ttl <= 0 || ttl <= d.Of(ttl) {
		return fmt.Errorf("%w: ttl %v must exceed the drift margin %v", keyward.ErrInvalid, ttl, d.Of(max(ttl, 0)))
	}
	if ttl > MaxTTL {
		return fmt.Errorf("%w: ttl %v is above the maximum %v (keep a lock longer with refreshes)",
			keyward.ErrInvalid, ttl, MaxTTL)
	}
	return nil
}

// Ops are the operations on the server(s) that a Lease needs. Each reports whether the lock was still held by
// this holder when it ran; an error means the answer is unknown.
type Ops struct {
	// Refresh sets the lock's ttl if it is still held.
	Refresh func(ctx context.Context, ttl time.Duration) (bool, error)
	// Release deletes the lock if it is still held.
	Release func(ctx context.Context) (bool, error)
}

// Config describes a lock that was just acquired.
type Config struct {
	// Start is the local time taken before the acquire was sent.
	Start time.Time
	// TTL is the ttl the lock was acquired with.
	TTL time.Duration
	// Drift is the margin for clock drift.
	Drift Drift
	// AutoRefresh keeps the lock alive until Release: refresh at a third of the ttl, retrying failures until
	// the validity deadline.
	AutoRefresh bool
	// Ops are the refresh and release operations.
	Ops Ops
	// OnRefreshFailed, when not nil, is told of every failed auto-refresh (the lease tries again until the
	// validity deadline), with the refresh's error. It is called on the auto-refresh goroutine, without the
	// lease's lock held.
	OnRefreshFailed func(err error)
	// OnLost, when not nil, is told once when the lease is lost, with why (an error matching keyward.ErrLost). It
	// is called on the goroutine that found the loss (the expiry timer's, the auto-refresh's, or a caller's),
	// without the lease's lock held.
	OnLost func(cause error)
}

type state int

const (
	held state = iota
	lost
	released
)

// hooks are Config's OnRefreshFailed and OnLost.
type hooks struct {
	refreshFailed func(error)
	lost          func(error)
}

// A Lease is one held lock. Its methods are safe for concurrent use.
type Lease struct {
	ops   Ops
	drift Drift
	hooks hooks

	mu      sync.Mutex
	state   state
	ttl     time.Duration
	until   time.Time
	cause   error         // why the lease was lost
	final   error         // what Release returned, once released (nil for a clean release)
	lost    chan struct{} // closed when lost
	expiry  *time.Timer   // marks the lease lost at until
	stop    chan struct{} // closed to stop the watchdog
	stopped chan struct{} // closed when the watchdog has returned; nil without auto-refresh
}

// New starts the lease of a lock acquired as cfg describes.
func New(cfg Config) *Lease {
	l := &Lease{
		ops:   cfg.Ops,
		drift: cfg.Drift,
		hooks: hooks{refreshFailed: cfg.OnRefreshFailed, lost: cfg.OnLost},
		ttl:   cfg.TTL,
		until: cfg.Start.Add(cfg.TTL - cfg.Drift.Of(cfg.TTL)),
		lost:  make(chan struct{}),
		stop:  make(chan struct{}),
	}
	// The callback takes l.mu, so it cannot see l.expiry unset even when the deadline has already passed.
	l.mu.Lock()
	l.expiry = time.AfterFunc(time.Until(l.until), func() {
		l.markLost(fmt.Errorf("%w: validity deadline passed before a refresh succeeded", keyward.ErrLeaseExpired))
	})
	l.mu.Unlock()
	if cfg.AutoRefresh {
		l.stopped = make(chan struct{})
		go l.watchdog()
	}
	return l
}

// Until returns the local time until which the lock is known to be held, unless it was lost or released first.
func (l *Lease) Until() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until
}

// Lost returns a channel that is closed when the lock is lost. It is not closed by Release.
func (l *Lease) Lost() <-chan struct{} { return l.lost }

// Err returns why the lock was lost (an error matching keyward.ErrLost), or nil while it is held or after a
// clean Release.
func (l *Lease) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cause
}

// Check returns nil while the lock is held and within its validity deadline, and the reason otherwise.
func (l *Lease) Check() error {
	l.mu.Lock()
	var lostNow error
	if l.state == held && !time.Now().Before(l.until) {
		lostNow = l.loseLocked(fmt.Errorf("%w: validity deadline passed", keyward.ErrLeaseExpired))
	}
	err := l.endedLocked()
	l.mu.Unlock()
	l.told(lostNow)
	return err
}

// endedLocked returns why the lease is no longer held, or nil while it is. A lease that was lost stays reported
// as lost, with its reason, also once released; a release that found the lock gone is reported as such.
func (l *Lease) endedLocked() error {
	switch l.state {
	case lost:
		return l.cause
	case released:
		if l.final != nil {
			return l.final
		}
		return fmt.Errorf("%w: released", keyward.ErrNotHeld)
	}
	return nil
}

// Refresh sets the lock's ttl to ttl and moves the validity deadline to (time before sending) + ttl − drift.
// A lock found taken or expired is lost: Lost is closed and an error matching keyward.ErrLost is returned.
// Other errors leave the lock as it was: held until its current deadline.
func (l *Lease) Refresh(ctx context.Context, ttl time.Duration) error {
	if err := l.drift.CheckTTL(ttl); err != nil {
		return err
	}
	if err := l.Check(); err != nil {
		return err
	}
	start := time.Now()
	ok, err := l.ops.Refresh(ctx, ttl)
	if err != nil {
		return err
	}
	l.mu.Lock()
	var lostNow error
	if !ok {
		lostNow = l.loseLocked(fmt.Errorf("%w: key expired or was taken by another holder", keyward.ErrGone))
	}
	if err := l.endedLocked(); err != nil {
		// Found gone, or lost or released while the refresh was in flight (a Release that won the race makes
		// the server's "not held" true, not a loss): the deadline that passed stays passed.
		l.mu.Unlock()
		l.told(lostNow)
		return err
	}
	l.ttl = ttl
	l.until = start.Add(ttl - l.drift.Of(ttl))
	l.expiry.Reset(time.Until(l.until))
	l.mu.Unlock()
	return nil
}

// Release stops the watchdog and deletes the lock if it is still held. A later Release returns, without a round
// trip, what the one that reached the server returned: nil after a clean release, the loss or ErrNotHeld error
// otherwise. It returns an error matching keyward.ErrNotHeld when the lock had expired or been taken, and the
// loss error when the lease was lost before, or when Release is called after the validity deadline (even if the
// key was still there and is now deleted: the holder could not prove it held the lock all along; Lost is then
// closed too). When it returns any other error (network, timeout), the outcome is unknown: the lock is still
// regarded as held, without auto-refresh, until its deadline or a retried Release; a retry reports ErrNotHeld
// when the first attempt did reach the server.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	if l.state == released {
		defer l.mu.Unlock()
		return l.final
	}
	// The expiry timer may not have fired yet for a deadline that has passed (a holder that resumes after a
	// pause runs before the timer's goroutine): the clock decides, not the timer.
	var lostNow error
	if l.state == held && !time.Now().Before(l.until) {
		lostNow = l.loseLocked(fmt.Errorf("%w: validity deadline passed before release", keyward.ErrLeaseExpired))
	}
	l.mu.Unlock()
	l.told(lostNow)
	l.stopWatchdog()

	ok, err := l.ops.Release(ctx)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state == released {
		return l.final // a concurrent Release got there first
	}
	switch {
	case l.state == lost:
		l.final = l.cause
	case !ok:
		l.final = fmt.Errorf("%w: expired or taken by another holder before release", keyward.ErrNotHeld)
	}
	l.state = released
	l.expiry.Stop()
	return l.final
}

// MarkLost records that the lock is known to be lost, for the reason cause (which should match keyward.ErrLost).
func (l *Lease) MarkLost(cause error) { l.markLost(cause) }

func (l *Lease) markLost(cause error) {
	l.mu.Lock()
	lostNow := l.loseLocked(cause)
	l.mu.Unlock()
	l.told(lostNow)
}

// loseLocked marks a held lease lost, and returns cause when it did (nil when the lease was not held): the caller
// passes it to told once it has unlocked l.mu.
func (l *Lease) loseLocked(cause error) error {
	if l.state != held {
		return nil
	}
	l.state = lost
	l.cause = cause
	l.expiry.Stop()
	close(l.lost)
	return cause
}

// told tells OnLost of a loss that loseLocked reported (nothing for nil). l.mu must not be held.
func (l *Lease) told(lostNow error) {
	if lostNow != nil && l.hooks.lost != nil {
		l.hooks.lost(lostNow)
	}
}

func (l *Lease) stopWatchdog() {
	l.mu.Lock()
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.mu.Unlock()
	if l.stopped != nil {
		<-l.stopped
	}
}

// watchdog refreshes the lock at a third of its ttl. A failed refresh is retried every tenth of the ttl (at most
// every second) until the validity deadline; a refresh that finds the key taken, or a deadline that passes,
// ends it with the lease lost.
func (l *Lease) watchdog() {
	defer close(l.stopped)
	timer := time.NewTimer(0)
	defer timer.Stop()
	wait := func(d time.Duration) bool {
		timer.Reset(d)
		select {
		case <-timer.C:
			return true
		case <-l.stop:
		case <-l.lost:
		}
		return false
	}
	<-timer.C
	for {
		l.mu.Lock()
		ttl := l.ttl
		l.mu.Unlock()
		if !wait(ttl / 3) {
			return
		}
		for {
			until := l.Until()
			ctx, cancel := context.WithDeadline(context.Background(), until)
			err := l.Refresh(ctx, ttl)
			cancel()
			if err == nil {
				break
			}
			if errors.Is(err, keyward.ErrNotHeld) {
				return // lost (OnLost was told) or released
			}
			if !time.Now().Before(until) && !errors.Is(err, keyward.ErrInvalid) {
				// The deadline, which also ends the refresh's ctx, passed: that is the loss, not a failed refresh.
				l.markLost(fmt.Errorf("%w: refresh failed until the validity deadline: %w", keyward.ErrLeaseExpired, err))
				return
			}
			if l.hooks.refreshFailed != nil {
				l.hooks.refreshFailed(err)
			}
			if errors.Is(err, keyward.ErrInvalid) {
				return
			}
			if !wait(min(time.Until(until), max(min(ttl/10, time.Second), time.Millisecond))) {
				return
			}
		}
	}
}
