// Package locker turns a lock package's Client into a keyward.Locker: lock/ and redlock/ differ only in their
// option and lock types, so one generic adapter serves both.
package locker

import (
	"context"
	"time"

	"github.com/keyward/keyward"
)

// Client is what lock.Client and redlock.Client have in common.
type Client[L keyward.Lock, O any] interface {
	TryObtain(ctx context.Context, key string, ttl time.Duration, opts ...O) (L, error)
	Obtain(ctx context.Context, key string, ttl time.Duration, opts ...O) (L, error)
	Do(ctx context.Context, key string, ttl time.Duration, fn func(ctx context.Context) error, opts ...O) error
}

// New returns c as a keyward.Locker that applies opts to every lock; prefix is the prefix those locks' keys get
// (the client's, or the one opts set), which the Locker tells through KeyPrefix.
func New[L keyward.Lock, O any](c Client[L, O], opts []O, prefix string) keyward.Locker {
	return adapter[L, O]{c: c, opts: opts, prefix: prefix}
}

// Prefixed is a Locker that tells the prefix it puts in front of every lock key, as the Lockers of lock.Client
// and redlock.Client do: keys that belong with a lock (an election's record) then go under the same prefix.
type Prefixed interface {
	keyward.Locker
	// KeyPrefix returns the prefix of the Locker's lock keys.
	KeyPrefix() string
}

type adapter[L keyward.Lock, O any] struct {
	c      Client[L, O]
	opts   []O
	prefix string
}

// KeyPrefix returns the prefix of the adapter's lock keys.
func (a adapter[L, O]) KeyPrefix() string { return a.prefix }

func (a adapter[L, O]) TryObtain(ctx context.Context, key string, ttl time.Duration) (keyward.Lock, error) {
	return held(a.c.TryObtain(ctx, key, ttl, a.opts...))
}

func (a adapter[L, O]) Obtain(ctx context.Context, key string, ttl time.Duration) (keyward.Lock, error) {
	return held(a.c.Obtain(ctx, key, ttl, a.opts...))
}

func (a adapter[L, O]) Do(ctx context.Context, key string, ttl time.Duration, fn func(context.Context) error) error {
	return a.c.Do(ctx, key, ttl, fn, a.opts...)
}

// held returns a failed call's result as a nil interface, not as an interface holding a nil pointer.
func held[L keyward.Lock](l L, err error) (keyward.Lock, error) {
	if err != nil {
		return nil, err
	}
	return l, nil
}
