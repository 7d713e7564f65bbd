package lock

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/lease"
	"github.com/keyward/keyward/internal/script"
)

// A Lock is a held lock. Its methods are safe for concurrent use. A Lock must not be copied.
type Lock struct {
	c     *Client
	key   string
	names keys.Names
	value string
	fence int64
	ttl   time.Duration // the ttl it was obtained with: its fence is remembered for CounterTTL(ttl) after release
	lease *lease.Lease
	// undone: the lock was handed to a waiter that gave up, and is released without reaching a caller; its end is
	// reported as CleanedUp, not Released or Lost.
	undone atomic.Bool
}

// Key returns the key the lock was obtained for, without the client's prefix.
func (l *Lock) Key() string { return l.key }

// Value returns the value stored under the lock key, which only this holder knows: the random token and the
// holder's metadata (see [WithMetadata]). It is not the fencing token ([Lock.Fence]).
func (l *Lock) Value() string { return l.value }

// Fence returns the lock's fencing token: larger than that of every earlier holder of the same key on the same
// server, even across a restart that lost the data (it is at least the server's clock in microseconds), unless
// the server's clock stepped back. Storage that remembers the largest fence it has seen and refuses smaller
// ones cannot be written by a holder that was paused past its ttl.
func (l *Lock) Fence() int64 { return l.fence }

// Until returns the local time until which the lock is known to be held: (time before the acquire or the last
// successful refresh was sent) + ttl − drift. After it, the lock must be presumed lost.
func (l *Lock) Until() time.Time { return l.lease.Until() }

// Lost returns a channel that is closed when the lock is lost: its validity deadline passed (without
// auto-refresh, at [Lock.Until]; with it, when refreshes failed until then), or a refresh, TTL or Guard found the
// key expired or taken. Release does not close it.
func (l *Lock) Lost() <-chan struct{} { return l.lease.Lost() }

// Err returns why the lock was lost (an error matching ErrLost), or nil while it is held or once released.
func (l *Lock) Err() error { return l.lease.Err() }

// TTL returns how long the key will live on the server. A lock found expired or taken is lost and returns an
// error matching ErrLost.
func (l *Lock) TTL(ctx context.Context) (time.Duration, error) {
	if ctx == nil {
		return 0, errs.NilContext("lock", "ttl", l.key)
	}
	if err := l.lease.Check(); err != nil {
		return 0, l.wrap(err)
	}
	ttl, ok, err := script.PTTL(ctx, l.c.rdb, l.names, l.value)
	if err != nil {
		return 0, l.fail(ctx, "ttl", err)
	}
	if !ok {
		l.lease.MarkLost(fmt.Errorf("%w: key expired or was taken by another holder", keyward.ErrGone))
		return 0, l.wrap(l.lease.Err())
	}
	return ttl, nil
}

// Refresh sets the lock's ttl to ttl, which must exceed the drift margin (a ttl ≤ 0 is an ErrInvalid error:
// Redis would delete the key). A lock found expired or taken is lost: the error matches ErrLost. Any other error
// leaves the lock held until its current deadline; when ctx ended first, the error matches ctx's error and its
// cause.
func (l *Lock) Refresh(ctx context.Context, ttl time.Duration) error {
	if ctx == nil {
		return errs.NilContext("lock", "refresh", l.key)
	}
	return l.fail(ctx, "refresh", l.lease.Refresh(ctx, ttl.Truncate(time.Millisecond)))
}

// Release gives the lock back: the key is deleted only if it still holds this lock's token, and waiters are
// told at once. A later Release makes no round trip and returns what the first one that reached the server
// returned: nil after a clean release (a lock that was lost stays reported as lost).
//
// It returns an error matching ErrNotHeld when the lock had expired or been taken by another holder (whose key
// is left alone), and the loss error (matching ErrLost) when the lock was lost before. After any other error
// (network, timeout) the outcome is unknown; Release may be called again, and then reports ErrNotHeld if the
// first call did reach the server. When ctx ended first, the error matches ctx's error and its cause.
func (l *Lock) Release(ctx context.Context) error {
	if ctx == nil {
		return errs.NilContext("lock", "release", l.key)
	}
	return l.fail(ctx, "release", l.lease.Release(ctx))
}

func (l *Lock) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("lock %q: %w", l.key, err)
}

// fail returns the error of op: err with the lock's key, or, when op stopped without an answer because ctx ended,
// the error of a ctx that ended (errs.Context's, which names the key).
func (l *Lock) fail(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && !errors.Is(err, keyward.ErrNotHeld) && !errors.Is(err, keyward.ErrInvalid) {
		return ctxEnded(ctx, op, l.key, err)
	}
	return l.wrap(err)
}
