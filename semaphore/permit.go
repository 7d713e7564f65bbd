package semaphore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/lease"
)

// A Permit is one held place in a semaphore. Its methods are safe for concurrent use. A Permit must not be copied.
type Permit struct {
	s        *Semaphore
	value    string
	fence    int64
	obtained time.Time // when this process got it: Held of its events counts from here
	lease    *lease.Lease
	told     atomic.Bool // the observer was told of the release's outcome
}

// Value returns the permit's value in the semaphore's sorted set: a random token and the holder's metadata.
func (p *Permit) Value() string { return p.value }

// Fence returns the permit's fencing token, with [WithFencing]: larger than that of every earlier permit of the
// semaphore on the same server, even across a restart that lost the data (it is at least the server's clock in
// microseconds), unless the server's clock stepped back. Without WithFencing it is 0.
func (p *Permit) Fence() int64 { return p.fence }

// Until returns the local time until which the permit is known to be held: (time before the acquire, hand-over
// or last successful refresh was sent) + ttl − drift. After it, the permit must be presumed lost.
func (p *Permit) Until() time.Time { return p.lease.Until() }

// Lost returns a channel that is closed when the permit is lost: its validity deadline passed (without
// auto-refresh, at [Permit.Until]; with it, when refreshes failed until then), or a refresh found it expired and
// reclaimed. Release does not close it.
func (p *Permit) Lost() <-chan struct{} { return p.lease.Lost() }

// Err returns why the permit was lost (an error matching ErrLost), or nil while it is held or once released.
func (p *Permit) Err() error { return p.lease.Err() }

// Refresh sets the permit's expiry to ttl from now (server time), and its validity to (time before sending) + ttl
// − drift. The ttl must exceed the drift margin (a ttl ≤ 0 is an ErrInvalid error). A permit found expired is
// lost: the error matches ErrLost. When ctx ends first, the error matches ctx's error and its cause. Any other
// error leaves the permit held until its current deadline. It works after the Semaphore's Close too.
func (p *Permit) Refresh(ctx context.Context, ttl time.Duration) error {
	if ctx == nil {
		return errs.NilContext("semaphore", "refresh", p.s.name)
	}
	return p.wrap(ctx, "refresh", p.lease.Refresh(ctx, ttl.Truncate(time.Millisecond)))
}

// Release gives the permit back: it is removed only if it is still held (not expired), and its place is passed
// on at once: to a waiter of the same Semaphore in the same round trip, or reserved for the next waiting process,
// or announced free. A later Release makes no round trip and returns what the first one that reached the server
// returned: nil after a clean release (a permit that was lost stays reported as lost). It works after the
// Semaphore's Close too.
//
// It returns an error matching ErrNotHeld when the permit had expired (its place may have gone to another holder
// since), and the loss error (matching ErrLost) when it was lost before. After any other error (network, timeout,
// ctx ended) the outcome is unknown; Release may be called again, and then reports ErrNotHeld if the first call did
// reach the server.
func (p *Permit) Release(ctx context.Context) error {
	if ctx == nil {
		return errs.NilContext("semaphore", "release", p.s.name)
	}
	err := p.wrap(ctx, "release", p.lease.Release(ctx))
	// One Released event for the release that settled it (and one for each attempt whose outcome is unknown).
	settled := err == nil || errors.Is(err, keyward.ErrNotHeld)
	if !settled || !p.told.Swap(true) {
		p.s.emit(ctx, keyward.Event{Kind: keyward.Released, Fence: p.fence, Held: time.Since(p.obtained), Err: err})
	}
	return err
}

// wrap names the semaphore in err, the error of op; an error because ctx ended matches ctx's error and cause.
func (p *Permit) wrap(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && !errors.Is(err, keyward.ErrNotHeld) && !errors.Is(err, keyward.ErrInvalid) {
		return p.s.ctxErr(ctx, op, err)
	}
	return fmt.Errorf("semaphore %q: %w", p.s.name, err)
}
