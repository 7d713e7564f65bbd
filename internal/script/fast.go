package script

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
)

// ErrNoFastPath is AcquireFast's answer when the server does not know SET with both NX and GET (before Redis 7.0):
// the caller uses Acquire, which works on every server, from then on. Nothing was written.
var ErrNoFastPath = errors.New("keyward: the server has no SET NX GET")

// AcquireFast is Acquire without a script, for a lock that is likely free: one pipeline of three plain commands,
// `SET lock value NX PX ttl GET`, `TIME` and `GET counter`, which a server runs for a fraction of the acquire
// script's CPU (a script call has a fixed cost of several µs, on top of its commands). The fence is computed here
// as the script computes it (fence.lua): max(counter + 1, the server's clock in µs), both read right after the SET
// took the lock. Nobody else can change the counter in between: only a release by a holder writes it, and the
// lock is this caller's from the SET on.
//
// SET … GET answers WRONGTYPE for a key of another type, as the script's GET does, and the old value otherwise:
// none (the lock was free and is now taken), this very value (a resent command had taken it), or another holder's
// (the lock is taken; PTTL is then 0: unknown). It does not queue, and it runs on one server only: on a Cluster,
// TIME would go to any node (use Acquire).
//
// When the SET took the lock but TIME or GET failed (an ACL that allows SET and not TIME, a counter of another
// type), the answer says OK with the error: the caller must release the lock, whose fence it does not know.
func AcquireFast(ctx context.Context, rdb redis.Cmdable, n keys.Names, value string, ttl time.Duration) (Acquired, error) {
	var f *FastTry
	_, _ = rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		f = QueueFastTry(ctx, p, n, value, ttl)
		return nil
	})
	return f.Result()
}

// FastTry is AcquireFast's commands, queued on a pipeline that may hold other commands too.
type FastTry struct {
	n       keys.Names
	value   string
	set     *redis.StatusCmd
	now     *redis.TimeCmd
	counter *redis.StringCmd
}

// QueueFastTry queues AcquireFast's commands on p. Result reads their answers once p ran.
func QueueFastTry(ctx context.Context, p redis.Pipeliner, n keys.Names, value string, ttl time.Duration) *FastTry {
	return &FastTry{
		n:       n,
		value:   value,
		set:     p.SetArgs(ctx, n.Lock, value, redis.SetArgs{Mode: "NX", TTL: ttl, Get: true}),
		now:     p.Time(ctx),
		counter: p.Get(ctx, n.Fence),
	}
}

// Result is AcquireFast's answer, from the commands' answers.
func (f *FastTry) Result() (Acquired, error) {
	old, err := f.set.Result()
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil:
		if redis.HasErrorPrefix(err, "syntax error") {
			return Acquired{}, fmt.Errorf("%w: %w", ErrNoFastPath, err)
		}
		return Acquired{}, Classify(err)
	case old != f.value:
		return Acquired{}, nil
	}
	t, err := f.now.Result()
	if err != nil {
		return Acquired{OK: true}, Classify(err)
	}
	fence := t.UnixMicro()
	last, err := f.counter.Result()
	switch {
	case errors.Is(err, redis.Nil):
	case err != nil:
		return Acquired{OK: true}, Classify(err)
	default:
		c, perr := strconv.ParseInt(last, 10, 64)
		if perr != nil {
			return Acquired{OK: true}, fmt.Errorf("%w: the fencing counter %s holds %q, not an integer",
				keyward.ErrWrongType, f.n.Fence, last)
		}
		fence = max(fence, c+1)
	}
	return Acquired{OK: true, Fence: fence}, nil
}
