package lock

import (
	"context"
	"time"

	"github.com/keyward/keyward"
)

// Locker returns the Client as a [keyward.Locker], with opts applied to every lock it takes, for code that must
// work on one Redis or a Redlock quorum alike.
func (c *Client) Locker(opts ...Option) keyward.Locker { return locker{c: c, opts: opts} }

type locker struct {
	c    *Client
	opts []Option
}

func (l locker) TryObtain(ctx context.Context, key string, ttl time.Duration) (keyward.Lock, error) {
	return nilIfNone(l.c.TryObtain(ctx, key, ttl, l.opts...))
}

func (l locker) Obtain(ctx context.Context, key string, ttl time.Duration) (keyward.Lock, error) {
	return nilIfNone(l.c.Obtain(ctx, key, ttl, l.opts...))
}

func (l locker) Do(ctx context.Context, key string, ttl time.Duration, fn func(context.Context) error) error {
	return l.c.Do(ctx, key, ttl, fn, l.opts...)
}

// nilIfNone keeps a failed call's result a nil interface, not an interface holding a nil *Lock.
func nilIfNone(l *Lock, err error) (keyward.Lock, error) {
	if l == nil {
		return nil, err
	}
	return l, err
}
