package semaphore_test

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
	"github.com/keyward/keyward/semaphore"
)

// An Acquire that meets a server that is down tries again after a backoff (10 ms doubling to 1 s, from the upper
// half of each step) until the server is back, without spinning, and then takes a permit.
func TestAcquireRidesOutAnOutage(t *testing.T) {
	for _, full := range []bool{false, true} {
		name := map[bool]string{false: "room", true: "after a failed try"}[full]
		t.Run(name, func(t *testing.T) {
			inBubble(t, func(t *testing.T, m *miniredis.Miniredis, other *redis.Client) {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				rdb := redistest.SynctestClient(m)
				defer rdb.Close()
				down := &redistest.Outage{}
				rdb.AddHook(down)
				sem := bubbleSem(t, rdb, "pool", 1)
				if full {
					// The waiter is subscribed and in line when the server goes away: its next try fails.
					h, err := bubbleSem(t, other, "pool", 1).TryAcquire(ctx, 100*time.Millisecond)
					require.NoError(t, err)
					defer func() { _ = h.Release(ctx) }()
				}
				type result struct {
					p   *semaphore.Permit
					err error
				}
				done := make(chan result, 1)
				go func() {
					if !full {
						down.On()
					}
					p, err := sem.Acquire(ctx, time.Minute)
					done <- result{p, err}
				}()
				if full {
					synctest.Wait() // the waiter waits for the holder's ttl
					down.On()
				}
				before := sem.Stats().Tries
				time.Sleep(5 * time.Second)
				synctest.Wait()
				tries := sem.Stats().Tries - before
				// Delays of at least 5, 10, 20, … 320 ms, then 500 ms: at most 17 tries in 5 s; at most 10, 20, …,
				// 640 ms, then 1 s: at least 9.
				assert.GreaterOrEqual(t, tries, int64(9), "tries again while the server is down")
				assert.LessOrEqual(t, tries, int64(17), "no hot loop")

				down.Off()
				back := time.Now()
				r := <-done
				require.NoError(t, r.err)
				assert.LessOrEqual(t, time.Since(back), time.Second, "within the capped backoff of the server's return")
				require.NoError(t, r.p.Release(ctx))
			})
		})
	}
}

// When ctx ends during an outage, Acquire returns at once an error that matches ctx's error and the last try's;
// errors that will not pass end it at once.
func TestAcquireGivesUpWithTheLastCause(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
		down := &redistest.Outage{}
		rdb.AddHook(down)
		sem := bubbleSem(t, rdb, "pool", 1)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		down.On()
		start := time.Now()
		_, err := sem.Acquire(ctx, time.Minute)
		assert.Equal(t, 3*time.Second, time.Since(start), "returns when ctx ends")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
		assert.ErrorContains(t, err, `semaphore "pool": acquire`)
		down.Off()

		_, err = m.Lpush("list", "x")
		require.NoError(t, err)
		start = time.Now()
		_, err = bubbleSem(t, rdb, "list", 1).Acquire(context.Background(), time.Minute)
		assert.ErrorIs(t, err, semaphore.ErrWrongType)
		assert.Zero(t, time.Since(start), "at once")
	})
}

// With a real redis-server killed and restarted while a waiter waits, and a client with go-redis's default
// options, Acquire gets a permit once the server is back instead of returning "connection refused".
func TestAcquireRidesOutARestart(t *testing.T) {
	srv := redistest.Start(t)
	failed := make(chan struct{})
	var failures atomic.Int32
	rdb := redistest.NewClient(t, &redis.Options{Addr: srv.Addr()}) // go-redis's defaults
	rdb.AddHook(&redistest.AfterError{Fn: func() {
		if failures.Add(1) == 1 {
			close(failed)
		}
	}})
	sem := newSem(t, rdb, "pool", 1)
	ctx := withTimeout(t, 20*time.Second)

	srv.Kill(t)
	go func() {
		<-failed // a try failed (go-redis's defaults take about 1.7 s to give up a refused dial)
		srv.Restart(t)
	}()
	p, err := sem.Acquire(ctx, time.Minute)
	require.NoError(t, err)
	require.NoError(t, p.Release(ctx))
}
