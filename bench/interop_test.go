package main

import (
	"context"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
	"github.com/keyward/keyward/redlock"
)

// These tests live in this module, beside the benchmark of the same libraries, so that redsync is not a
// requirement of the library's module. They run in make test.

// redsync and keyward use the same key, a random value and SET NX PX on each node: they exclude each other, so
// services can move from one to the other replica by replica.
func TestRedsyncAndRedlockExcludeEachOther(t *testing.T) {
	servers := redistest.StartN(t, 3)
	var pools []redsyncredis.Pool
	var nodes []redis.UniversalClient
	for _, s := range servers {
		c := s.Client(t)
		pools = append(pools, goredis.NewPool(c))
		nodes = append(nodes, c)
	}
	locks, err := redlock.New(nodes, redlock.WithNodeTimeout(2*time.Second))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, locks.Close()) })
	excludeEachOther(t, redsync.New(pools...), locks.Locker())
}

// The single-node lock's key is the lock's name too: a redsync mutex on one server excludes it, and the other
// way round.
func TestRedsyncAndLockExcludeEachOther(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	locks, err := lock.New(rdb)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, locks.Close()) })
	excludeEachOther(t, redsync.New(goredis.NewPool(rdb)), locks.Locker())
}

// excludeEachOther checks that a redsync mutex and keyward's locker keep each other out of the lock "shared".
func excludeEachOther(t *testing.T, rs *redsync.Redsync, locks keyward.Locker) {
	t.Helper()
	ctx := context.Background()
	mutex := rs.NewMutex("shared", redsync.WithExpiry(10*time.Second), redsync.WithTries(1))
	require.NoError(t, mutex.LockContext(ctx))
	_, err := locks.TryObtain(ctx, "shared", 10*time.Second)
	require.ErrorIs(t, err, keyward.ErrNotObtained, "redsync holds it")
	ok, err := mutex.UnlockContext(ctx)
	require.NoError(t, err)
	require.True(t, ok)

	l, err := locks.TryObtain(ctx, "shared", 10*time.Second)
	require.NoError(t, err)
	other := rs.NewMutex("shared", redsync.WithExpiry(10*time.Second), redsync.WithTries(1))
	require.Error(t, other.LockContext(ctx), "keyward holds it")
	require.NoError(t, l.Release(ctx))
	require.NoError(t, other.LockContext(ctx), "free again")
	_, err = other.UnlockContext(ctx)
	require.NoError(t, err)
}
