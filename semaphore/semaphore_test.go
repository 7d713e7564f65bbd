package semaphore_test

import (
	"context"
	"math"
	"os"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/semaphore"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperRole) != "" {
		os.Exit(m.Run()) // a child process of TestProcesses: goleak runs in the parent
	}
	goleak.VerifyTestMain(m)
}

// newSem returns a Semaphore that is closed when the test ends.
func newSem(t *testing.T, rdb redis.UniversalClient, name string, limit int, opts ...semaphore.Option) *semaphore.Semaphore {
	t.Helper()
	s, err := semaphore.New(rdb, name, limit, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

// inBubble runs test inside a testing/synctest bubble with a miniredis whose clock is the bubble's.
func inBubble(t *testing.T, test func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client)) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		defer m.Close()
		rdb := redistest.SynctestClient(m)
		defer rdb.Close()
		test(t, m, rdb)
	})
}

// bubbleSem is newSem inside a bubble: closed before the bubble ends.
func bubbleSem(t *testing.T, rdb redis.UniversalClient, name string, limit int, opts ...semaphore.Option) *semaphore.Semaphore {
	t.Helper()
	s, err := semaphore.New(rdb, name, limit, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func holders(t *testing.T, rdb redis.UniversalClient, key string) []string {
	t.Helper()
	return rdb.ZRange(context.Background(), key, 0, -1).Val()
}

func TestAcquireAndRelease(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := withTimeout(t, 10*time.Second)
		sem := newSem(t, rdb, "exports", 2, semaphore.WithPrefix("sem:"))
		assert.Equal(t, "exports", sem.Name())
		assert.Equal(t, 2, sem.Limit())

		a, err := sem.TryAcquire(ctx, 10*time.Second)
		require.NoError(t, err)
		assert.Contains(t, a.Value(), "pid="+strconv.Itoa(os.Getpid()), "the token carries the holder's pid")
		assert.WithinDuration(t, time.Now().Add(10*time.Second), a.Until(), 200*time.Millisecond)
		assert.Zero(t, a.Fence(), "no fencing asked for")
		b, err := sem.Acquire(ctx, 10*time.Second)
		require.NoError(t, err, "the second place is free: Acquire does not wait")
		assert.ElementsMatch(t, []string{a.Value(), b.Value()}, holders(t, rdb, "sem:exports"))

		_, err = sem.TryAcquire(ctx, 10*time.Second)
		require.ErrorIs(t, err, semaphore.ErrNotObtained)
		assert.Contains(t, err.Error(), `"exports"`)

		require.NoError(t, a.Refresh(ctx, time.Minute))
		assert.WithinDuration(t, time.Now().Add(time.Minute), a.Until(), time.Second)

		require.NoError(t, a.Release(ctx))
		assert.NoError(t, a.Release(ctx), "a second release is a no-op")
		assert.NoError(t, a.Err(), "a clean release is not a loss")
		c, err := sem.TryAcquire(ctx, 10*time.Second)
		require.NoError(t, err, "the released place is free again")

		require.NoError(t, b.Release(ctx))
		require.NoError(t, c.Release(ctx))
		assert.Zero(t, rdb.Exists(ctx, "sem:exports").Val(), "nothing left behind")
		assert.Empty(t, rdb.PubSubChannels(ctx, "*").Val(), "no Acquire had to wait: no subscription")
	})
}

func TestBadInput(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()

	newTests := []struct {
		name  string
		rdb   redis.UniversalClient
		sem   string
		limit int
		opts  []semaphore.Option
	}{
		{"nil client", nil, "s", 1, nil},
		{"nil *redis.Client", (*redis.Client)(nil), "s", 1, nil},
		{"nil *redis.ClusterClient", (*redis.ClusterClient)(nil), "s", 1, nil},
		{"nil *redis.Ring", (*redis.Ring)(nil), "s", 1, nil},
		{"empty name", rdb, "", 1, nil},
		{"zero limit", rdb, "s", 0, nil},
		{"negative limit", rdb, "s", -3, nil},
		{"drift factor of one", rdb, "s", 1, []semaphore.Option{semaphore.WithDrift(1, 0)}},
		{"negative drift", rdb, "s", 1, []semaphore.Option{semaphore.WithDrift(0.01, -time.Second)}},
		{"claim window below 1ms", rdb, "s", 1, []semaphore.Option{semaphore.WithClaimWindow(time.Microsecond)}},
		{"claim window above MaxTTL", rdb, "s", 1, []semaphore.Option{semaphore.WithClaimWindow(semaphore.MaxTTL + 1)}},
		{"negative cohort", rdb, "s", 1, []semaphore.Option{semaphore.WithCohort(-1)}},
	}
	for _, tt := range newTests {
		t.Run("New/"+tt.name, func(t *testing.T) {
			s, err := semaphore.New(tt.rdb, tt.sem, tt.limit, tt.opts...)
			assert.ErrorIs(t, err, semaphore.ErrInvalid)
			assert.Nil(t, s)
		})
	}

	sem := newSem(t, rdb, "s", 1)
	acquireTests := []struct {
		name string
		ctx  context.Context
		ttl  time.Duration
		want error
	}{
		{"zero ttl", ctx, 0, semaphore.ErrInvalid},
		{"negative ttl", ctx, -time.Second, semaphore.ErrInvalid},
		{"ttl within the drift margin", ctx, 2 * time.Millisecond, semaphore.ErrInvalid},
		{"ttl above MaxTTL", ctx, semaphore.MaxTTL + time.Millisecond, semaphore.ErrInvalid},
		{"ttl whose doubling overflows", ctx, math.MaxInt64, semaphore.ErrInvalid},
		{"cancelled context", cancelled, time.Second, context.Canceled},
	}
	for _, tt := range acquireTests {
		t.Run("TryAcquire/"+tt.name, func(t *testing.T) {
			p, err := sem.TryAcquire(tt.ctx, tt.ttl)
			assert.ErrorIs(t, err, tt.want)
			assert.Nil(t, p)
		})
		t.Run("Acquire/"+tt.name, func(t *testing.T) {
			p, err := sem.Acquire(tt.ctx, tt.ttl)
			assert.ErrorIs(t, err, tt.want)
			assert.Nil(t, p)
		})
		t.Run("Do/"+tt.name, func(t *testing.T) {
			ran := false
			err := sem.Do(tt.ctx, tt.ttl, func(context.Context) error { ran = true; return nil })
			assert.ErrorIs(t, err, tt.want)
			assert.False(t, ran)
		})
	}
	assert.ErrorIs(t, sem.SetLimit(0), semaphore.ErrInvalid)
	assert.Equal(t, 1, sem.Limit(), "a refused limit changes nothing")
	assert.Zero(t, rdb.DBSize(ctx).Val(), "no bad input reached the server")

	p, err := sem.TryAcquire(ctx, time.Second)
	require.NoError(t, err)
	assert.ErrorIs(t, p.Refresh(ctx, 0), semaphore.ErrInvalid)
	assert.ErrorIs(t, p.Refresh(ctx, -time.Second), semaphore.ErrInvalid)
	assert.ErrorIs(t, p.Refresh(ctx, semaphore.MaxTTL+time.Millisecond), semaphore.ErrInvalid)
	require.NoError(t, p.Release(ctx))

	require.NoError(t, rdb.Set(ctx, "a-string", "x", 0).Err())
	_, err = newSem(t, rdb, "a-string", 1).TryAcquire(ctx, time.Second)
	assert.ErrorIs(t, err, semaphore.ErrWrongType, "a key of another type under the name")
	assert.Contains(t, err.Error(), "WRONGTYPE")
}

func TestReleaseOfAPermitNoLongerHeld(t *testing.T) {
	t.Run("expired", func(t *testing.T) {
		inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
			ctx := context.Background()
			sem := bubbleSem(t, rdb, "s", 1)
			first, err := sem.TryAcquire(ctx, time.Second)
			require.NoError(t, err)

			time.Sleep(time.Second + time.Millisecond)
			<-first.Lost() // closed at the validity deadline, without auto-refresh
			require.ErrorIs(t, first.Err(), semaphore.ErrLost)
			second, err := sem.TryAcquire(ctx, time.Second)
			require.NoError(t, err, "the expired permit's place is free")

			require.ErrorIs(t, first.Refresh(ctx, time.Second), semaphore.ErrLost)
			err = first.Release(ctx)
			require.ErrorIs(t, err, semaphore.ErrNotHeld)
			require.ErrorIs(t, err, semaphore.ErrLost)
			assert.Contains(t, err.Error(), `semaphore "s"`)
			assert.Equal(t, []string{second.Value()}, holders(t, rdb, "s"), "the late release left the next holder alone")
			require.NoError(t, second.Release(ctx))
		})
	})
	t.Run("expired on the server, not yet here", func(t *testing.T) {
		inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
			ctx := context.Background()
			// No drift margin: the server's expiry and the local deadline are the same instant.
			p, err := bubbleSem(t, rdb, "s", 1, semaphore.WithDrift(0, 0)).TryAcquire(ctx, time.Second)
			require.NoError(t, err)
			m.SetTime(time.Now().Add(time.Hour)) // the server's clock runs ahead
			err = p.Release(ctx)
			require.ErrorIs(t, err, semaphore.ErrNotHeld, "the server saw it expired")
			assert.NotErrorIs(t, err, semaphore.ErrLost, "it was not lost here")
			assert.Empty(t, holders(t, rdb, "s"))
		})
	})
	t.Run("removed by another tool", func(t *testing.T) {
		redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
			ctx := withTimeout(t, 10*time.Second)
			p, err := newSem(t, rdb, "s", 1).TryAcquire(ctx, time.Minute)
			require.NoError(t, err)
			require.NoError(t, rdb.Del(ctx, "s").Err())
			err = p.Release(ctx)
			require.ErrorIs(t, err, semaphore.ErrNotHeld)
			assert.Contains(t, err.Error(), "expired or taken")
		})
	})
}

func TestLostAtTheDeadlineNotBefore(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		start := time.Now()
		p, err := bubbleSem(t, rdb, "s", 3).TryAcquire(context.Background(), time.Second)
		require.NoError(t, err)
		<-p.Lost()
		// Default drift: 1 % of 1 s + 2 ms.
		assert.Equal(t, time.Second-12*time.Millisecond, time.Since(start))
		assert.Equal(t, start.Add(time.Second-12*time.Millisecond), p.Until())
	})
}

func TestAutoRefreshKeepsThePermitForManyTTLs(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		sem := bubbleSem(t, rdb, "s", 1)
		p, err := sem.TryAcquire(ctx, time.Second, semaphore.WithAutoRefresh())
		require.NoError(t, err)

		time.Sleep(20 * time.Second)
		select {
		case <-p.Lost():
			t.Fatalf("lost after 20 ttls: %v", p.Err())
		default:
		}
		_, err = sem.TryAcquire(ctx, time.Second)
		require.ErrorIs(t, err, semaphore.ErrNotObtained, "still held")
		require.NoError(t, p.Release(ctx))
		assert.Empty(t, holders(t, rdb, "s"))
	})
}

func TestAutoRefreshReportsLoss(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		p, err := bubbleSem(t, rdb, "s", 2).TryAcquire(ctx, 3*time.Second, semaphore.WithAutoRefresh())
		require.NoError(t, err)
		_, err = m.ZRem("s", p.Value()) // an operator removes the permit
		require.NoError(t, err)
		start := time.Now()
		<-p.Lost()
		assert.Equal(t, time.Second, time.Since(start), "noticed at the next refresh, a third of the ttl")
		require.ErrorIs(t, p.Err(), semaphore.ErrLost)
		require.ErrorIs(t, p.Release(context.Background()), semaphore.ErrLost)
	})
}

func TestCrashedHolderIsReclaimedAfterItsTTL(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		crashedRdb := redistest.SynctestClient(m)
		defer crashedRdb.Close()
		crashed := bubbleSem(t, crashedRdb, "gpu", 2)
		_, err := crashed.TryAcquire(ctx, time.Second) // never released
		require.NoError(t, err)
		_, err = crashed.TryAcquire(ctx, 3*time.Second) // never released either
		require.NoError(t, err)

		sem := bubbleSem(t, rdb, "gpu", 2)
		start := time.Now()
		p, err := sem.Acquire(ctx, time.Second)
		require.NoError(t, err)
		waited := time.Since(start)
		assert.GreaterOrEqual(t, waited, time.Second)
		assert.Less(t, waited, time.Second+3*time.Millisecond, "reclaimed at the first expiry plus a little")
		assert.Len(t, holders(t, rdb, "gpu"), 2, "the crashed holder's other permit still counts")
		require.NoError(t, p.Release(ctx))
	})
}

func TestFencing(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	ctx := context.Background()
	sem := newSem(t, rdb, "s", 2, semaphore.WithFencing())
	var last int64
	for range 3 {
		p, err := sem.Acquire(ctx, time.Minute)
		require.NoError(t, err)
		assert.Greater(t, p.Fence(), last)
		last = p.Fence()
		q, err := sem.TryAcquire(ctx, time.Minute)
		require.NoError(t, err)
		assert.Greater(t, q.Fence(), last, "every permit gets its own")
		last = q.Fence()
		require.NoError(t, p.Release(ctx))
		require.NoError(t, q.Release(ctx))
	}
}

func TestAmbiguousAcquireIsCleanedUp(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := withTimeout(t, 10*time.Second)
		sem := newSem(t, rdb, "uploads", 1)
		warm, err := sem.TryAcquire(ctx, time.Second) // loads the scripts
		require.NoError(t, err)
		require.NoError(t, warm.Release(ctx))
		hook := &redistest.LostReply{Name: "evalsha"}
		rdb.AddHook(hook)

		p, err := sem.TryAcquire(ctx, 10*time.Second)
		require.Error(t, err)
		assert.Nil(t, p)
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "the timeout is reported, not success")
		assert.NotErrorIs(t, err, semaphore.ErrNotObtained)
		assert.True(t, hook.Done())
		assert.Empty(t, holders(t, rdb, "uploads"), "the permit the server did add was released")
	})
}

// TestServerClockDecidesExpiry shows that admission follows the server's clock alone: a client whose clock runs
// ahead (here: the server's stands still) sees its own permit lost, yet nobody is admitted in its place until the
// server's clock says the permit expired.
func TestServerClockDecidesExpiry(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		serverNow := time.Now()
		m.SetTime(serverNow)
		sem := bubbleSem(t, rdb, "s", 1)
		p, err := sem.TryAcquire(ctx, time.Second)
		require.NoError(t, err)

		time.Sleep(time.Minute) // the client's clock moves on, the server's does not
		<-p.Lost()
		_, err = sem.TryAcquire(ctx, time.Second)
		require.ErrorIs(t, err, semaphore.ErrNotObtained, "still held by the server's clock")

		m.SetTime(serverNow.Add(time.Second))
		q, err := sem.TryAcquire(ctx, time.Second)
		require.NoError(t, err, "expired by the server's clock")
		require.NoError(t, q.Release(ctx))
	})
}

// TestLostHandOverAnswer loses the answer of a release that handed the permit to a waiter of the same Semaphore:
// the waiter's next try renews the permit it was handed, and the semaphore does not lose a place.
func TestLostHandOverAnswer(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		sem := bubbleSem(t, rdb, "pool", 1)
		warm, err := sem.TryAcquire(ctx, time.Minute) // loads the scripts: the lost answer is the release's
		require.NoError(t, err)
		require.NoError(t, warm.Release(ctx))
		held, err := sem.TryAcquire(ctx, time.Minute)
		require.NoError(t, err)
		got := make(chan *semaphore.Permit)
		go func() {
			p, err := sem.Acquire(ctx, time.Minute)
			assert.NoError(t, err)
			got <- p
		}()
		synctest.Wait() // the waiter waits
		rdb.AddHook(&redistest.LostReply{Name: "evalsha"})

		released := time.Now()
		err = held.Release(ctx)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded, "the release's outcome is unknown")
		p := <-got
		require.NotNil(t, p)
		assert.Zero(t, time.Since(released), "at once, not when the place would have expired")
		assert.Equal(t, []string{p.Value()}, holders(t, rdb, "pool"), "the waiter holds the place it was handed")
		assert.Equal(t, int64(2), sem.Stats().FailedTries, "its first try after the release renewed it")
		require.ErrorIs(t, held.Release(ctx), semaphore.ErrNotHeld, "the first release did reach the server")
		require.NoError(t, p.Release(ctx))
		assert.Empty(t, holders(t, rdb, "pool"))
	})
}
