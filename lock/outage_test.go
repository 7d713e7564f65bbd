package lock_test

import (
	"context"
	"net"
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

// outage is a go-redis hook that, while on, fails every command as a refused dial does: the server is down.
type outage struct{ on atomic.Bool }

var errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}

func (o *outage) DialHook(next redis.DialHook) redis.DialHook { return next }
func (o *outage) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if o.on.Load() {
			cmd.SetErr(errRefused)
			return errRefused
		}
		return next(ctx, cmd)
	}
}
func (o *outage) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if o.on.Load() {
			return errRefused
		}
		return next(ctx, cmds)
	}
}

// outageBubble runs test in a bubble whose client fails every command while the returned hook is on.
func outageBubble(t *testing.T, test func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client, down *outage)) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		defer m.Close()
		rdb := redistest.SynctestClient(m)
		defer rdb.Close()
		down := &outage{}
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
			outageBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client, down *outage) {
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
						down.on.Store(true)
					}
					l, err := locks.Obtain(ctx, "job", time.Minute)
					done <- result{l, err}
				}()
				if held {
					synctest.Wait() // the waiter waits for the holder's ttl
					down.on.Store(true)
				}
				before := locks.Stats().Tries
				time.Sleep(5 * time.Second)
				synctest.Wait()
				tries := locks.Stats().Tries - before
				// Delays of at least 5, 10, 20, … 320 ms, then 500 ms: at most 17 tries in 5 s; at most 10, 20, …,
				// 640 ms, then 1 s: at least 9.
				assert.GreaterOrEqual(t, tries, int64(9), "tries again while the server is down")
				assert.LessOrEqual(t, tries, int64(17), "no hot loop")

				down.on.Store(false)
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
	outageBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client, down *outage) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		down.on.Store(true)
		start := time.Now()
		_, err := locks.Obtain(ctx, "job", time.Minute)
		assert.Equal(t, 3*time.Second, time.Since(start), "returns when ctx ends")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
		assert.ErrorContains(t, err, `lock "job": acquire`)
		down.on.Store(false)
		assert.Empty(t, m.Keys(), "nothing left behind")
	})
}

// Errors that will not pass end Obtain at once.
func TestObtainReturnsPermanentErrorsAtOnce(t *testing.T) {
	outageBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client, down *outage) {
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
	rdb.AddHook(&afterError{fn: func() {
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

// afterError is a go-redis hook that calls fn after every script command that failed.
type afterError struct{ fn func() }

func (h *afterError) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *afterError) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil && (cmd.Name() == "evalsha" || cmd.Name() == "eval") {
			h.fn()
		}
		return err
	}
}
func (h *afterError) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
