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

// New returns c as a keyward.Locker that applies opts to every lock.
func New[L keyward.Lock, O any](c Client[L, O], opts []O) keyward.Locker {
	return adapter[L, O]{c: c, opts: opts}
}

type adapter[L keyward.Lock, O any] struct {
	c    Client[L, O]
	opts []O
}

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
