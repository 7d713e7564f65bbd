package keyward

import (
	"context"
	"time"
)

// A Lock is a held lock, whichever package took it. lock.Lock and redlock.Lock satisfy it.
type Lock interface {
	// Key returns the key the lock was obtained for.
	Key() string
	// Value returns the value stored under the lock key, which only this holder knows (not the fencing token).
	Value() string
	// Fence returns the lock's fencing token, larger than that of every earlier holder of the key.
	Fence() int64
	// Until returns the local time until which the lock is known to be held.
	Until() time.Time
	// Lost returns a channel that is closed when the lock is lost.
	Lost() <-chan struct{}
	// Err returns why the lock was lost, or nil.
	Err() error
	// TTL returns how long the lock will live on the server(s).
	TTL(ctx context.Context) (time.Duration, error)
	// Refresh sets the lock's ttl.
	Refresh(ctx context.Context, ttl time.Duration) error
	// Release gives the lock back.
	Release(ctx context.Context) error
}

// A Locker takes locks: on one Redis (lock.Client.Locker) or on a quorum of independent ones
// (redlock.Client.Locker), so that an application can switch between them by configuration.
type Locker interface {
	// TryObtain takes the lock key for ttl if it is free; an error matching ErrNotObtained if not.
	TryObtain(ctx context.Context, key string, ttl time.Duration) (Lock, error)
	// Obtain takes the lock key for ttl, waiting as long as ctx allows.
	Obtain(ctx context.Context, key string, ttl time.Duration) (Lock, error)
	// Do obtains the lock key with auto-refresh, runs fn while holding it (fn's ctx is cancelled, with a cause
	// matching ErrLost, if the lock is lost) and releases it.
	Do(ctx context.Context, key string, ttl time.Duration, fn func(ctx context.Context) error) error
}
