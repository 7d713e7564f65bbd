package lock_test

import (
	"context"
	"sync/atomic"
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

// slowScripts is a go-redis hook for a slow network, on the bubble's clock: while on, every EVALSHA, and every
// pipeline (a try without a script), takes out on its way to the server and back on its way back. EVAL, the fallback after a NOSCRIPT answer, is not delayed, so that a
// script's round trip takes out + back whether or not the server had it loaded. It starts off: a goroutine asleep
// in it counts as blocked for synctest.Wait, which then cannot tell that it has not reached its wait yet.
type slowScripts struct {
	out, back time.Duration
	on        atomic.Bool
}

func (h *slowScripts) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *slowScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "evalsha" || !h.on.Load() {
			return next(ctx, cmd)
		}
		time.Sleep(h.out)
		err := next(ctx, cmd)
		time.Sleep(h.back)
		return err
	}
}
func (h *slowScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !h.on.Load() {
			return next(ctx, cmds)
		}
		time.Sleep(h.out)
		err := next(ctx, cmds)
		time.Sleep(h.back)
		return err
	}
}

// receive waits (on the bubble's clock) for a lock from got, and fails the test naming what did not happen.
func receive(t *testing.T, got <-chan *lock.Lock, d time.Duration, what string) *lock.Lock {
	t.Helper()
	select {
	case l := <-got:
		require.NotNil(t, l, what)
		return l
	case <-time.After(d):
		t.Fatalf("%s: not within %v", what, d)
		return nil
	}
}

// TestValidityCountsFromBeforeTheRequest: a lock is trusted for its ttl less the drift from a time taken before its
// request was sent, never from when the answer came (the server may have set the key's ttl at any moment between).
// Over a network that takes 40 ms to the server and 60 ms back, the validity left when the call returns is
// ttl − drift − 100 ms. Each way a lock is got or kept is checked: a try, a waiting process's try, a hand-over in a
// release's round trip, and a refresh.
func TestValidityCountsFromBeforeTheRequest(t *testing.T) {
	const ttl, drift = 10 * time.Second, 5 * time.Millisecond
	const left = ttl - drift - 100*time.Millisecond
	bubble := func(t *testing.T, test func(t *testing.T, ctx context.Context, slow *slowScripts, client func() *lock.Client)) {
		synctest.Test(t, func(t *testing.T) {
			slow := &slowScripts{out: 40 * time.Millisecond, back: 60 * time.Millisecond}
			m := miniredis.NewMiniRedis()
			defer m.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour) // on the bubble's clock
			defer cancel()
			var closers []func() error
			defer func() {
				for _, c := range closers {
					assert.NoError(t, c())
				}
			}()
			test(t, ctx, slow, func() *lock.Client {
				rdb := redistest.SynctestClient(m)
				rdb.AddHook(slow)
				locks := newClient(t, rdb, lock.WithDrift(0, drift))
				closers = append(closers, locks.Close, rdb.Close)
				return locks
			})
		})
	}

	t.Run("try", func(t *testing.T) {
		bubble(t, func(t *testing.T, ctx context.Context, slow *slowScripts, client func() *lock.Client) {
			locks := client()
			slow.on.Store(true)
			l, err := locks.TryObtain(ctx, "job", ttl)
			require.NoError(t, err)
			assert.Equal(t, left, time.Until(l.Until()), "TryObtain")
			require.NoError(t, l.Release(ctx))

			l, err = locks.Obtain(ctx, "job", ttl)
			require.NoError(t, err)
			assert.Equal(t, left, time.Until(l.Until()), "Obtain, uncontended")
			require.NoError(t, l.Release(ctx))
		})
	})
	t.Run("refresh", func(t *testing.T) {
		bubble(t, func(t *testing.T, ctx context.Context, slow *slowScripts, client func() *lock.Client) {
			slow.on.Store(true)
			l, err := client().TryObtain(ctx, "job", ttl)
			require.NoError(t, err)
			time.Sleep(time.Second)
			require.NoError(t, l.Refresh(ctx, ttl))
			assert.Equal(t, left, time.Until(l.Until()))
			require.NoError(t, l.Release(ctx))
		})
	})
	t.Run("waiting try", func(t *testing.T) {
		bubble(t, func(t *testing.T, ctx context.Context, slow *slowScripts, client func() *lock.Client) {
			holder, waiter := client(), client()
			held, err := holder.TryObtain(ctx, "job", time.Minute)
			require.NoError(t, err)
			got := make(chan *lock.Lock, 1)
			validity := make(chan time.Duration, 1)
			go func() {
				l, err := waiter.Obtain(ctx, "job", ttl)
				if assert.NoError(t, err) {
					validity <- time.Until(l.Until())
				}
				got <- l
			}()
			synctest.Wait() // the waiter tried, subscribed, tried again, and waits
			tries := waiter.Stats().Tries
			require.Equal(t, int64(2), tries, "the waiter tried, subscribed and tried again")
			slow.on.Store(true)
			require.NoError(t, held.Release(ctx))
			l := receive(t, got, time.Minute, "the waiter got the lock its release reserved for it")
			assert.Equal(t, left, <-validity)
			assert.Equal(t, tries+1, waiter.Stats().Tries, "the waiter took the lock with a try of its own")
			require.NoError(t, l.Release(ctx))
		})
	})
	t.Run("hand-over", func(t *testing.T) {
		bubble(t, func(t *testing.T, ctx context.Context, slow *slowScripts, client func() *lock.Client) {
			locks := client()
			held, err := locks.Obtain(ctx, "job", time.Minute)
			require.NoError(t, err)
			got := make(chan *lock.Lock, 1)
			validity := make(chan time.Duration, 1)
			go func() {
				l, err := locks.Obtain(ctx, "job", ttl)
				if assert.NoError(t, err) {
					validity <- time.Until(l.Until())
				}
				got <- l
			}()
			synctest.Wait() // queued behind held
			tries := locks.Stats().Tries
			slow.on.Store(true)
			require.NoError(t, held.Release(ctx))
			l := receive(t, got, time.Minute, "the release handed the lock to the queued goroutine")
			assert.Equal(t, left, <-validity)
			assert.Equal(t, tries, locks.Stats().Tries, "handed over, without a try of its own")
			require.NoError(t, l.Release(ctx))
		})
	})
}

// TestAReleaseBetweenTryAndWaitIsHeard: a release that lands after a waiter's try found the lock taken and before
// the waiter waits — its message has reached the waiter's watch by the time the try's answer reaches the waiter —
// wakes the waiter at once. A waiter that cleared its events after the try would drop it and wait for its timer at
// the holder's ttl, an hour here.
func TestAReleaseBetweenTryAndWaitIsHeard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		defer m.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour) // on the bubble's clock
		defer cancel()
		holderRdb, waiterRdb := redistest.SynctestClient(m), redistest.SynctestClient(m)
		defer holderRdb.Close()
		defer waiterRdb.Close()
		holder := newClient(t, holderRdb)
		defer holder.Close()
		held, err := holder.TryObtain(ctx, "job", time.Hour)
		require.NoError(t, err)

		var released time.Time
		// The second failed try is the one after the confirmed subscription, which joined the Redis queue: the
		// release reserves the lock for the waiter and tells it on the channel.
		waiterRdb.AddHook(afterFailedTry(2, func() {
			released = time.Now()
			assert.NoError(t, held.Release(ctx))
			synctest.Wait() // the release message is in the waiter's watch
		}))
		waiter := newClient(t, waiterRdb)
		defer waiter.Close()
		got := make(chan *lock.Lock, 1)
		go func() {
			l, err := waiter.Obtain(ctx, "job", time.Hour)
			assert.NoError(t, err)
			got <- l
		}()
		l := receive(t, got, time.Minute, "the waiter was woken by the release that landed between its try and its wait")
		assert.Zero(t, time.Since(released), "woken at once")
		require.NoError(t, l.Release(ctx))
	})
}

// TestWaiterTakesOverAtTheHolderRemainingTTL: a holder that died keeps the lock until its key expires, and nothing
// tells the waiters when it does (miniredis sends no keyspace notifications): a waiter's timer, set to the holder's
// remaining ttl by its failed try, ends the wait. A waiter that came when 600 ms of the holder's second had passed
// gets the lock 400 ms later (plus the timer's margin of 1 to 2 ms): not after its own ttl, nor the holder's whole
// ttl, nor never.
func TestWaiterTakesOverAtTheHolderRemainingTTL(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client) {
		defer locks.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour) // on the bubble's clock
		defer cancel()
		crashed, err := lock.New(redistest.SynctestClient(m))
		require.NoError(t, err)
		_, err = crashed.TryObtain(ctx, "job", time.Second) // never released
		require.NoError(t, err)
		expires := time.Now().Add(time.Second)

		time.Sleep(600 * time.Millisecond)
		got := make(chan *lock.Lock, 1)
		go func() {
			l, err := locks.Obtain(ctx, "job", time.Minute)
			assert.NoError(t, err)
			got <- l
		}()
		l := receive(t, got, 10*time.Second, "the waiter took the lock over when the dead holder's key expired")
		assert.GreaterOrEqual(t, time.Now(), expires, "not before the key expired")
		assert.Less(t, time.Now(), expires.Add(3*time.Millisecond), "at the holder's remaining ttl, plus a little")
		require.NoError(t, l.Release(ctx))
	})
}
