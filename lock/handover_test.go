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

// beforeQueuedTry is a go-redis hook that calls fn before the first acquire a waiting process sends (a queued
// try), and then fails that try with err instead of sending it, when err is set.
type beforeQueuedTry struct {
	fn   func()
	err  error
	done atomic.Bool
}

func (h *beforeQueuedTry) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *beforeQueuedTry) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		// EVALSHA sha 3 lock fence queue value ttl fence-ttl waiter …: an acquire (three keys) with a waiter.
		args := cmd.Args()
		queued := len(args) > 9 && args[2] == 3 && args[9] != ""
		if queued && h.done.CompareAndSwap(false, true) {
			h.fn()
			if h.err != nil {
				cmd.SetErr(h.err)
				return h.err
			}
		}
		return next(ctx, cmd)
	}
}
func (h *beforeQueuedTry) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// noPermission is the error reply of a server whose ACL refuses a command.
type noPermission struct{}

func (noPermission) Error() string {
	return "NOPERM this user has no permissions to run the 'evalsha' command"
}
func (noPermission) RedisError() {}

// A holder whose lease ran out (its key lives on for the drift margin) releases while the next waiter of its
// Client, now the contender, has a try on its way. The release must not hand the lock to that waiter: if the try
// then fails and the waiter returns, the lock would be held by a hand-over nobody owns (kept alive for ever by its
// auto-refresh); if the try succeeds, the waiter would be handed one Lock and take another on the same value.
func TestHandOverSkipsAWaiterWhoseTryIsOnItsWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		defer m.Close()
		rdb := redistest.SynctestClient(m)
		defer rdb.Close()
		hook := &beforeQueuedTry{err: noPermission{}}
		rdb.AddHook(hook)
		// The holder's lease ends at half its ttl; its key lives on until the ttl.
		locks, err := lock.New(rdb, lock.WithDrift(0.5, 0))
		require.NoError(t, err)
		defer locks.Close()
		ctx := context.Background()
		const ttl = 2 * time.Second
		held, err := locks.TryObtain(ctx, "job", ttl)
		require.NoError(t, err)
		hook.fn = func() { _ = held.Release(ctx) } // lands before the waiter's try

		err = locks.Do(ctx, "job", ttl, func(context.Context) error {
			t.Error("fn ran")
			return nil
		})
		assert.ErrorIs(t, err, lock.ErrNoPermission, "the waiter's try failed")

		time.Sleep(5 * ttl)
		synctest.Wait()
		other, err := lock.New(redistest.SynctestClient(m))
		require.NoError(t, err)
		defer other.Close()
		l, err := other.TryObtain(ctx, "job", ttl)
		require.NoError(t, err, "the lock is not held by a hand-over nobody owns")
		require.NoError(t, l.Release(ctx))
	})
}

// As above, with a try that succeeds: the hand-over goes to the next waiter that is not trying, and every Lock is
// one acquisition — the fences go up by one from holder to holder, none spent on a Lock nobody got.
func TestHandOverGoesToAWaiterNotTrying(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		defer m.Close()
		rdb := redistest.SynctestClient(m)
		defer rdb.Close()
		hook := &beforeQueuedTry{}
		rdb.AddHook(hook)
		locks, err := lock.New(rdb, lock.WithDrift(0.5, 0)) // the holder's lease ends at half its ttl
		require.NoError(t, err)
		defer locks.Close()
		ctx := context.Background()
		const ttl = 2 * time.Second
		held, err := locks.TryObtain(ctx, "job", ttl)
		require.NoError(t, err)
		hook.fn = func() { _ = held.Release(ctx) } // lands before the first waiter's try

		fences := make(chan int64, 2)
		for range 2 {
			go func() {
				l, err := locks.Obtain(ctx, "job", ttl)
				if !assert.NoError(t, err) {
					return
				}
				fences <- l.Fence()
				assert.NoError(t, l.Release(ctx))
			}()
			synctest.Wait() // in line in arrival order
		}
		got := []int64{<-fences, <-fences}
		assert.ElementsMatch(t, []int64{held.Fence() + 1, held.Fence() + 2}, got)
	})
}

// A waiting process whose last waiter gives up after a release reserved the lock for it gives the reservation
// back: the next process in line gets the lock at once, not when the claim window (a minute here) runs out.
func TestGivingUpPassesAReservationOn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		defer m.Close()
		client := func(hooks ...redis.Hook) *lock.Client {
			rdb := redistest.SynctestClient(m)
			t.Cleanup(func() { _ = rdb.Close() })
			for _, h := range hooks {
				rdb.AddHook(h)
			}
			c, err := lock.New(rdb, lock.WithClaimWindow(time.Minute))
			require.NoError(t, err)
			t.Cleanup(func() { _ = c.Close() })
			return c
		}
		stall := &redistest.StallAcquires{}
		bHook, bQueued := waiting(2) // the second failed try is the queued one
		cHook, cQueued := waiting(2)
		a, b, c := client(), client(stall, bHook), client(cHook)
		ctx := context.Background()
		held, err := a.TryObtain(ctx, "job", time.Hour)
		require.NoError(t, err)

		bctx, giveUp := context.WithCancel(ctx)
		bDone := make(chan error, 1)
		go func() {
			_, err := b.Obtain(bctx, "job", time.Hour)
			bDone <- err
		}()
		<-bQueued // b is first in the Redis queue
		// The queue is scored by the server's clock, the bubble's here: c comes a millisecond later, not at the
		// same time (ties go by process id).
		time.Sleep(time.Millisecond)
		cDone := make(chan error, 1)
		var cGot time.Time
		go func() {
			l, err := c.Obtain(ctx, "job", time.Hour)
			cGot = time.Now()
			if err == nil {
				err = l.Release(ctx)
			}
			cDone <- err
		}()
		<-cQueued // c is second
		synctest.Wait()

		stall.On() // b cannot claim what is reserved for it
		released := time.Now()
		require.NoError(t, held.Release(ctx))
		v, _ := m.Get("job")
		require.Regexp(t, "^reserved:", v, "reserved for b")
		giveUp()
		require.ErrorIs(t, <-bDone, context.Canceled)

		require.NoError(t, <-cDone)
		assert.Less(t, cGot.Sub(released), time.Second, "c did not wait out b's claim window")
	})
}
