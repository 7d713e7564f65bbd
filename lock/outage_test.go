package lock_test

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// outageTest is a test run by outageBubble.
type outageTest func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client, down *redistest.Outage)

// outageBubble runs test in a bubble whose client fails every command while the returned hook is on.
func outageBubble(t *testing.T, test outageTest) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		defer m.Close()
		rdb := redistest.SynctestClient(m)
		defer rdb.Close()
		down := &redistest.Outage{}
		rdb.AddHook(down)
		locks, err := lock.New(rdb)
		require.NoError(t, err)
		defer locks.Close()
		test(t, m, locks, down)
	})
}

// An Obtain that meets a server that is down tries again after a backoff (10 ms doubling to 1 s, from the upper
// half of each step) until the server is back, without spinning, and then takes the lock.
func TestObtainRidesOutAnOutage(t *testing.T) {
	for _, held := range []bool{false, true} {
		name := map[bool]string{false: "free lock", true: "after a failed try"}[held]
		t.Run(name, func(t *testing.T) {
			outageBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client, down *redistest.Outage) {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				if held {
					// The waiter is subscribed and in line when the server goes away: its next try fails.
					other, err := lock.New(redistest.SynctestClient(m))
					require.NoError(t, err)
					defer other.Close()
					h, err := other.TryObtain(ctx, "job", 100*time.Millisecond)
					require.NoError(t, err)
					defer func() { _ = h.Release(ctx) }()
				}
				type result struct {
					l   *lock.Lock
					err error
				}
				done := make(chan result, 1)
				go func() {
					if !held {
						down.On()
					}
					l, err := locks.Obtain(ctx, "job", time.Minute)
					done <- result{l, err}
				}()
				if held {
					synctest.Wait() // the waiter waits for the holder's ttl
					down.On()
				}
				before := locks.Stats().Tries
				time.Sleep(5 * time.Second)
				synctest.Wait()
				tries := locks.Stats().Tries - before
				// Delays of at least 5, 10, 20, … 320 ms, then 500 ms: at most 17 tries in 5 s; at most 10, 20, …,
				// 640 ms, then 1 s: at least 9.
				assert.GreaterOrEqual(t, tries, int64(9), "tries again while the server is down")
				assert.LessOrEqual(t, tries, int64(17), "no hot loop")

				down.Off()
				back := time.Now()
				r := <-done
				require.NoError(t, r.err)
				assert.LessOrEqual(t, time.Since(back), time.Second, "within the capped backoff of the server's return")
				require.NoError(t, r.l.Release(ctx))
			})
		})
	}
}

// When ctx ends during an outage, Obtain returns at once an error that matches ctx's error and the last try's.
func TestObtainGivesUpWithTheLastCause(t *testing.T) {
	outageBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client, down *redistest.Outage) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		down.On()
		start := time.Now()
		_, err := locks.Obtain(ctx, "job", time.Minute)
		assert.Equal(t, 3*time.Second, time.Since(start), "returns when ctx ends")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
		assert.ErrorContains(t, err, `(the last attempt failed: lock "job": obtain: dial tcp`)
		down.Off()
		assert.Empty(t, m.Keys(), "nothing left behind")
	})
}

// Errors that will not pass end Obtain at once.
func TestObtainReturnsPermanentErrorsAtOnce(t *testing.T) {
	outageBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client, down *redistest.Outage) {
		_, err := m.Lpush("list", "x")
		require.NoError(t, err)
		start := time.Now()
		_, err = locks.Obtain(context.Background(), "list", time.Minute)
		assert.ErrorIs(t, err, lock.ErrWrongType)
		assert.Zero(t, time.Since(start))
		assert.Equal(t, int64(1), locks.Stats().Tries)
	})
}

// With a real redis-server killed and restarted while a waiter waits, and a client with go-redis's default
// options, Obtain gets the lock once the server is back instead of returning "connection refused".
func TestObtainRidesOutARestart(t *testing.T) {
	srv := redistest.Start(t)
	failed := make(chan struct{})
	var failures atomic.Int32
	rdb := redistest.NewClient(t, &redis.Options{Addr: srv.Addr()}) // go-redis's defaults
	rdb.AddHook(&redistest.AfterError{Fn: func() {
		if failures.Add(1) == 1 {
			close(failed)
		}
	}})
	locks := newClient(t, rdb)
	closeClient(t, locks)
	ctx := withTimeout(t, 20*time.Second)

	srv.Kill(t)
	go func() {
		<-failed // a try failed (go-redis's defaults take about 1.7 s to give up a refused dial)
		srv.Restart(t)
	}()
	l, err := locks.Obtain(ctx, "job", time.Minute)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, failures.Load(), int32(1))
	require.NoError(t, l.Release(ctx))
}
