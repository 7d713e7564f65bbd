package main

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/redlock"
)

// redlockRows is keyward's Redlock on three servers.
func redlockRows() []library {
	return []library{{
		Name: "keyward redlock", Keyward: true, Nodes: 3,
		Setup: "`redlock.New([]redis.UniversalClient{a, b, c})`, `Obtain(ctx, key, 8s)`: defaults",
		Open:  openRedlock,
	}}
}

type redlockLocker struct {
	rdbs  []*redis.Client
	c     *redlock.Client
	start keyward.Stats
}

func openRedlock(addrs []string) (locker, error) {
	rdbs := goredisClients(addrs)
	var nodes []redis.UniversalClient
	for _, r := range rdbs {
		nodes = append(nodes, r)
	}
	c, err := redlock.New(nodes)
	if err != nil {
		return nil, errors.Join(err, closeAll(rdbs))
	}
	return &redlockLocker{rdbs: rdbs, c: c}, nil
}

func (r *redlockLocker) Obtain(ctx context.Context, key string) (func(context.Context) error, error) {
	l, err := r.c.Obtain(ctx, key, ttl)
	if err != nil {
		return nil, err
	}
	return l.Release, nil
}

func (r *redlockLocker) Try(ctx context.Context, key string, ttl time.Duration) (func(context.Context) error, error) {
	l, err := r.c.TryObtain(ctx, key, ttl)
	if err != nil {
		return nil, err
	}
	return l.Release, nil
}

// FailedTries counts from the first call on: the warm-up's tries are taken off by resetCounts.
func (r *redlockLocker) FailedTries() (int64, bool) {
	return r.c.Stats().FailedTries - r.start.FailedTries, true
}

func (r *redlockLocker) resetCounts() { r.start = r.c.Stats() }

func (r *redlockLocker) GaveUp() int64 { return 0 }

func (r *redlockLocker) Close() error { return errors.Join(r.c.Close(), closeAll(r.rdbs)) }
