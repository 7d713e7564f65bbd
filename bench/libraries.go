package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/redis/rueidis"
	"github.com/redis/rueidis/rueidislock"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/benchstat"
	"github.com/keyward/keyward/lock"
)

// ttl is the lock ttl every library is asked for: redsync's default expiry. rueidislock has no ttl per lock; it
// keeps its default key validity (5 s), extended in the background.
const ttl = 8 * time.Second

// A library is one contender in the comparison: a lock library with the options it runs with.
type library struct {
	// Name is the row's name in the tables.
	Name string
	// Setup says how the library is configured, for the docs.
	Setup string
	// Nodes is how many independent Redis servers it locks on (1, or 3 for Redlock).
	Nodes int
	// Keyward marks keyward's own rows; the others are the anchors.
	Keyward bool
	// Open connects one process to addrs.
	Open func(addrs []string) (locker, error)
	// Tries returns how many acquire attempts the servers saw, from their command counts summed over the nodes,
	// for the libraries that do not count them themselves (nil: the locker counts them).
	Tries func(cost benchstat.ServerCost, nodes int) int64
}

// A locker is one process's instance of a library.
type locker interface {
	// Obtain waits for the lock key until it has it or ctx ends, and returns the function that releases it.
	Obtain(ctx context.Context, key string) (release func(context.Context) error, err error)
	// Try takes the lock key for ttl if it is free, with the library's try-acquire (one attempt, no waiting),
	// and returns the function that releases it; a taken lock is an error. rueidislock has no ttl per lock and
	// keeps its own validity.
	Try(ctx context.Context, key string, ttl time.Duration) (release func(context.Context) error, err error)
	// FailedTries returns the acquire attempts that found the lock taken, when the library counts them.
	FailedTries() (int64, bool)
	// GaveUp returns how many times the library gave up waiting by itself (its tries or its deadline ran out)
	// and Obtain had to call it again.
	GaveUp() int64
	// Close closes the library's clients.
	Close() error
}

// libraries are the rows of every table, keyward's first.
func libraries() []library {
	return append([]library{
		{
			Name: "keyward lock", Keyward: true, Nodes: 1,
			Setup: "`lock.New(rdb)`, `Obtain(ctx, key, 8s)`: defaults (claim window 20 ms, cohorts of 4)",
			Open:  openKeyward,
		},
	}, append(redlockRows(), []library{
		{
			Name: "redsync", Nodes: 1,
			Setup: "`redsync.New(goredis.NewPool(rdb)).NewMutex(key)`, `LockContext`: defaults (8 s expiry, 32 tries, retry delay rand(50, 250) ms)",
			Open:  openRedsync(), Tries: triesBySet,
		},
		{
			Name: "redsync 1ms", Nodes: 1,
			Setup: "as redsync, with `redsync.WithRetryDelay(time.Millisecond)`",
			Open:  openRedsync(redsync.WithRetryDelay(time.Millisecond)), Tries: triesBySet,
		},
		{
			Name: "redsync ×3", Nodes: 3,
			Setup: "redsync's defaults on 3 independent servers (its Redlock)",
			Open:  openRedsync(), Tries: triesBySet,
		},
		{
			Name: "bsm 100ms", Nodes: 1,
			Setup: "`redislock.New(rdb).Obtain(ctx, key, 8s, &redislock.Options{RetryStrategy: redislock.LinearBackoff(100 * time.Millisecond)})`",
			Open:  openBSM(100 * time.Millisecond), Tries: triesBySet,
		},
		{
			Name: "bsm 1ms", Nodes: 1,
			Setup: "as bsm 100ms, with `LinearBackoff(time.Millisecond)`",
			Open:  openBSM(time.Millisecond), Tries: triesBySet,
		},
		{
			Name: "rueidislock", Nodes: 1,
			Setup: "`rueidislock.NewLocker(rueidislock.LockerOption{ClientOption: rueidis.ClientOption{InitAddress: …}, KeyMajority: 1})`, `WithContext`; the release is the returned cancel",
			Open:  openRueidislock, Tries: triesBySet,
		},
	}...)...)
}

// triesBySet counts attempts by the SETs the servers ran: redsync, bsm/redislock and rueidislock each send one
// SET … NX per attempt and node (bsm and rueidislock from a script), and no other SET.
func triesBySet(cost benchstat.ServerCost, nodes int) int64 {
	return cost.Calls["set"] / int64(nodes)
}

// goredisClient is the go-redis client of one process and node for the libraries built on go-redis: the defaults,
// without the handshake extras (CLIENT SETINFO, maintenance notifications) that would add commands unrelated to
// locking to the counts.
func goredisClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:            addr,
		DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode:         maintnotifications.ModeDisabled,
			EndpointType: maintnotifications.EndpointTypeNone,
		},
	})
}

func goredisClients(addrs []string) []*redis.Client {
	var rdbs []*redis.Client
	for _, a := range addrs {
		rdbs = append(rdbs, goredisClient(a))
	}
	return rdbs
}

func closeAll(rdbs []*redis.Client) error {
	var err error
	for _, r := range rdbs {
		err = errors.Join(err, r.Close())
	}
	return err
}

// keyward lock/

type keywardLocker struct {
	rdb   *redis.Client
	c     *lock.Client
	start keyward.Stats
}

func openKeyward(addrs []string) (locker, error) {
	rdb := goredisClient(addrs[0])
	c, err := lock.New(rdb)
	if err != nil {
		return nil, errors.Join(err, rdb.Close())
	}
	return &keywardLocker{rdb: rdb, c: c}, nil
}

func (k *keywardLocker) Obtain(ctx context.Context, key string) (func(context.Context) error, error) {
	l, err := k.c.Obtain(ctx, key, ttl)
	if err != nil {
		return nil, err
	}
	return l.Release, nil
}

func (k *keywardLocker) Try(ctx context.Context, key string, ttl time.Duration) (func(context.Context) error, error) {
	l, err := k.c.TryObtain(ctx, key, ttl)
	if err != nil {
		return nil, err
	}
	return l.Release, nil
}

// FailedTries counts from the first call on: the warm-up's tries are taken off by resetCounts.
func (k *keywardLocker) FailedTries() (int64, bool) {
	return k.c.Stats().FailedTries - k.start.FailedTries, true
}

func (k *keywardLocker) resetCounts() { k.start = k.c.Stats() }

func (k *keywardLocker) GaveUp() int64 { return 0 }

func (k *keywardLocker) Close() error { return errors.Join(k.c.Close(), k.rdb.Close()) }

// redsync v4

type redsyncLocker struct {
	rdbs   []*redis.Client
	rs     *redsync.Redsync
	opts   []redsync.Option
	gaveUp atomic.Int64
}

func openRedsync(opts ...redsync.Option) func([]string) (locker, error) {
	return func(addrs []string) (locker, error) {
		rdbs := goredisClients(addrs)
		var pools []redsyncredis.Pool
		for _, r := range rdbs {
			pools = append(pools, goredis.NewPool(r))
		}
		return &redsyncLocker{rdbs: rdbs, rs: redsync.New(pools...), opts: opts}, nil
	}
}

// Obtain calls LockContext again when it gives up after its 32 tries, as an application that must have the lock
// would: the wait goes on.
func (r *redsyncLocker) Obtain(ctx context.Context, key string) (func(context.Context) error, error) {
	for {
		m := r.rs.NewMutex(key, r.opts...)
		err := m.LockContext(ctx)
		if err == nil {
			return func(ctx context.Context) error {
				ok, err := m.UnlockContext(ctx)
				if err == nil && !ok {
					err = errors.New("redsync: unlock: not held")
				}
				return err
			}, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var taken *redsync.ErrTaken
		var nodeTaken *redsync.ErrNodeTaken
		if !errors.Is(err, redsync.ErrFailed) && !errors.As(err, &taken) && !errors.As(err, &nodeTaken) {
			return nil, err
		}
		r.gaveUp.Add(1)
	}
}

func (r *redsyncLocker) Try(ctx context.Context, key string, ttl time.Duration) (func(context.Context) error, error) {
	m := r.rs.NewMutex(key, append(r.opts[:len(r.opts):len(r.opts)], redsync.WithExpiry(ttl))...)
	if err := m.TryLockContext(ctx); err != nil {
		return nil, err
	}
	return func(ctx context.Context) error {
		ok, err := m.UnlockContext(ctx)
		if err == nil && !ok {
			err = errors.New("redsync: unlock: not held")
		}
		return err
	}, nil
}

func (r *redsyncLocker) FailedTries() (int64, bool) { return 0, false }
func (r *redsyncLocker) GaveUp() int64              { return r.gaveUp.Load() }
func (r *redsyncLocker) Close() error               { return closeAll(r.rdbs) }

// bsm/redislock

type bsmLocker struct {
	rdb     *redis.Client
	c       *redislock.Client
	backoff time.Duration
	gaveUp  atomic.Int64
}

func openBSM(backoff time.Duration) func([]string) (locker, error) {
	return func(addrs []string) (locker, error) {
		rdb := goredisClient(addrs[0])
		return &bsmLocker{rdb: rdb, c: redislock.New(rdb), backoff: backoff}, nil
	}
}

// Obtain calls Obtain again when it gives up by itself: without a deadline on ctx, redislock waits at most the
// ttl.
func (b *bsmLocker) Obtain(ctx context.Context, key string) (func(context.Context) error, error) {
	for {
		l, err := b.c.Obtain(ctx, key, ttl, &redislock.Options{RetryStrategy: redislock.LinearBackoff(b.backoff)})
		if err == nil {
			return l.Release, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !errors.Is(err, redislock.ErrNotObtained) && !errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		b.gaveUp.Add(1)
	}
}

// Try is redislock's Obtain without options: its default retry strategy is not to retry.
func (b *bsmLocker) Try(ctx context.Context, key string, ttl time.Duration) (func(context.Context) error, error) {
	l, err := b.c.Obtain(ctx, key, ttl, nil)
	if err != nil {
		return nil, err
	}
	return l.Release, nil
}

func (b *bsmLocker) FailedTries() (int64, bool) { return 0, false }
func (b *bsmLocker) GaveUp() int64              { return b.gaveUp.Load() }
func (b *bsmLocker) Close() error               { return b.rdb.Close() }

// rueidislock

type rueidisLocker struct {
	l rueidislock.Locker
}

func openRueidislock(addrs []string) (locker, error) {
	l, err := rueidislock.NewLocker(rueidislock.LockerOption{
		ClientOption: rueidis.ClientOption{InitAddress: addrs},
		KeyMajority:  1,
	})
	if err != nil {
		return nil, err
	}
	return &rueidisLocker{l: l}, nil
}

func (r *rueidisLocker) Obtain(ctx context.Context, key string) (func(context.Context) error, error) {
	held, release, err := r.l.WithContext(ctx, key)
	if err != nil {
		return nil, err
	}
	return rueidisRelease(held, release), nil
}

// Try ignores ttl: rueidislock keeps its own key validity, extended in the background while the lock is held.
func (r *rueidisLocker) Try(ctx context.Context, key string, _ time.Duration) (func(context.Context) error, error) {
	held, release, err := r.l.TryWithContext(ctx, key)
	if err != nil {
		return nil, err
	}
	return rueidisRelease(held, release), nil
}

// rueidisRelease is the release of a rueidislock lock: its cancel, which deletes the key and returns once that
// is done.
func rueidisRelease(held context.Context, release context.CancelFunc) func(context.Context) error {
	return func(context.Context) error {
		// A lock that rueidislock found lost (its context ended) before we let it go would be a failure.
		lost := held.Err()
		release() // deletes the key and returns once that is done
		if lost != nil {
			return fmt.Errorf("rueidislock: lock lost while held: %w", lost)
		}
		return nil
	}
}

func (r *rueidisLocker) FailedTries() (int64, bool) { return 0, false }
func (r *rueidisLocker) GaveUp() int64              { return 0 }
func (r *rueidisLocker) Close() error               { r.l.Close(); return nil }
