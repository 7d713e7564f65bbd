package redlock_test

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/redlock"
)

// isAcquire tells an acquire: the script with three keys (the release has three too) and six arguments.
func isAcquire(cmd redis.Cmder) bool {
	args := cmd.Args()
	return cmd.Name() == "evalsha" && len(args) == 3+3+6 && args[2] == 3 // 3 keys and 6 arguments: not a release
}

// An Obtain that meets a majority of nodes down tries again after a backoff (10 ms doubling to 1 s, from the upper
// half of each step) until they are back, without spinning, and then takes the lock. When ctx ends first, the
// error matches ctx's error and the last try's.
func TestObtainRidesOutAnOutage(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		downs := make([]*redistest.Outage, 2)
		for i := range downs {
			downs[i] = &redistest.Outage{Count: isAcquire}
			b.clients[i].AddHook(downs[i])
			downs[i].On()
		}
		locks := b.client(t, redlock.WithNodeTimeout(50*time.Millisecond))
		defer locks.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()

		done := make(chan error, 1)
		go func() {
			l, err := locks.Obtain(ctx, "job", time.Minute)
			if err == nil {
				err = l.Release(ctx)
			}
			done <- err
		}()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		// Delays of at least 5, 10, 20, … 320 ms, then 500 ms: at most 17 tries in 5 s; at most 10, 20, …,
		// 640 ms, then 1 s: at least 9 (each try costs the refused nodes nothing: they answer at once).
		tries := downs[0].Refused()
		assert.GreaterOrEqual(t, tries, int64(9), "tries again while a majority is down")
		assert.LessOrEqual(t, tries, int64(17), "no hot loop")
		downs[0].Off()
		back := time.Now()
		require.NoError(t, <-done)
		assert.LessOrEqual(t, time.Since(back), time.Second, "within the capped backoff of the nodes' return")

		gctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		downs[0].On()
		start := time.Now()
		_, err := locks.Obtain(gctx, "job", time.Minute)
		assert.Equal(t, 3*time.Second, time.Since(start), "returns when ctx ends")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorIs(t, err, redlock.ErrQuorum)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	})
}

// Errors that will not pass end Obtain at once, also when they come from one node.
func TestObtainReturnsPermanentErrorsAtOnce(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		down := &redistest.Outage{}
		b.clients[0].AddHook(down)
		down.On()
		_, err := b.ms[1].Lpush("list", "x")
		require.NoError(t, err)
		locks := b.client(t, redlock.WithNodeTimeout(50*time.Millisecond))
		defer locks.Close()
		start := time.Now()
		_, err = locks.Obtain(context.Background(), "list", time.Minute)
		assert.ErrorIs(t, err, redlock.ErrWrongType)
		assert.Zero(t, time.Since(start))
	})
}

// With real redis-servers, a majority killed and restarted while a waiter waits, and clients with go-redis's
// default options, Obtain gets the lock once they are back instead of returning a quorum error.
func TestObtainRidesOutARestart(t *testing.T) {
	servers := redistest.StartN(t, 3)
	failed := make(chan struct{})
	var failures atomic.Int32
	var nodes []redis.UniversalClient
	for _, s := range servers {
		nodes = append(nodes, redistest.NewClient(t, &redis.Options{Addr: s.Addr()})) // go-redis's defaults
	}
	nodes[0].AddHook(&redistest.AfterError{Fn: func() {
		if failures.Add(1) == 1 {
			close(failed)
		}
	}})
	locks, err := redlock.New(nodes, redlock.WithNodeTimeout(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, locks.Close()) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	servers[0].Kill(t)
	servers[1].Kill(t)
	go func() {
		<-failed // a try failed on node 0 (go-redis's defaults take about 1.7 s to give up a refused dial)
		servers[0].Restart(t)
		servers[1].Restart(t)
	}()
	l, err := locks.Obtain(ctx, "job", time.Minute)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))
}
