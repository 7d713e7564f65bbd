package lock_test

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
	"github.com/keyward/keyward/keyspace"
	"github.com/keyward/keyward/lock"
)

// afterFailedTry returns a hook that calls fn after the n-th acquire attempt on a client that found the lock taken (n counts
// from 1), before the attempt's answer reaches the package: whatever fn does lands exactly between that try and
// what the waiter does next.
func afterFailedTry(n int64, fn func()) *redistest.AfterReply {
	return &redistest.AfterReply{N: n, Fn: fn, Match: func(r []any) bool { return len(r) == 2 && r[0] == int64(0) },
		MatchPipeline: redistest.FastTriesFailed}
}

// waiting returns a hook that closes the returned channel after the n-th failed try: by then the waiter is
// subscribed (the second try comes after the confirmed subscription) and about to wait.
func waiting(n int64) (*redistest.AfterReply, chan struct{}) {
	ch := make(chan struct{})
	return afterFailedTry(n, func() { close(ch) }), ch
}

func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func closeClient(t *testing.T, c *lock.Client) {
	t.Cleanup(func() { assert.NoError(t, c.Close()) })
}

func TestObtainUncontendedNeedsNoSubscription(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	locks := newClient(t, rdb)
	closeClient(t, locks)
	ctx := withTimeout(t, 10*time.Second)
	for range 3 {
		l, err := locks.Obtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx))
	}
	assert.Empty(t, rdb.PubSubChannels(ctx, "*").Val())
	assert.NotContains(t, rdb.ClientList(ctx).Val(), "flags=P", "no pub/sub connection was opened")
}

// TestNoLostWakeUp forces a release into each window where a wake-up could be lost: after the first, plain try
// and before the subscription, and after the try that follows the subscription and before the wait. The holder's
// ttl is a minute: a lost wake-up would leave the waiter waiting for its timer, past the test's limit. The hook
// returns only once the release's message has reached the waiter's watch (a watch of the test's own on the
// pub/sub connection the waiter's client shares hears it in the same delivery), so a waiter that dropped what its
// watch heard before waiting would miss it every time, not only when the message is quick.
func TestNoLostWakeUp(t *testing.T) {
	for _, n := range []int64{1, 2} {
		t.Run(fmt.Sprintf("release after failed try %d", n), func(t *testing.T) {
			srv := redistest.Start(t)
			holderRdb, waiterRdb := srv.Client(t), srv.Client(t)
			ctx := withTimeout(t, 10*time.Second)
			holder := newClient(t, holderRdb)
			held, err := holder.TryObtain(ctx, "job", time.Minute)
			require.NoError(t, err)

			watcher := keyspace.New(waiterRdb) // the connection the waiter's Client will share
			t.Cleanup(func() { assert.NoError(t, watcher.Close()) })
			seen, err := watcher.Watch(ctx, "job")
			require.NoError(t, err)
			defer seen.Close()
			waiterRdb.AddHook(afterFailedTry(n, func() {
				require.NoError(t, held.Release(ctx))
				if n == 1 {
					return // not subscribed yet: the try after the subscription must see the lock free
				}
				heard(t, seen, 5*time.Second, "the release's message on the waiter's watcher")
				// The watcher delivers a message to all the channel's watches under its lock: once a new watch
				// could be added, the waiter's has it too.
				w, err := watcher.Watch(ctx, "job")
				require.NoError(t, err)
				w.Close()
			}))
			waiter := newClient(t, waiterRdb)
			closeClient(t, waiter)
			octx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			l, err := waiter.Obtain(octx, "job", time.Minute)
			require.NoError(t, err, "the waiter was woken by the release (a lost wake-up waits for the holder's ttl)")
			require.NoError(t, l.Release(ctx))
		})
	}
}

// heard waits until watch hears a release, or fails after d, naming what did not arrive.
func heard(t *testing.T, watch *keyspace.Watch, d time.Duration, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		e, err := watch.Wait(ctx)
		if err != nil {
			t.Fatalf("%s did not arrive within %v: %v", what, d, err)
		}
		if e == keyspace.Released {
			return
		}
	}
}

func TestCrashedHolderIsTakenOverAtItsTTL(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client) {
		defer locks.Close()
		ctx := context.Background()
		crashed, err := lock.New(redistest.SynctestClient(m))
		require.NoError(t, err)
		_, err = crashed.TryObtain(ctx, "job", time.Second) // never released
		require.NoError(t, err)

		start := time.Now()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second) // the bubble's clock: fails at once if it hangs
		defer cancel()
		l, err := locks.Obtain(wctx, "job", time.Second)
		require.NoError(t, err, "the waiter took over at the crashed holder's ttl")
		waited := time.Since(start)
		assert.GreaterOrEqual(t, waited, time.Second)
		assert.Less(t, waited, time.Second+3*time.Millisecond, "taken over at the holder's PTTL plus a little")
		require.NoError(t, l.Release(ctx))
	})
}

func TestDeletedByAnotherToolWakesWaiters(t *testing.T) {
	srv := redistest.Start(t, redistest.WithNotify("Kg"))
	rdb, waiterRdb := srv.Client(t), srv.Client(t)
	ctx := withTimeout(t, 10*time.Second)
	_, err := newClient(t, rdb).TryObtain(ctx, "job", time.Minute)
	require.NoError(t, err)

	hook, subscribed := waiting(2)
	waiterRdb.AddHook(hook)
	waiter := newClient(t, waiterRdb)
	closeClient(t, waiter)
	go func() {
		<-subscribed
		assert.NoError(t, rdb.Del(ctx, "job").Err()) // redis-cli DEL job, say
	}()
	l, err := waiter.Obtain(ctx, "job", time.Minute)
	require.NoError(t, err, "woken by the keyspace notification, not the one-minute timer")
	require.NoError(t, l.Release(ctx))
}

func TestPubSubKilledMidWait(t *testing.T) {
	srv := redistest.Start(t)
	rdb, waiterRdb := srv.Client(t), srv.Client(t)
	ctx := withTimeout(t, 10*time.Second)
	held, err := newClient(t, rdb).TryObtain(ctx, "job", time.Minute)
	require.NoError(t, err)

	hook, subscribed := waiting(2)
	waiterRdb.AddHook(hook)
	waiter := newClient(t, waiterRdb)
	closeClient(t, waiter)
	released := make(chan struct{})
	go func() {
		defer close(released)
		<-subscribed
		assert.NoError(t, rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err())
		assert.NoError(t, held.Release(ctx)) // the release message may be lost with the connection
	}()
	l, err := waiter.Obtain(ctx, "job", time.Minute)
	require.NoError(t, err, "the reconnect woke the waiter")
	<-released // the waiter may be woken before Release has its answer: the test's ctx must outlive it
	require.NoError(t, l.Release(ctx))
}

func TestCancelledObtainCleansUp(t *testing.T) {
	srv := redistest.Start(t)
	rdb, waiterRdb := srv.Client(t), srv.Client(t)
	ctx := withTimeout(t, 10*time.Second)
	held, err := newClient(t, rdb).TryObtain(ctx, "job", time.Minute)
	require.NoError(t, err)

	hook, subscribed := waiting(2)
	waiterRdb.AddHook(hook)
	waiter := newClient(t, waiterRdb)
	wctx, cancel := context.WithCancelCause(ctx)
	go func() {
		<-subscribed
		cancel(errors.New("shutting down"))
	}()
	_, err = waiter.Obtain(wctx, "job", time.Minute)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "shutting down", "the cause of the cancellation is returned")

	assert.Zero(t, rdb.ZCard(ctx, "{job}:queue").Val(), "the waiter left the Redis queue")
	require.NoError(t, waiter.Close())
	assert.Empty(t, rdb.PubSubChannels(ctx, "*").Val(), "and its subscription")
	require.NoError(t, held.Release(ctx))
	assert.Zero(t, rdb.Exists(ctx, "job").Val(), "the release was not reserved for the waiter that left")
}

func TestDeadHeadCostsOneClaimWindow(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client) {
		defer locks.Close()
		ctx := context.Background()
		holder, err := lock.New(redistest.SynctestClient(m))
		require.NoError(t, err)
		held, err := holder.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		_, err = m.ZAdd("{job}:queue", 1, "a-process-that-died") // first in line, will never claim
		require.NoError(t, err)

		got := make(chan *lock.Lock)
		go func() {
			l, err := locks.Obtain(ctx, "job", time.Minute)
			assert.NoError(t, err)
			got <- l
		}()
		synctest.Wait() // the waiter is queued and waiting
		released := time.Now()
		require.NoError(t, held.Release(ctx))
		l := <-got
		waited := time.Since(released)
		assert.GreaterOrEqual(t, waited, 20*time.Millisecond, "the reservation for the dead process held")
		assert.Less(t, waited, 23*time.Millisecond, "for no longer than the claim window")
		require.NotNil(t, l)
		require.NoError(t, l.Release(ctx))
	})
}

// TestHandOffWithinAClient: a goroutine queued behind a lock its own Client holds is handed the lock in the
// release's round trip. The hand-over is an acquisition like any other: the successor's fence is one above the
// holder's (storage fenced by the holder must refuse it once the successor wrote), its key and validity are its own
// ttl's from before the release was sent, and it gets the lock at once, without a try of its own at Redis and
// without waiting for a timer.
func TestHandOffWithinAClient(t *testing.T) {
	const drift = time.Millisecond
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client) {
		defer locks.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Hour) // on the bubble's clock
		defer cancel()
		first, err := locks.Obtain(ctx, "job", time.Minute)
		require.NoError(t, err)

		const ttl = 10 * time.Second // the successor's own, unlike the holder's
		got := make(chan *lock.Lock, 1)
		go func() {
			l, err := locks.Obtain(ctx, "job", ttl)
			assert.NoError(t, err)
			got <- l
		}()
		synctest.Wait() // the second goroutine is blocked: queued behind first
		tries := locks.Stats().Tries
		require.Equal(t, int64(1), tries, "the second goroutine queued behind its Client's holder, without a try at Redis")

		released := time.Now()
		require.NoError(t, first.Release(ctx))
		second := receive(t, got, time.Minute, "the release handed the lock to the queued goroutine")
		assert.Zero(t, time.Since(released), "handed over at once, not after a wait")
		assert.Equal(t, tries, locks.Stats().Tries, "handed over in the release's round trip: no try of its own")
		assert.Equal(t, first.Fence()+1, second.Fence(), "the hand-over advances the fence by one")
		assert.Equal(t, second.Value(), mustGet(t, m, "job"))
		assert.Equal(t, ttl, m.TTL("job"), "the key lives the successor's ttl")
		assert.Equal(t, released.Add(ttl-drift), second.Until(), "valid for its ttl from before the release was sent")
		require.NoError(t, second.Release(ctx))
		assert.False(t, m.Exists("job"))
	}, lock.WithDrift(0, drift))
}

func TestObtainMutualExclusionAcrossClients(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := withTimeout(t, 60*time.Second)
		var inside, total atomic.Int64
		var wg sync.WaitGroup
		for range 4 { // 4 "processes" of 4 goroutines
			locks := newClient(t, rdb)
			closeClient(t, locks)
			for range 4 {
				wg.Go(func() {
					for range 25 {
						l, err := locks.Obtain(ctx, "shared", 10*time.Second)
						if !assert.NoError(t, err) {
							return
						}
						assert.Equal(t, int64(1), inside.Add(1), "two holders at once")
						total.Add(1)
						inside.Add(-1)
						assert.NoError(t, l.Release(ctx))
					}
				})
			}
		}
		wg.Wait()
		assert.Equal(t, int64(400), total.Load())
	})
}

func TestManyWaitersShareOneConnection(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := withTimeout(t, 120*time.Second)
	holder := newClient(t, rdb)
	const keyCount, waiters = 1000, 10000
	held := make([]*lock.Lock, keyCount)
	for i := range keyCount {
		l, err := holder.TryObtain(ctx, fmt.Sprintf("key-%d", i), time.Minute)
		require.NoError(t, err)
		held[i] = l
	}

	waiterRdb := redistest.NewClient(t, srv.ClientOptions())
	hook, allWaiting := waiting(2 * keyCount) // two failed tries per key: the plain one and the subscribed one
	waiterRdb.AddHook(hook)
	locks := newClient(t, waiterRdb)
	closeClient(t, locks)
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Go(func() {
			l, err := locks.Obtain(ctx, fmt.Sprintf("key-%d", i%keyCount), time.Minute)
			if assert.NoError(t, err) {
				assert.NoError(t, l.Release(ctx))
			}
		})
	}
	<-allWaiting
	clients := rdb.ClientList(ctx).Val()
	assert.Equal(t, 1, strings.Count(clients, "flags=P"), "one pub/sub connection for 10,000 waiters")
	assert.Len(t, rdb.PubSubChannels(ctx, "{key-*").Val(), keyCount, "one subscription per key")
	for _, l := range held {
		require.NoError(t, l.Release(ctx))
	}
	wg.Wait()
	assert.Equal(t, int64(2*keyCount), locks.Stats().FailedTries,
		"per key, one goroutine tried at Redis (twice: plain, then subscribed); the others queued in the Client")
}

func TestDo(t *testing.T) {
	t.Run("cancels fn's context when the lock is lost", func(t *testing.T) {
		inBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client) {
			defer locks.Close()
			err := locks.Do(context.Background(), "job", 3*time.Second, func(ctx context.Context) error {
				m.Set("job", "someone else") // the key is taken while fn runs
				<-ctx.Done()
				assert.ErrorIs(t, context.Cause(ctx), lock.ErrLost)
				return ctx.Err()
			})
			assert.ErrorIs(t, err, context.Canceled)
			assert.ErrorIs(t, err, lock.ErrLost, "and the release reports the loss")
			got, _ := m.Get("job")
			assert.Equal(t, "someone else", got)
		})
	})
	t.Run("keeps the lock alive for a long fn", func(t *testing.T) {
		inBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client) {
			defer locks.Close()
			err := locks.Do(context.Background(), "job", time.Second, func(ctx context.Context) error {
				time.Sleep(10 * time.Second)
				return ctx.Err()
			})
			assert.NoError(t, err)
			assert.False(t, m.Exists("job"), "released")
		})
	})
	t.Run("releases on panic", func(t *testing.T) {
		_, rdb := redistest.Miniredis(t)
		locks := newClient(t, rdb)
		closeClient(t, locks)
		assert.PanicsWithValue(t, "boom", func() {
			_ = locks.Do(context.Background(), "job", time.Minute, func(context.Context) error { panic("boom") })
		})
		assert.Zero(t, rdb.Exists(context.Background(), "job").Val())
	})
	t.Run("returns fn's error", func(t *testing.T) {
		_, rdb := redistest.Miniredis(t)
		locks := newClient(t, rdb)
		closeClient(t, locks)
		want := errors.New("report failed")
		assert.ErrorIs(t, locks.Do(context.Background(), "job", time.Minute, func(context.Context) error { return want }), want)
	})
}

func TestCloseEndsWaiting(t *testing.T) {
	srv := redistest.Start(t)
	rdb, waiterRdb := srv.Client(t), srv.Client(t)
	ctx := withTimeout(t, 10*time.Second)
	held, err := newClient(t, rdb).TryObtain(ctx, "job", time.Minute)
	require.NoError(t, err)

	hook, subscribed := waiting(2)
	waiterRdb.AddHook(hook)
	waiter := newClient(t, waiterRdb)
	go func() {
		<-subscribed
		assert.NoError(t, waiter.Close())
	}()
	_, err = waiter.Obtain(ctx, "job", time.Minute)
	require.ErrorIs(t, err, lock.ErrClosed, "not left waiting for the one-minute timer")
	assert.Contains(t, err.Error(), `"job"`)
	require.NoError(t, held.Release(ctx))
}

// TestYieldingClientKeepsItsPlace: a holder that yields its turn to another process while a goroutine of its own
// Client waits puts its Client at the end of the Redis queue in the release itself, so that goroutine waits for
// its turn without a try that could only fail, and gets the lock in turn.
func TestYieldingClientKeepsItsPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		defer m.Close()
		ctx := context.Background()
		var closers []func() error
		defer func() {
			for _, c := range closers {
				assert.NoError(t, c())
			}
		}()
		client := func(opts ...lock.Option) *lock.Client {
			rdb := redistest.SynctestClient(m)
			locks := newClient(t, rdb, opts...)
			closers = append(closers, locks.Close, rdb.Close)
			return locks
		}
		a, b, c := client(lock.WithCohort(0)), client(), client()
		obtain := func(locks *lock.Client) <-chan *lock.Lock {
			got := make(chan *lock.Lock, 1)
			go func() {
				l, err := locks.Obtain(ctx, "job", time.Minute)
				assert.NoError(t, err)
				got <- l
			}()
			synctest.Wait() // holding, or waiting
			// The Redis queue is in the order of the server's clock, which is the bubble's: let it move on, so
			// that the next waiter comes after this one.
			time.Sleep(time.Millisecond)
			return got
		}

		held, err := b.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		a1, c1 := obtain(a), obtain(c) // a, then c, in the Redis queue
		require.NoError(t, held.Release(ctx))
		first := <-a1
		a2 := obtain(a) // behind first, in a's own line

		tries := a.Stats().Tries
		require.NoError(t, first.Release(ctx)) // cohort 0: c's turn, although a has a waiter
		second := <-c1
		synctest.Wait()
		assert.Equal(t, tries, a.Stats().Tries, "a's waiter did not try while c held the lock")
		assert.True(t, m.Exists("{job}:queue"), "a is in the Redis queue")

		require.NoError(t, second.Release(ctx))
		third := <-a2
		assert.Equal(t, tries+1, a.Stats().Tries, "one try: the claim of a's reservation")
		assert.Equal(t, third.Value(), mustGet(t, m, "job"))
		require.NoError(t, third.Release(ctx))
	})
}

func mustGet(t *testing.T, m *miniredis.Miniredis, key string) string {
	t.Helper()
	v, err := m.Get(key)
	require.NoError(t, err)
	return v
}

// Do's fn learns the lock's fencing token from its ctx, above the last holder's.
func TestDoGivesFnTheFence(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		locks := newClient(t, rdb)
		closeClient(t, locks)
		l, err := locks.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx))
		_, ok := lock.FenceFrom(ctx)
		assert.False(t, ok, "no fence outside Do")
		var fence int64
		require.NoError(t, locks.Do(ctx, "job", time.Minute, func(ctx context.Context) error {
			fence, ok = lock.FenceFrom(ctx)
			return nil
		}))
		assert.True(t, ok)
		assert.Greater(t, fence, l.Fence())
	})
}
