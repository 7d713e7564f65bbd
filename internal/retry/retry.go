// Package retry is how keyward's blocking calls (Obtain, Do, Acquire, Campaign) ride out errors that may pass —
// a server restarting, a dropped connection, a failover — until their context ends: they wait a capped, jittered
// backoff between attempts, never spin, and when the context ends they say both why they stopped (the context)
// and what went wrong last (the Redis error). Errors that will not pass end the call at once.
package retry

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
)

// The backoff starts at First and doubles up to Max.
const (
	First = 10 * time.Millisecond
	Max   = time.Second
)

// Permanent reports whether trying again cannot help: an invalid argument (also a closed redlock Client), a key
// of another type, a permission refused, a closed client or watcher. Anything else (network errors, timeouts,
// LOADING, READONLY or OOM during a failover, a quorum not reached) may pass.
func Permanent(err error) bool {
	return errors.Is(err, keyward.ErrInvalid) || errors.Is(err, keyward.ErrWrongType) ||
		errors.Is(err, keyward.ErrNoPermission) || errors.Is(err, keyward.ErrClosed) ||
		errors.Is(err, redis.ErrClosed)
}

// Backoff spaces out attempts after errors: First doubling to Max, each delay drawn at random from the upper half
// of its step, so that processes that failed together do not retry together. The zero value is ready to use.
type Backoff struct{ last time.Duration }

// Next returns the delay before the next attempt.
func (b *Backoff) Next() time.Duration {
	b.last = min(max(2*b.last, First), Max)
	return b.last/2 + rand.N(b.last/2+1)
}

// Reset starts the backoff over, after an attempt that got an answer.
func (b *Backoff) Reset() { b.last = 0 }

// Wait sleeps for the next delay; false when ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// CtxErr returns the error for a ctx that ended: it matches both ctx.Err() and ctx's cause.
func CtxErr(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if err == nil || cause == err {
		return cause
	}
	return fmt.Errorf("%w: %w", err, cause)
}

// GaveUp returns the error of a call whose ctx ended while it rode out errors: it matches ctx.Err(), ctx's cause,
// and last, the error of the last failed attempt (nil when the last attempt got an answer).
func GaveUp(ctx context.Context, last error) error {
	err := CtxErr(ctx)
	if last == nil || errors.Is(last, ctx.Err()) && errors.Is(last, context.Cause(ctx)) {
		if last != nil {
			return last
		}
		return err
	}
	return fmt.Errorf("%w (the last attempt failed: %w)", err, last)
}
