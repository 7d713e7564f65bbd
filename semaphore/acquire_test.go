package semaphore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/script"
	"github.com/keyward/keyward/keyspace"
	"github.com/keyward/keyward/semaphore"
)

// afterFailedTry returns a hook that calls fn after the n-th acquire attempt on a client that found no room (n counts
// from 1), before the attempt's answer reaches the package: whatever fn does lands exactly between that try and
// what the waiter does next.
func afterFailedTry(n int64, fn func()) *redistest.AfterReply {
	return &redistest.AfterReply{N: n, Fn: fn, Match: func(r []any) bool { return len(r) >= 3 && r[0] == int64(0) }}
}

// waiting returns a hook that closes the returned channel after the n-th failed try: after the second, the
// waiter is subscribed and about to wait.
func waiting(n int64) (*redistest.AfterReply, chan struct{}) {
	ch := make(chan struct{})
	return afterFailedTry(n, func() { close(ch) }), ch
}

// TestNoLostWakeUp forces a release into each window where a wake-up could be lost: after the first try and
// before the subscription, and after the try that follows the subscription and before the wait. The holder's ttl
// is a minute: a lost wake-up would leave the waiter waiting for its timer, past the test's limit.
func TestNoLostWakeUp(t *testing.T) {
	for _, n := range []int64{1, 2} {
		t.Run(fmt.Sprintf("release after failed try %d", n), func(t *testing.T) {
			srv := redistest.Start(t)
			holderRdb, waiterRdb := srv.Client(t), srv.Client(t)
			ctx := withTimeout(t, 10*time.Second)
			held, err := newSem(t, holderRdb, "pool", 1).TryAcquire(ctx, time.Minute)
			require.NoError(t, err)
			waiterRdb.AddHook(afterFailedTry(n, func() { require.NoError(t, held.Release(ctx)) }))

			p, err := newSem(t, waiterRdb, "pool", 1).Acquire(ctx, time.Minute)
			require.NoError(t, err, "the waiter was woken by the release")
			require.NoError(t, p.Release(ctx))
		})
	}
}

func TestHandOffWithinASemaphore(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		sem := bubbleSem(t, rdb, "pool", 1)
		first, err := sem.Acquire(ctx, time.Minute)
		require.NoError(t, err)

		got := make(chan *semaphore.Permit)
		for range 2 {
			go func() {
				p, err := sem.Acquire(ctx, time.Minute)
				assert.NoError(t, err)
				got <- p
			}()
		}
		synctest.Wait() // both wait: one subscribed, the other in the Semaphore's line
		require.NoError(t, first.Release(ctx))
		second := <-got
		assert.Equal(t, []string{second.Value()}, holders(t, rdb, "pool"), "handed over in the release's round trip")
		require.NoError(t, second.Release(ctx))
		third := <-got
		require.NoError(t, third.Release(ctx))
		st := sem.Stats()
		assert.Equal(t, int64(2), st.HandOffs)
		assert.Equal(t, int64(2), st.FailedTries, "one waiter tried at Redis (twice: plain, then subscribed); the other queued here")
	})
}

// TestFairAcrossProcesses checks the turn order: a released place goes to the process that waited first, and
// only it is woken to take it.
func TestFairAcrossProcesses(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := withTimeout(t, 20*time.Second)
	// Claim windows long enough for a slow machine: a claim that came late would be a try like any other.
	window := semaphore.WithClaimWindow(10 * time.Second)
	held, err := newSem(t, rdb, "pool", 1, window).TryAcquire(ctx, time.Minute)
	require.NoError(t, err)

	// Processes queue in the order in which their waits begin.
	var sems []*semaphore.Semaphore
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range 3 {
		waiterRdb := srv.Client(t)
		hook, subscribed := waiting(2)
		waiterRdb.AddHook(hook)
		sem := newSem(t, waiterRdb, "pool", 1, window)
		sems = append(sems, sem)
		wg.Go(func() {
			p, err := sem.Acquire(ctx, time.Minute)
			if assert.NoError(t, err) {
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
				assert.NoError(t, p.Release(ctx))
			}
		})
		<-subscribed
	}
	require.NoError(t, held.Release(ctx))
	wg.Wait()
	assert.Equal(t, []int{0, 1, 2}, order, "served in arrival order")
	for i, sem := range sems {
		assert.Equal(t, int64(2), sem.Stats().FailedTries, "process %d tried twice (plain, then subscribed) and then only claimed", i)
	}
}

func TestDeadProcessFirstInLineCostsOneClaimWindow(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		holderRdb := redistest.SynctestClient(m)
		defer holderRdb.Close()
		held, err := bubbleSem(t, holderRdb, "pool", 1).TryAcquire(ctx, time.Minute)
		require.NoError(t, err)
		_, err = m.ZAdd("{pool}:queue", 1, "a-process-that-died") // first in line, will never claim
		require.NoError(t, err)

		sem := bubbleSem(t, rdb, "pool", 1)
		got := make(chan *semaphore.Permit)
		go func() {
			p, err := sem.Acquire(ctx, time.Minute)
			assert.NoError(t, err)
			got <- p
		}()
		synctest.Wait() // the waiter is queued and waiting
		released := time.Now()
		require.NoError(t, held.Release(ctx)) // the holder's claim window is the default, 20 ms
		p := <-got
		waited := time.Since(released)
		assert.GreaterOrEqual(t, waited, 20*time.Millisecond, "the reservation for the dead process held")
		assert.Less(t, waited, 23*time.Millisecond, "for no longer than its claim window")
		require.NotNil(t, p)
		require.NoError(t, p.Release(ctx))
	})
}

func TestCancelledAcquireCleansUp(t *testing.T) {
	srv := redistest.Start(t)
	rdb, waiterRdb := srv.Client(t), srv.Client(t)
	ctx := withTimeout(t, 10*time.Second)
	held, err := newSem(t, rdb, "pool", 1).TryAcquire(ctx, time.Minute)
	require.NoError(t, err)
	hook, subscribed := waiting(2)
	waiterRdb.AddHook(hook)
	waiter := newSem(t, waiterRdb, "pool", 1)
	wctx, cancel := context.WithCancelCause(ctx)
	go func() {
		<-subscribed
		cancel(errors.New("shutting down"))
	}()
	_, err = waiter.Acquire(wctx, time.Minute)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "shutting down", "the cause of the cancellation is returned")
	assert.Zero(t, rdb.ZCard(ctx, "{pool}:queue").Val(), "the waiter left the Redis queue")
	require.NoError(t, held.Release(ctx))
	assert.Zero(t, rdb.Exists(ctx, "{pool}:reserved").Val(), "the release reserved nothing for the waiter that left")
	require.NoError(t, waiter.Close())
	require.NoError(t, waiter.Close(), "a second Close is a no-op")
}

func TestCloseWakesWaiters(t *testing.T) {
	srv := redistest.Start(t)
	rdb, waiterRdb := srv.Client(t), srv.Client(t)
	ctx := withTimeout(t, 10*time.Second)
	held, err := newSem(t, rdb, "pool", 1).TryAcquire(ctx, time.Minute)
	require.NoError(t, err)
	hook, subscribed := waiting(2)
	waiterRdb.AddHook(hook)
	sem, err := semaphore.New(waiterRdb, "pool", 1)
	require.NoError(t, err)

	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := sem.Acquire(ctx, time.Minute)
			errs <- err
		}()
	}
	<-subscribed
	require.NoError(t, sem.Close())
	for range 3 {
		assert.ErrorIs(t, <-errs, semaphore.ErrClosed)
	}
	_, err = sem.Acquire(ctx, time.Minute)
	assert.ErrorIs(t, err, semaphore.ErrClosed)
	assert.Zero(t, rdb.ZCard(ctx, "{pool}:queue").Val(), "the waiters left the Redis queue")
	require.NoError(t, held.Release(ctx))
}

func TestDeletedByAnotherToolWakesWaiters(t *testing.T) {
	srv := redistest.Start(t, redistest.WithNotify("Kg"))
	rdb, waiterRdb := srv.Client(t), srv.Client(t)
	ctx := withTimeout(t, 10*time.Second)
	_, err := newSem(t, rdb, "pool", 1).TryAcquire(ctx, time.Minute)
	require.NoError(t, err)
	hook, subscribed := waiting(2)
	waiterRdb.AddHook(hook)
	go func() {
		<-subscribed
		assert.NoError(t, rdb.Del(ctx, "pool").Err()) // redis-cli DEL pool, say
	}()
	p, err := newSem(t, waiterRdb, "pool", 1).Acquire(ctx, time.Minute)
	require.NoError(t, err, "woken by the keyspace notification, not the one-minute timer")
	require.NoError(t, p.Release(ctx))
}

func TestPubSubKilledMidWait(t *testing.T) {
	srv := redistest.Start(t)
	rdb, waiterRdb := srv.Client(t), srv.Client(t)
	ctx := withTimeout(t, 10*time.Second)
	held, err := newSem(t, rdb, "pool", 1).TryAcquire(ctx, time.Minute)
	require.NoError(t, err)
	hook, subscribed := waiting(2)
	waiterRdb.AddHook(hook)
	released := make(chan struct{})
	go func() {
		defer close(released)
		<-subscribed
		assert.NoError(t, rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err())
		assert.NoError(t, held.Release(ctx)) // the reservation message may be lost with the connection
	}()
	p, err := newSem(t, waiterRdb, "pool", 1).Acquire(ctx, time.Minute)
	require.NoError(t, err, "the reconnect woke the waiter, which claimed its place")
	<-released // the waiter may be woken before Release has its answer: the test's ctx must outlive it
	require.NoError(t, p.Release(ctx))
}

// The waiter shares its client's pub/sub connection with the other users of that client: closing one of them
// (a keyspace.Watcher, a lock.Client, another semaphore) under a waiter leaves it waiting, and the release wakes
// it.
func TestAnotherUserClosedUnderAWaiter(t *testing.T) {
	srv := redistest.Start(t)
	rdb, waiterRdb := srv.Client(t), srv.Client(t)
	ctx := withTimeout(t, 10*time.Second)
	held, err := newSem(t, rdb, "pool", 1).TryAcquire(ctx, time.Minute)
	require.NoError(t, err)
	w := keyspace.New(waiterRdb)
	_, err = w.Watch(ctx, "pool") // the very channel the waiter will subscribe to; w.Close ends this watch
	require.NoError(t, err)
	other, err := newSem(t, waiterRdb, "other", 1).TryAcquire(ctx, time.Minute) // another semaphore of the client
	require.NoError(t, err)
	otherSem := newSem(t, waiterRdb, "other", 1)
	hook, subscribed := waiting(2)
	waiterRdb.AddHook(hook)
	released := make(chan struct{})
	go func() {
		defer close(released)
		<-subscribed
		assert.NoError(t, w.Close())
		assert.NoError(t, otherSem.Close())
		assert.NoError(t, held.Release(ctx))
	}()
	p, err := newSem(t, waiterRdb, "pool", 1).Acquire(ctx, time.Minute)
	require.NoError(t, err, "woken by the release, not the one-minute timer")
	<-released // the waiter may be woken before Release has its answer: the test's ctx must outlive it
	require.NoError(t, p.Release(ctx))
	require.NoError(t, other.Release(ctx))
}

// TestLimitChanges checks that a lowered limit evicts no one and admits no one new until the count is below it,
// and that a raised one lets waiters in at once.
func TestLimitChanges(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := withTimeout(t, 20*time.Second)
		old := newSem(t, rdb, "pool", 3)
		var held []*semaphore.Permit
		for range 3 {
			p, err := old.TryAcquire(ctx, time.Minute)
			require.NoError(t, err)
			held = append(held, p)
		}
		lowered := newSem(t, rdb, "pool", 2) // the next version of the service
		_, err := lowered.TryAcquire(ctx, time.Minute)
		require.ErrorIs(t, err, semaphore.ErrNotObtained)
		for _, p := range held {
			require.NoError(t, p.Refresh(ctx, time.Minute), "the holders admitted under the old limit keep their permits")
		}

		require.NoError(t, held[0].Release(ctx))
		_, err = lowered.TryAcquire(ctx, time.Minute)
		require.ErrorIs(t, err, semaphore.ErrNotObtained, "2 held: not below the new limit")
		require.NoError(t, held[1].Release(ctx))
		p, err := lowered.TryAcquire(ctx, time.Minute)
		require.NoError(t, err, "1 held: below the new limit")
		require.NoError(t, p.Release(ctx))

		require.NoError(t, lowered.SetLimit(1))
		hook, subscribed := waiting(2)
		rdb.AddHook(hook)
		got := make(chan *semaphore.Permit)
		go func() {
			p, err := lowered.Acquire(ctx, time.Minute)
			assert.NoError(t, err)
			got <- p
		}()
		<-subscribed
		require.NoError(t, lowered.SetLimit(2))
		p = <-got
		require.NotNil(t, p, "woken by the raised limit, not by the one-minute timer")
		require.NoError(t, p.Release(ctx))
		require.NoError(t, held[2].Release(ctx))
	})
}

// TestLimitHoldsWithinAProcess runs Semaphores that stand for processes, each with goroutines that acquire and
// release in a loop, and counts the holders.
func TestLimitHoldsWithinAProcess(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := withTimeout(t, 60*time.Second)
		const limit = 3
		var inside, most, total atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			sem := newSem(t, rdb, "shared", limit)
			for range 4 {
				wg.Go(func() {
					for range 20 {
						err := sem.Do(ctx, 10*time.Second, func(context.Context) error {
							n := inside.Add(1)
							for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
							}
							time.Sleep(100 * time.Microsecond) // the work
							inside.Add(-1)
							total.Add(1)
							return nil
						})
						if !assert.NoError(t, err) {
							return
						}
					}
				})
			}
		}
		wg.Wait()
		assert.Equal(t, int64(320), total.Load())
		assert.LessOrEqual(t, most.Load(), int64(limit), "never more than limit holders at once")
		// Nobody waits: nobody is left in line. A place may still be reserved for a process whose waiters were
		// all served meanwhile (a race not understood yet: about one run in thirty ends so); it costs the others
		// no more than the claim window, which a process that died in line costs too.
		assert.Zero(t, rdb.ZCard(ctx, "{shared}:queue").Val())
		now, err := rdb.Time(ctx).Result()
		require.NoError(t, err)
		for _, r := range rdb.ZRangeWithScores(ctx, "{shared}:reserved", 0, -1).Val() {
			expires := time.UnixMilli(int64(r.Score))
			assert.LessOrEqual(t, expires.Sub(now), script.DefaultClaimWindow, "a place reserved for %v", r.Member)
		}
	})
}

func TestManyWaitersShareOneConnection(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := withTimeout(t, 30*time.Second)
	window := semaphore.WithClaimWindow(10 * time.Second) // long enough for a slow machine
	held, err := newSem(t, rdb, "pool", 2, window).TryAcquire(ctx, time.Minute)
	require.NoError(t, err)
	other, err := newSem(t, rdb, "pool", 2, window).TryAcquire(ctx, time.Minute)
	require.NoError(t, err)

	waiterRdb := redistest.NewClient(t, srv.ClientOptions())
	hook, allWaiting := waiting(2)
	waiterRdb.AddHook(hook)
	sem := newSem(t, waiterRdb, "pool", 2)
	const waiters = 1000
	var wg sync.WaitGroup
	for range waiters {
		wg.Go(func() {
			p, err := sem.Acquire(ctx, time.Minute)
			if assert.NoError(t, err) {
				assert.NoError(t, p.Release(ctx))
			}
		})
	}
	<-allWaiting
	assert.Equal(t, 1, strings.Count(rdb.ClientList(ctx).Val(), "flags=P"), "one pub/sub connection")
	assert.Len(t, rdb.PubSubChannels(ctx, "{pool}*").Val(), 2, "two subscriptions: the semaphore's channel and its own")
	require.NoError(t, held.Release(ctx))
	require.NoError(t, other.Release(ctx))
	wg.Wait()
	st := sem.Stats()
	// One goroutine at a time tries at Redis: twice to start (plain, then subscribed), and at most once more
	// when an announcement of a free place is read after its own waiters took that place. Not one per waiter.
	assert.LessOrEqual(t, st.FailedTries, int64(3), "the others queued here")
	assert.GreaterOrEqual(t, st.HandOffs, int64(waiters-2), "and were handed their permits in releases' round trips")
}

func TestDo(t *testing.T) {
	t.Run("cancels fn's context when the permit is lost", func(t *testing.T) {
		inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
			sem := bubbleSem(t, rdb, "pool", 2)
			err := sem.Do(context.Background(), 3*time.Second, func(ctx context.Context) error {
				m.Del("pool") // the permits are removed while fn runs
				<-ctx.Done()
				assert.ErrorIs(t, context.Cause(ctx), semaphore.ErrLost)
				return ctx.Err()
			})
			assert.ErrorIs(t, err, context.Canceled)
			assert.ErrorIs(t, err, semaphore.ErrLost, "and the release reports the loss")
		})
	})
	t.Run("keeps the permit alive for a long fn", func(t *testing.T) {
		inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
			sem := bubbleSem(t, rdb, "pool", 1)
			err := sem.Do(context.Background(), time.Second, func(ctx context.Context) error {
				time.Sleep(10 * time.Second)
				_, err := sem.TryAcquire(ctx, time.Second)
				assert.ErrorIs(t, err, semaphore.ErrNotObtained, "still held after 10 ttls")
				return ctx.Err()
			})
			assert.NoError(t, err)
			assert.False(t, m.Exists("pool"), "released")
		})
	})
	t.Run("releases on panic", func(t *testing.T) {
		_, rdb := redistest.Miniredis(t)
		sem := newSem(t, rdb, "pool", 1)
		assert.PanicsWithValue(t, "boom", func() {
			_ = sem.Do(context.Background(), time.Minute, func(context.Context) error { panic("boom") })
		})
		assert.Zero(t, rdb.Exists(context.Background(), "pool").Val())
	})
	t.Run("returns fn's error", func(t *testing.T) {
		_, rdb := redistest.Miniredis(t)
		sem := newSem(t, rdb, "pool", 1)
		want := errors.New("export failed")
		assert.ErrorIs(t, sem.Do(context.Background(), time.Minute, func(context.Context) error { return want }), want)
	})
}
