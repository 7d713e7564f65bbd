package script_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/script"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func serverMicros(t *testing.T, rdb *redis.Client) int64 {
	now, err := rdb.Time(context.Background()).Result()
	require.NoError(t, err)
	return now.UnixMicro()
}

func TestAcquireReleaseRefreshPTTL(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		before := serverMicros(t, rdb)

		a, err := script.Acquire(ctx, rdb, n, "token-a", 10*time.Second)
		require.NoError(t, err)
		require.True(t, a.OK)
		assert.GreaterOrEqual(t, a.Fence, before, "the fence is at least the server clock in µs")
		assert.LessOrEqual(t, a.Fence, serverMicros(t, rdb), "the fence is the server clock during the call")
		assert.Equal(t, "token-a", rdb.Get(ctx, "job").Val())
		assert.Equal(t, []string{"job"}, rdb.Keys(ctx, "*").Val(), "the acquire writes nothing but the lock")

		b, err := script.Acquire(ctx, rdb, n, "token-b", 10*time.Second)
		require.NoError(t, err)
		assert.False(t, b.OK)
		assert.InDelta(t, 10*time.Second, b.PTTL, float64(time.Second), "a failed try learns the holder's PTTL")

		ttl, ok, err := script.PTTL(ctx, rdb, n, "token-a")
		require.NoError(t, err)
		assert.True(t, ok)
		assert.InDelta(t, 10*time.Second, ttl, float64(time.Second))
		_, ok, err = script.PTTL(ctx, rdb, n, "token-b")
		require.NoError(t, err)
		assert.False(t, ok)

		ok, err = script.Refresh(ctx, rdb, n, "token-b", time.Minute)
		require.NoError(t, err)
		assert.False(t, ok, "refresh with another token does nothing")
		ok, err = script.Refresh(ctx, rdb, n, "token-a", time.Minute)
		require.NoError(t, err)
		assert.True(t, ok)
		assert.InDelta(t, time.Minute, rdb.PTTL(ctx, "job").Val(), float64(time.Second))

		ok, err = script.Release(ctx, rdb, n, "token-b", script.PublishPlain)
		require.NoError(t, err)
		assert.False(t, ok, "release with another token does nothing")
		assert.Equal(t, "token-a", rdb.Get(ctx, "job").Val())

		sub := rdb.Subscribe(ctx, n.Channel)
		defer sub.Close()
		_, err = sub.Receive(ctx) // the subscription is confirmed
		require.NoError(t, err)
		ok, err = script.Release(ctx, rdb, n, "token-a", script.PublishPlain)
		require.NoError(t, err)
		assert.True(t, ok)
		assert.Zero(t, rdb.Exists(ctx, "job").Val())
		msg, err := sub.ReceiveMessage(ctx)
		require.NoError(t, err)
		assert.Equal(t, n.Channel, msg.Channel, "the release is announced on the lock's channel")
	})
}

// TestFenceNeverGoesBackwards: consecutive holders of a lock on one server get increasing fences, each at least
// the server's clock before its acquire, whichever way they take it (the script, waiting or not, the pipeline
// without a script, a hand-over inside a release), across SCRIPT FLUSH, and with a counter ahead of the clock. An
// acquire writes nothing but the lock; a release with the holder's fence leaves nothing but the counter, holding
// that fence (unless the counter is above it).
func TestFenceNeverGoesBackwards(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("counter")
		ttl := time.Second
		var last int64
		// check asserts what every new holder's fence must be.
		check := func(why string, before, fence int64) {
			t.Helper()
			assert.Greater(t, fence, last, why)
			assert.GreaterOrEqual(t, fence, before, "%s: at least the server's clock", why)
			last = fence
		}
		// release releases the lock held by value, whose fence is last, as lock.Client does.
		release := func(value string) {
			t.Helper()
			out, _, err := script.ReleaseNext(ctx, rdb, n, value, script.PublishPlain,
				script.Next{Fence: last, HolderTTL: ttl})
			require.NoError(t, err)
			require.Equal(t, script.Released, out)
			assert.Equal(t, []string{n.Fence}, rdb.Keys(ctx, "*").Val(), "nothing is left but the counter")
			assert.Equal(t, strconv.FormatInt(last, 10), rdb.Get(ctx, n.Fence).Val(), "holding the holder's fence")
		}
		ways := map[string]func(value string) (script.Acquired, error){
			"script": func(value string) (script.Acquired, error) {
				return script.Acquire(ctx, rdb, n, value, ttl)
			},
			"waiter": func(value string) (script.Acquired, error) {
				return script.AcquireQueued(ctx, rdb, n, value, ttl, "proc", ttl)
			},
			"fast": func(value string) (script.Acquired, error) {
				return script.AcquireFast(ctx, rdb, n, value, ttl)
			},
		}
		// take takes the lock for value the given way, checks its fence and that the counter was only read, and
		// returns the fence.
		take := func(way, value, why string) int64 {
			t.Helper()
			counter, counterTTL := rdb.Get(ctx, n.Fence).Val(), rdb.PTTL(ctx, n.Fence).Val()
			before := serverMicros(t, rdb)
			a, err := ways[way](value)
			require.NoError(t, err)
			require.True(t, a.OK)
			check(why+" ("+way+")", before, a.Fence)
			assert.Equal(t, counter, rdb.Get(ctx, n.Fence).Val(), "%s (%s): the counter is only read", why, way)
			assert.LessOrEqual(t, rdb.PTTL(ctx, n.Fence).Val(), counterTTL, "%s (%s): its ttl is not set again", why, way)
			want := []string{n.Lock}
			if counter != "" {
				want = append(want, n.Fence)
			}
			assert.ElementsMatch(t, want, rdb.Keys(ctx, "*").Val(), "%s (%s): nothing is written but the lock", why, way)
			return a.Fence
		}
		acquire := func(way, why string) {
			t.Helper()
			value := "holder-" + strconv.FormatInt(last, 10)
			take(way, value, why)
			release(value)
		}
		for i, way := range []string{"script", "fast", "fast", "waiter", "script", "fast", "script", "waiter", "fast"} {
			acquire(way, "holder "+strconv.Itoa(i))
		}
		require.NoError(t, rdb.ScriptFlush(ctx).Err())
		acquire("script", "after SCRIPT FLUSH (EVALSHA answers NOSCRIPT, EVAL reloads)")
		require.NoError(t, rdb.ScriptFlush(ctx).Err())
		acquire("fast", "after SCRIPT FLUSH")
		acquire("waiter", "after SCRIPT FLUSH")

		// Hand-overs inside a release, one after another: the successors take over within the call, and the
		// counter remembers each holder's fence.
		take("fast", "h0", "before the hand-overs")
		for i := 1; i <= 5; i++ {
			holder, successor := "h"+strconv.Itoa(i-1), "h"+strconv.Itoa(i)
			held := last
			before := serverMicros(t, rdb)
			out, fence, err := script.ReleaseNext(ctx, rdb, n, holder, script.PublishPlain,
				script.Next{Successor: successor, TTL: ttl, Fence: held, HolderTTL: ttl, Cohort: true})
			require.NoError(t, err)
			require.Equal(t, script.HandedOver, out)
			check("hand-over "+strconv.Itoa(i), before, fence)
			assert.Equal(t, successor, rdb.Get(ctx, n.Lock).Val())
			assert.Equal(t, strconv.FormatInt(held, 10), rdb.Get(ctx, n.Fence).Val(), "the counter holds the holder's fence")
		}
		release("h5")
		acquire("fast", "after the hand-overs")

		// A counter ahead of the clock (a quorum lock's fence on a node also used alone, a clock that stepped back):
		// every way hands out exactly one more than the counter, which each release then moves on.
		ahead := serverMicros(t, rdb) + int64(time.Hour/time.Microsecond)
		require.NoError(t, rdb.Set(ctx, n.Fence, ahead, time.Hour).Err())
		for i, way := range []string{"script", "fast", "waiter", "fast", "script"} {
			counter, err := rdb.Get(ctx, n.Fence).Int64()
			require.NoError(t, err)
			value := "ahead-" + strconv.Itoa(i)
			assert.Equal(t, counter+1, take(way, value, "counter ahead of the clock"), way)
			release(value)
		}
		take("script", "h", "a holder before a hand-over ahead of the clock")
		out, fence, err := script.ReleaseNext(ctx, rdb, n, "h", script.PublishPlain,
			script.Next{Successor: "s", TTL: ttl, Fence: last, HolderTTL: ttl, Cohort: true})
		require.NoError(t, err)
		require.Equal(t, script.HandedOver, out)
		assert.Equal(t, last+1, fence, "a hand-over ahead of the clock: one more than the holder's fence")
		last = fence
		release("s")

		// A release does not lower a counter above the holder's fence, nor set its ttl again.
		take("fast", "low", "a holder below the counter to come")
		above := last + 1_000_000
		require.NoError(t, rdb.Set(ctx, n.Fence, above, time.Hour).Err())
		out, _, err = script.ReleaseNext(ctx, rdb, n, "low", script.PublishPlain, script.Next{Fence: last, HolderTTL: ttl})
		require.NoError(t, err)
		require.Equal(t, script.Released, out)
		assert.Equal(t, []string{n.Fence}, rdb.Keys(ctx, "*").Val())
		assert.Equal(t, strconv.FormatInt(above, 10), rdb.Get(ctx, n.Fence).Val(), "the counter is not lowered")
		assert.Greater(t, rdb.PTTL(ctx, n.Fence).Val(), 59*time.Minute, "nor written")
		assert.Equal(t, above+1, take("script", "next", "after a counter above the holder's fence"))
	})
}

// TestFencesIncreaseWhileTheClockStandsStill: in a synctest bubble the server's clock (miniredis's TIME) stands still
// from call to call, as a coarse clock can, or a hand-over inside one call. The holders of a lock still get strictly
// increasing fences, one more than the last, since every release leaves the holder's fence in the counter. Once
// the counter has lived 2 × the holder's ttl it is gone, nothing is left of the lock, and the clock has moved on
// past every fence.
func TestFencesIncreaseWhileTheClockStandsStill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		defer m.Close()
		rdb := redistest.SynctestClient(m)
		defer rdb.Close()
		ctx := context.Background()
		n := keys.For("job")
		const ttl = time.Second
		start := time.Now().UnixMicro()
		serverNow := func() int64 {
			t.Helper()
			now, err := rdb.Time(ctx).Result()
			require.NoError(t, err)
			return now.UnixMicro()
		}
		require.Equal(t, start, serverNow(), "the server's clock is the bubble's")

		ways := map[string]func(value string) (script.Acquired, error){
			"script": func(value string) (script.Acquired, error) { return script.Acquire(ctx, rdb, n, value, ttl) },
			"waiter": func(value string) (script.Acquired, error) {
				return script.AcquireQueued(ctx, rdb, n, value, ttl, "proc", ttl)
			},
			"fast": func(value string) (script.Acquired, error) { return script.AcquireFast(ctx, rdb, n, value, ttl) },
		}
		want := start // the first fence is the clock's
		release := func(value string, fence int64) {
			t.Helper()
			out, _, err := script.ReleaseNext(ctx, rdb, n, value, script.PublishPlain,
				script.Next{Fence: fence, HolderTTL: ttl})
			require.NoError(t, err)
			require.Equal(t, script.Released, out)
			assert.Equal(t, strconv.FormatInt(fence, 10), rdb.Get(ctx, n.Fence).Val())
			assert.Equal(t, script.CounterTTL(ttl), rdb.PTTL(ctx, n.Fence).Val())
		}
		for i, way := range []string{"script", "fast", "waiter", "fast", "script", "waiter"} {
			value := "holder-" + strconv.Itoa(i)
			a, err := ways[way](value)
			require.NoError(t, err)
			require.True(t, a.OK, way)
			assert.Equal(t, want, a.Fence, "holder %d (%s): one more than the last", i, way)
			release(value, a.Fence)
			want = a.Fence + 1
		}
		a, err := script.Acquire(ctx, rdb, n, "h0", ttl)
		require.NoError(t, err)
		require.True(t, a.OK)
		require.Equal(t, want, a.Fence)
		fence := a.Fence
		for i := 1; i <= 3; i++ {
			out, next, err := script.ReleaseNext(ctx, rdb, n, "h"+strconv.Itoa(i-1), script.PublishPlain,
				script.Next{Successor: "h" + strconv.Itoa(i), TTL: ttl, Fence: fence, HolderTTL: ttl, Cohort: true})
			require.NoError(t, err)
			require.Equal(t, script.HandedOver, out)
			assert.Equal(t, fence+1, next, "hand-over %d: one more than the holder's", i)
			fence = next
		}
		release("h3", fence)
		assert.Equal(t, start, serverNow(), "the clock has not moved on")
		assert.Equal(t, start+9, fence, "ten holders, ten fences")
		assert.Equal(t, []string{n.Fence}, rdb.Keys(ctx, "*").Val(), "only the counter is left")

		time.Sleep(script.CounterTTL(ttl) - time.Millisecond)
		assert.EqualValues(t, 1, rdb.Exists(ctx, n.Fence).Val(), "the counter lives 2 × ttl")
		time.Sleep(time.Millisecond)
		assert.Zero(t, rdb.DBSize(ctx).Val(), "and then nothing is left")

		now := serverNow()
		require.Equal(t, start+script.CounterTTL(ttl).Microseconds(), now)
		a, err = script.AcquireFast(ctx, rdb, n, "later", ttl)
		require.NoError(t, err)
		require.True(t, a.OK)
		assert.Equal(t, now, a.Fence, "the clock, which has moved on past every fence")
		assert.Greater(t, a.Fence, fence)
	})
}

// TestFenceSurvivesRestartWithoutPersistence: a server that forgot everything still hands out more than before,
// since its clock has moved on.
func TestFenceSurvivesRestartWithoutPersistence(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	n := keys.For("report")
	first, err := script.Acquire(ctx, rdb, n, "before", time.Second)
	require.NoError(t, err)
	require.True(t, first.OK)

	srv.Restart(t) // empty: no RDB, no AOF, no cached script
	require.Zero(t, rdb.DBSize(ctx).Val(), "the restarted server forgot everything")

	before := serverMicros(t, rdb)
	second, err := script.Acquire(ctx, rdb, n, "after", time.Second)
	require.NoError(t, err)
	require.True(t, second.OK)
	assert.Greater(t, second.Fence, first.Fence)
	assert.GreaterOrEqual(t, second.Fence, before)

	srv.Restart(t)
	before = serverMicros(t, rdb)
	third, err := script.AcquireFast(ctx, rdb, n, "fast", time.Second)
	require.NoError(t, err)
	require.True(t, third.OK)
	assert.Greater(t, third.Fence, second.Fence)
	assert.GreaterOrEqual(t, third.Fence, before)

	// A quorum node's counter, forgotten too: its next fence is at least the clock.
	above, err := script.AcquireAbove(ctx, rdb, keys.For("quorum"), "q", time.Second, 5, "", 0)
	require.NoError(t, err)
	require.True(t, above.OK)
	srv.Restart(t)
	before = serverMicros(t, rdb)
	again, err := script.AcquireAbove(ctx, rdb, keys.For("quorum"), "q2", time.Second, 5, "", 0)
	require.NoError(t, err)
	require.True(t, again.OK)
	assert.Greater(t, again.Fence, above.Fence)
	assert.GreaterOrEqual(t, again.Fence, before)
}

// eachServer is redistest.ForEachServer with the miniredis behind the client (nil for the redis-server), for tests
// of how long a key lives: miniredis expires keys only when the test moves its clock on (FastForward), a
// redis-server in real time.
func eachServer(t *testing.T, test func(t *testing.T, rdb *redis.Client, mr *miniredis.Miniredis)) {
	t.Run("miniredis", func(t *testing.T) {
		mr, rdb := redistest.Miniredis(t)
		test(t, rdb, mr)
	})
	t.Run("redis-server", func(t *testing.T) {
		test(t, redistest.Start(t).Client(t), nil)
	})
}

// shortTTL is a holder's ttl whose counter a test can see expire: any on miniredis, whose clock the test moves on;
// on a redis-server one short enough to wait for.
func shortTTL(mr *miniredis.Miniredis) time.Duration {
	if mr != nil {
		return time.Minute
	}
	return 100 * time.Millisecond
}

// requireCounterExpires checks that the fencing counter key holds fence and lives ttl from now, no longer: on
// miniredis exactly (it is there 1 ms before ttl has passed, and gone at ttl); on a redis-server its PTTL is more
// than half of ttl and at most ttl, and it is gone within a deadline.
func requireCounterExpires(t *testing.T, rdb *redis.Client, mr *miniredis.Miniredis, key string, fence int64,
	ttl time.Duration) {
	t.Helper()
	ctx := context.Background()
	require.Equal(t, strconv.FormatInt(fence, 10), rdb.Get(ctx, key).Val(), "the counter holds the fence")
	pttl := rdb.PTTL(ctx, key).Val()
	if mr != nil {
		require.Equal(t, ttl, pttl, "the counter lives %v", ttl)
		mr.FastForward(ttl - time.Millisecond)
		require.EqualValues(t, 1, rdb.Exists(ctx, key).Val(), "the counter lives %v", ttl)
		mr.FastForward(time.Millisecond)
		require.Zero(t, rdb.Exists(ctx, key).Val(), "and no longer")
		return
	}
	require.Greater(t, pttl, ttl/2, "the counter lives %v", ttl)
	require.LessOrEqual(t, pttl, ttl, "the counter lives %v", ttl)
	deadline := time.Now().Add(ttl + 5*time.Second)
	for rdb.Exists(ctx, key).Val() != 0 {
		require.False(t, time.Now().After(deadline), "the counter is still there long after %v", ttl)
		time.Sleep(5 * time.Millisecond) // polls the server's expiry
	}
}

// TestLockLeavesOnlyItsCounterBehind: a lock on one server writes nothing but its key when it is taken (and its
// queue while processes wait); a release with the holder's fence leaves only the fencing counter, holding that
// fence, for 2 × the holder's ttl; after that nothing is left of the lock.
func TestLockLeavesOnlyItsCounterBehind(t *testing.T) {
	eachServer(t, func(t *testing.T, rdb *redis.Client, mr *miniredis.Miniredis) {
		ctx := context.Background()
		n := keys.For("job")
		ttl := time.Minute
		holderTTL := shortTTL(mr)
		keysNow := func() []string {
			t.Helper()
			k, err := rdb.Keys(ctx, "*").Result()
			require.NoError(t, err)
			return k
		}
		for name, take := range map[string]func() (script.Acquired, error){
			"acquire":      func() (script.Acquired, error) { return script.Acquire(ctx, rdb, n, "mine", ttl) },
			"waiter":       func() (script.Acquired, error) { return script.AcquireQueued(ctx, rdb, n, "mine", ttl, "proc", ttl) },
			"fast acquire": func() (script.Acquired, error) { return script.AcquireFast(ctx, rdb, n, "mine", ttl) },
		} {
			t.Run(name, func(t *testing.T) {
				require.NoError(t, rdb.FlushAll(ctx).Err())
				a, err := take()
				require.NoError(t, err)
				require.True(t, a.OK)
				assert.Equal(t, []string{n.Lock}, keysNow(), "the acquire writes nothing but the lock")
				out, _, err := script.ReleaseNext(ctx, rdb, n, "mine", script.PublishPlain,
					script.Next{Fence: a.Fence, HolderTTL: holderTTL})
				require.NoError(t, err)
				require.Equal(t, script.Released, out)
				assert.Equal(t, []string{n.Fence}, keysNow(), "only the counter is left after the release")
				requireCounterExpires(t, rdb, mr, n.Fence, a.Fence, script.CounterTTL(holderTTL))
				assert.Empty(t, keysNow(), "after 2 × the holder's ttl nothing is left")

				// Taken again while the counter lives: the acquire only reads it.
				a, err = take()
				require.NoError(t, err)
				require.True(t, a.OK)
				out, _, err = script.ReleaseNext(ctx, rdb, n, "mine", script.PublishPlain,
					script.Next{Fence: a.Fence, HolderTTL: ttl})
				require.NoError(t, err)
				require.Equal(t, script.Released, out)
				counterTTL := rdb.PTTL(ctx, n.Fence).Val()
				b, err := take()
				require.NoError(t, err)
				require.True(t, b.OK)
				assert.Greater(t, b.Fence, a.Fence)
				assert.ElementsMatch(t, []string{n.Lock, n.Fence}, keysNow())
				assert.Equal(t, strconv.FormatInt(a.Fence, 10), rdb.Get(ctx, n.Fence).Val(), "the acquire did not write the counter")
				assert.LessOrEqual(t, rdb.PTTL(ctx, n.Fence).Val(), counterTTL, "nor set its ttl")
			})
		}

		t.Run("a holder ttl of zero: the counter lives 1 ms, the least PX", func(t *testing.T) {
			if mr == nil {
				t.Skip("a counter that lives 1 ms is gone before a redis-server's PTTL can be read")
			}
			require.NoError(t, rdb.FlushAll(ctx).Err())
			a, err := script.Acquire(ctx, rdb, n, "mine", ttl)
			require.NoError(t, err)
			require.True(t, a.OK)
			out, _, err := script.ReleaseNext(ctx, rdb, n, "mine", script.PublishPlain, script.Next{Fence: a.Fence})
			require.NoError(t, err)
			require.Equal(t, script.Released, out)
			requireCounterExpires(t, rdb, mr, n.Fence, a.Fence, time.Millisecond)
		})

		t.Run("with a waiting process", func(t *testing.T) {
			require.NoError(t, rdb.FlushAll(ctx).Err())
			a, err := script.AcquireQueued(ctx, rdb, n, "a", ttl, "proc-a", ttl)
			require.NoError(t, err)
			require.True(t, a.OK)
			b, err := script.AcquireQueued(ctx, rdb, n, "b", ttl, "proc-b", ttl)
			require.NoError(t, err)
			require.False(t, b.OK)
			assert.ElementsMatch(t, []string{n.Lock, n.Queue}, keysNow(), "the lock and its queue")
			assert.InDelta(t, ttl, rdb.PTTL(ctx, n.Queue).Val(), float64(time.Second), "the queue expires")

			// Handed over to a successor in the holder's own process, then reserved for proc-b, which claims it.
			out, fence, err := script.ReleaseNext(ctx, rdb, n, "a", script.PublishPlain,
				script.Next{Successor: "a2", TTL: ttl, Fence: a.Fence, HolderTTL: ttl, Cohort: true, Waiter: "proc-a"})
			require.NoError(t, err)
			require.Equal(t, script.HandedOver, out)
			assert.Greater(t, fence, a.Fence)
			assert.ElementsMatch(t, []string{n.Lock, n.Queue, n.Fence}, keysNow(), "the counter after a hand-over")
			assert.Equal(t, strconv.FormatInt(a.Fence, 10), rdb.Get(ctx, n.Fence).Val(), "holds the holder's fence")
			out, _, err = script.ReleaseNext(ctx, rdb, n, "a2", script.PublishPlain,
				script.Next{Window: time.Minute, Waiter: "proc-a", Fence: fence, HolderTTL: ttl})
			require.NoError(t, err)
			require.Equal(t, script.Released, out)
			assert.Equal(t, "reserved:proc-b", rdb.Get(ctx, n.Lock).Val())
			assert.Equal(t, strconv.FormatInt(fence, 10), rdb.Get(ctx, n.Fence).Val(), "a reservation remembers it too")
			b, err = script.AcquireQueued(ctx, rdb, n, "b", ttl, "proc-b", ttl)
			require.NoError(t, err)
			require.True(t, b.OK)
			assert.Greater(t, b.Fence, fence)
			assert.ElementsMatch(t, []string{n.Lock, n.Fence}, keysNow(), "the last waiter left the queue: it is gone")
			out, _, err = script.ReleaseNext(ctx, rdb, n, "b", script.PublishPlain,
				script.Next{Waiter: "proc-b", Fence: b.Fence, HolderTTL: holderTTL})
			require.NoError(t, err)
			require.Equal(t, script.Released, out)
			assert.Equal(t, []string{n.Fence}, keysNow(), "only the counter is left")
			requireCounterExpires(t, rdb, mr, n.Fence, b.Fence, script.CounterTTL(holderTTL))
			assert.Empty(t, keysNow(), "and then nothing")
		})
	})
}

// TestReleaseRemembersTheHoldersFence: every way a release goes on (freed, handed over, reserved for the first
// waiting process or the holder's own, the holder's process requeued) sets the counter to the holder's fence, for
// CounterTTL(HolderTTL), unless the counter is above it: then it is neither lowered nor written. A release that
// finds the lock held by another writes nothing.
func TestReleaseRemembersTheHoldersFence(t *testing.T) {
	eachServer(t, func(t *testing.T, rdb *redis.Client, mr *miniredis.Miniredis) {
		ctx := context.Background()
		n := keys.For("job")
		ttl := time.Minute
		holderTTL := 10 * time.Second
		ttlNear := func(want time.Duration, why string) {
			t.Helper()
			got := rdb.PTTL(ctx, n.Fence).Val()
			if mr != nil {
				assert.Equal(t, want, got, why)
				return
			}
			assert.InDelta(t, want, got, float64(time.Second), why)
		}
		for _, tc := range []struct {
			name  string
			queue []string
			next  script.Next
			want  script.Outcome
		}{
			{"freed, nobody waits", nil, script.Next{}, script.Released},
			{"freed, the holder's process leaves the line", []string{"proc"}, script.Next{Waiter: "proc"}, script.Released},
			{"handed over", nil, script.Next{Successor: "next", TTL: ttl}, script.HandedOver},
			{"handed over within the cohort", []string{"other", "proc"},
				script.Next{Successor: "next", TTL: ttl, Cohort: true, Waiter: "proc"}, script.HandedOver},
			{"reserved for the first waiting process", []string{"other"}, script.Next{}, script.Released},
			{"reserved for the first waiting process, the holder's requeued", []string{"other", "proc"},
				script.Next{Successor: "next", TTL: ttl, Waiter: "proc", QueueTTL: ttl}, script.Requeued},
			{"reserved for the holder's own process", []string{"other"},
				script.Next{Reserve: "proc", Cohort: true}, script.ReservedOwn},
		} {
			for _, counter := range []string{"none", "below", "above"} {
				t.Run(tc.name+", counter "+counter, func(t *testing.T) {
					require.NoError(t, rdb.FlushAll(ctx).Err())
					// The holder's fence, ahead of the clock, so that a successor's is one more than the larger of
					// it and the counter.
					held := serverMicros(t, rdb) + int64(time.Hour/time.Microsecond)
					var stored int64
					switch counter {
					case "below":
						stored = held - 1_000
					case "above":
						stored = held + 1_000
					}
					if stored != 0 {
						require.NoError(t, rdb.Set(ctx, n.Fence, stored, time.Hour).Err())
					}
					require.NoError(t, rdb.Set(ctx, n.Lock, "mine", ttl).Err())
					for i, id := range tc.queue {
						require.NoError(t, rdb.ZAdd(ctx, n.Queue, redis.Z{Score: float64(i + 1), Member: id}).Err())
					}

					// Held by another: refused before anything is written.
					next := tc.next
					next.Fence, next.HolderTTL = held, holderTTL
					out, _, err := script.ReleaseNext(ctx, rdb, n, "not mine", script.PublishPlain, next)
					require.NoError(t, err)
					require.Equal(t, script.NotHeld, out)
					assert.Equal(t, "mine", rdb.Get(ctx, n.Lock).Val())
					if stored == 0 {
						assert.Zero(t, rdb.Exists(ctx, n.Fence).Val(), "a refused release writes no counter")
					} else {
						assert.Equal(t, strconv.FormatInt(stored, 10), rdb.Get(ctx, n.Fence).Val())
						assert.Greater(t, rdb.PTTL(ctx, n.Fence).Val(), 59*time.Minute, "nor its ttl")
					}

					out, fence, err := script.ReleaseNext(ctx, rdb, n, "mine", script.PublishPlain, next)
					require.NoError(t, err)
					require.Equal(t, tc.want, out)
					if counter == "above" {
						assert.Equal(t, strconv.FormatInt(stored, 10), rdb.Get(ctx, n.Fence).Val(), "not lowered")
						assert.Greater(t, rdb.PTTL(ctx, n.Fence).Val(), 59*time.Minute, "nor written")
					} else {
						assert.Equal(t, strconv.FormatInt(held, 10), rdb.Get(ctx, n.Fence).Val(), "the holder's fence")
						ttlNear(script.CounterTTL(holderTTL), "for 2 × the holder's ttl")
					}
					if tc.want == script.HandedOver {
						assert.Equal(t, "next", rdb.Get(ctx, n.Lock).Val())
						assert.Equal(t, max(held, stored)+1, fence, "the successor's fence is above both")
					}
				})
			}
		}
	})
}

// TestReleaseWithoutAFenceLeavesTheCounterAlone: Release, and ReleaseNext with no Fence (a holder that does not know
// its fence, such as AcquireFast's after a refused TIME), leave the counter as it is: none stays none, and one
// that exists keeps its value and its ttl, whichever way the release goes on.
func TestReleaseWithoutAFenceLeavesTheCounterAlone(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		ttl := time.Minute
		for _, tc := range []struct {
			name  string
			queue []string
			next  script.Next
		}{
			{"Release", nil, script.Next{}},
			{"freed, the holder's process leaves the line", []string{"proc"}, script.Next{Waiter: "proc"}},
			{"handed over", nil, script.Next{Successor: "next", TTL: ttl}},
			{"reserved for the first waiting process", []string{"other"}, script.Next{}},
		} {
			for _, counter := range []int64{0, 1_000} {
				t.Run(fmt.Sprintf("%s, counter %d", tc.name, counter), func(t *testing.T) {
					require.NoError(t, rdb.FlushAll(ctx).Err())
					if counter != 0 {
						require.NoError(t, rdb.Set(ctx, n.Fence, counter, time.Hour).Err())
					}
					require.NoError(t, rdb.Set(ctx, n.Lock, "mine", ttl).Err())
					for i, id := range tc.queue {
						require.NoError(t, rdb.ZAdd(ctx, n.Queue, redis.Z{Score: float64(i + 1), Member: id}).Err())
					}
					var out script.Outcome
					var err error
					if tc.name == "Release" {
						var ok bool
						ok, err = script.Release(ctx, rdb, n, "mine", script.PublishPlain)
						if ok {
							out = script.Released
						}
					} else {
						out, _, err = script.ReleaseNext(ctx, rdb, n, "mine", script.PublishPlain, tc.next)
					}
					require.NoError(t, err)
					require.NotEqual(t, script.NotHeld, out)
					if counter == 0 {
						assert.Zero(t, rdb.Exists(ctx, n.Fence).Val(), "a release without a fence writes no counter")
						return
					}
					assert.Equal(t, "1000", rdb.Get(ctx, n.Fence).Val(), "the counter keeps its value")
					assert.Greater(t, rdb.PTTL(ctx, n.Fence).Val(), 59*time.Minute, "and its ttl")
				})
			}
		}
	})
}

func TestWrongType(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("listy")
		require.NoError(t, rdb.RPush(ctx, n.Lock, "x").Err())
		_, err := script.Acquire(ctx, rdb, n, "tok", time.Second)
		require.ErrorIs(t, err, keyward.ErrWrongType, "a list under the lock's name is an error, not a held lock")
		assert.Contains(t, err.Error(), "WRONGTYPE", "the Redis error is kept")
		_, err = script.Release(ctx, rdb, n, "tok", script.PublishPlain)
		assert.ErrorIs(t, err, keyward.ErrWrongType)
		_, err = script.Refresh(ctx, rdb, n, "tok", time.Second)
		assert.ErrorIs(t, err, keyward.ErrWrongType)
		_, _, err = script.PTTL(ctx, rdb, n, "tok")
		assert.ErrorIs(t, err, keyward.ErrWrongType)

		_, err = script.AcquireFast(ctx, rdb, n, "tok", time.Second)
		assert.ErrorIs(t, err, keyward.ErrWrongType)
		assert.Equal(t, "list", rdb.Type(ctx, n.Lock).Val())

		// A counter of another type, or one that holds no integer, is an error for every acquire, which writes
		// nothing, and for a release, which leaves the lock held. AcquireFast's SET has taken the lock before its
		// GET reads the counter: it answers OK with the error, so that its caller releases the lock (whose fence it
		// does not know).
		for _, tc := range []struct {
			name string
			set  func(key string) error
		}{
			{"hash", func(key string) error { return rdb.HSet(ctx, key, "f", "v").Err() }},
			{"text", func(key string) error { return rdb.Set(ctx, key, "not a number", 0).Err() }},
			{"fraction", func(key string) error { return rdb.Set(ctx, key, "1.5", 0).Err() }},
		} {
			m := keys.For(tc.name + "-fence")
			require.NoError(t, tc.set(m.Fence))
			counter := func() string {
				t.Helper()
				if typ := rdb.Type(ctx, m.Fence).Val(); typ != "string" {
					return typ + " " + fmt.Sprint(rdb.HGetAll(ctx, m.Fence).Val())
				}
				return "string " + rdb.Get(ctx, m.Fence).Val()
			}
			was := counter()
			keysOf := func() []string {
				t.Helper()
				k, err := rdb.Keys(ctx, "*"+tc.name+"*").Result()
				require.NoError(t, err)
				return k
			}

			_, err = script.Acquire(ctx, rdb, m, "tok", time.Second)
			require.ErrorIs(t, err, keyward.ErrWrongType, "%s: the counter is read", tc.name)
			_, err = script.AcquireQueued(ctx, rdb, m, "tok", time.Second, "proc", time.Minute)
			require.ErrorIs(t, err, keyward.ErrWrongType, tc.name)
			_, err = script.AcquireAbove(ctx, rdb, m, "tok", time.Second, 5, "", 0)
			require.ErrorIs(t, err, keyward.ErrWrongType, tc.name)
			assert.Equal(t, []string{m.Fence}, keysOf(), "%s: no lock is taken, nobody queued", tc.name)

			require.NoError(t, rdb.Set(ctx, m.Lock, "mine", time.Minute).Err())
			_, _, err = script.ReleaseNext(ctx, rdb, m, "mine", script.PublishPlain,
				script.Next{Fence: 5, HolderTTL: time.Second})
			require.ErrorIs(t, err, keyward.ErrWrongType, tc.name)
			_, _, err = script.ReleaseNext(ctx, rdb, m, "mine", script.PublishPlain,
				script.Next{Successor: "next", TTL: time.Second, Fence: 5, HolderTTL: time.Second})
			require.ErrorIs(t, err, keyward.ErrWrongType, tc.name)
			assert.Equal(t, "mine", rdb.Get(ctx, m.Lock).Val(), "%s: the lock is still held", tc.name)
			require.NoError(t, rdb.Del(ctx, m.Lock).Err())

			a, err := script.AcquireFast(ctx, rdb, m, "tok", time.Second)
			require.ErrorIs(t, err, keyward.ErrWrongType, tc.name)
			assert.True(t, a.OK, "%s: the SET took the lock: the caller must release it", tc.name)
			assert.Zero(t, a.Fence, tc.name)
			assert.Equal(t, "tok", rdb.Get(ctx, m.Lock).Val(), tc.name)
			assert.Equal(t, was, counter(), "%s: the counter is as it was", tc.name)
		}
	})
}

func TestServerRefusals(t *testing.T) {
	ctx := context.Background()
	n := keys.For("job")

	t.Run("READONLY replica", func(t *testing.T) {
		srv := redistest.StartN(t, 2)
		primary, replica := srv[0], srv[1].Client(t)
		require.NoError(t, replica.SlaveOf(ctx, "127.0.0.1", strconv.Itoa(primary.Port())).Err())
		_, err := script.Acquire(ctx, replica, n, "tok", time.Second)
		require.ErrorIs(t, err, keyward.ErrReadOnly)
		assert.Contains(t, err.Error(), "READONLY")
	})

	t.Run("NOPERM", func(t *testing.T) {
		srv := redistest.Start(t)
		admin := srv.Client(t)
		require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", "app", "on", ">secret", "~other:*", "+@all").Err())
		opt := srv.ClientOptions()
		opt.Username, opt.Password = "app", "secret"
		app := redis.NewClient(opt)
		defer app.Close()
		_, err := script.Acquire(ctx, app, n, "tok", time.Second)
		require.ErrorIs(t, err, keyward.ErrNoPermission)
		assert.Contains(t, err.Error(), "NOPERM")
	})

	t.Run("OOM", func(t *testing.T) {
		srv := redistest.Start(t, redistest.WithArgs("--maxmemory", "1", "--maxmemory-policy", "noeviction"))
		_, err := script.Acquire(ctx, srv.Client(t), n, "tok", time.Second)
		require.ErrorIs(t, err, keyward.ErrOutOfMemory)
		assert.Contains(t, err.Error(), "OOM")
	})
}

func TestClassifyLeavesOtherErrorsAlone(t *testing.T) {
	assert.NoError(t, script.Classify(nil))
	assert.Equal(t, context.Canceled, script.Classify(context.Canceled))
	assert.False(t, script.IsReply(context.DeadlineExceeded))
}

func TestQueueReservationAndHandOver(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		held, err := script.Acquire(ctx, rdb, n, "holder", time.Minute)
		require.NoError(t, err)
		require.True(t, held.OK)

		// Two processes wait, in order; a second try keeps the first place.
		for _, w := range []string{"proc-a", "proc-b", "proc-a"} {
			a, err := script.AcquireQueued(ctx, rdb, n, "v-"+w, time.Minute, w, time.Minute)
			require.NoError(t, err)
			assert.False(t, a.OK)
		}
		assert.Equal(t, []string{"proc-a", "proc-b"}, rdb.ZRange(ctx, n.Queue, 0, -1).Val())

		sub := rdb.Subscribe(ctx, n.Channel)
		defer sub.Close()
		_, err = sub.Receive(ctx)
		require.NoError(t, err)

		// The release reserves the lock for proc-a and tells it.
		// (A long window: the steps below must happen inside it even on a loaded machine.)
		out, _, err := script.ReleaseNext(ctx, rdb, n, "holder", script.PublishPlain, script.Next{Window: time.Minute})
		require.NoError(t, err)
		assert.Equal(t, script.Released, out)
		msg, err := sub.ReceiveMessage(ctx)
		require.NoError(t, err)
		assert.Equal(t, "r proc-a 60000", msg.Payload)
		assert.Equal(t, "reserved:proc-a", rdb.Get(ctx, n.Lock).Val())

		// Nobody else may take it meanwhile, not even a plain try.
		other, err := script.Acquire(ctx, rdb, n, "barger", time.Minute)
		require.NoError(t, err)
		assert.False(t, other.OK)
		b, err := script.AcquireQueued(ctx, rdb, n, "v-proc-b", time.Minute, "proc-b", time.Minute)
		require.NoError(t, err)
		assert.False(t, b.OK)

		a, err := script.AcquireQueued(ctx, rdb, n, "v-proc-a", time.Minute, "proc-a", time.Minute)
		require.NoError(t, err)
		require.True(t, a.OK, "proc-a claims its reservation")
		assert.Equal(t, []string{"proc-b"}, rdb.ZRange(ctx, n.Queue, 0, -1).Val())

		// proc-a hands the lock to one of its own waiters while it may (cohort)...
		out, fence, err := script.ReleaseNext(ctx, rdb, n, "v-proc-a", script.PublishPlain,
			script.Next{Successor: "v-proc-a-2", TTL: time.Minute, Fence: a.Fence, Cohort: true, Waiter: "proc-a"})
		require.NoError(t, err)
		assert.Equal(t, script.HandedOver, out)
		assert.Greater(t, fence, a.Fence)
		assert.Equal(t, "v-proc-a-2", rdb.Get(ctx, n.Lock).Val())

		// ...but once its turn is used up, proc-b gets the lock even though proc-a has a successor, and proc-a
		// joins the end of the line for it, with the queue's ttl renewed.
		require.NoError(t, rdb.ZAdd(ctx, n.Queue, redis.Z{Score: 1, Member: "proc-c"}).Err()) // first in line
		require.NoError(t, rdb.Persist(ctx, n.Queue).Err())
		out, _, err = script.ReleaseNext(ctx, rdb, n, "v-proc-a-2", script.PublishPlain,
			script.Next{Successor: "v-proc-a-3", TTL: time.Minute, Cohort: false, Waiter: "proc-a", QueueTTL: time.Hour})
		require.NoError(t, err)
		assert.Equal(t, script.Requeued, out)
		assert.Equal(t, "reserved:proc-c", rdb.Get(ctx, n.Lock).Val())
		assert.Equal(t, []string{"proc-b", "proc-a"}, rdb.ZRange(ctx, n.Queue, 0, -1).Val())
		assert.Greater(t, rdb.PTTL(ctx, n.Queue).Val(), 59*time.Minute)

		// Without a successor, a release that yields the turn does not queue its process.
		b, err = script.AcquireQueued(ctx, rdb, n, "v-proc-c", time.Minute, "proc-c", time.Minute)
		require.NoError(t, err)
		require.True(t, b.OK, "proc-c claims its reservation")
		out, _, err = script.ReleaseNext(ctx, rdb, n, "v-proc-c", script.PublishPlain, script.Next{Waiter: "proc-c"})
		require.NoError(t, err)
		assert.Equal(t, script.Released, out)
		assert.Equal(t, "reserved:proc-b", rdb.Get(ctx, n.Lock).Val())
		assert.Equal(t, []string{"proc-a"}, rdb.ZRange(ctx, n.Queue, 0, -1).Val())
	})
}

func TestYieldingProcessIsNotReservedForItself(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		held, err := script.AcquireQueued(ctx, rdb, n, "v-a", time.Minute, "proc-a", time.Minute)
		require.NoError(t, err)
		require.True(t, held.OK)
		require.NoError(t, rdb.ZAdd(ctx, n.Queue, redis.Z{Score: 1, Member: "proc-a"}).Err()) // a stale place
		out, _, err := script.ReleaseNext(ctx, rdb, n, "v-a", script.PublishPlain, script.Next{Waiter: "proc-a"})
		require.NoError(t, err)
		assert.Equal(t, script.Released, out)
		assert.Zero(t, rdb.Exists(ctx, n.Lock).Val(), "freed, not reserved for the releasing process")
	})
}

func TestAcquireResentAfterADroppedConnection(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		first, err := script.Acquire(ctx, rdb, n, "mine", time.Second)
		require.NoError(t, err)
		require.True(t, first.OK)
		// The same command again, as go-redis resends it when the connection dropped before the answer came.
		again, err := script.Acquire(ctx, rdb, n, "mine", time.Minute)
		require.NoError(t, err)
		assert.True(t, again.OK, "the lock holds our own value: we have it")
		assert.Greater(t, again.Fence, first.Fence)
		assert.InDelta(t, time.Minute, rdb.PTTL(ctx, n.Lock).Val(), float64(time.Second))
		other, err := script.Acquire(ctx, rdb, n, "theirs", time.Second)
		require.NoError(t, err)
		assert.False(t, other.OK)
	})
}

func TestReleaseReservesForTheHoldersOwnProcess(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		acquire := func(value string) {
			t.Helper()
			a, err := script.AcquireQueued(ctx, rdb, n, value, time.Minute, "proc-a", time.Minute)
			require.NoError(t, err)
			require.True(t, a.OK, value)
		}
		sub := rdb.Subscribe(ctx, n.Channel)
		defer sub.Close()
		_, err := sub.Receive(ctx) // confirmed
		require.NoError(t, err)

		// Nobody else waits: the lock is freed, not reserved.
		acquire("v-a-1")
		own := script.Next{Reserve: "proc-a", Cohort: true}
		out, _, err := script.ReleaseNext(ctx, rdb, n, "v-a-1", script.PublishPlain, own)
		require.NoError(t, err)
		assert.Equal(t, script.Released, out)
		assert.Zero(t, rdb.Exists(ctx, n.Lock).Val())
		msg, err := sub.ReceiveMessage(ctx)
		require.NoError(t, err)
		assert.Empty(t, msg.Payload)

		// Another process waits: within the cohort the lock is reserved for the holder's own process.
		acquire("v-a-2")
		require.NoError(t, rdb.ZAdd(ctx, n.Queue, redis.Z{Score: 1, Member: "proc-b"}).Err())
		out, _, err = script.ReleaseNext(ctx, rdb, n, "v-a-2", script.PublishPlain, own)
		require.NoError(t, err)
		assert.Equal(t, script.ReservedOwn, out)
		assert.Equal(t, "reserved:proc-a", rdb.Get(ctx, n.Lock).Val())
		msg, err = sub.ReceiveMessage(ctx)
		require.NoError(t, err)
		id, window, ok := script.ParseReservation(msg.Payload)
		assert.True(t, ok)
		assert.Equal(t, "proc-a", id)
		assert.Equal(t, script.DefaultClaimWindow, window)

		// Its waiter claims the reservation; once the cohort is used up, the turn goes to the first in line.
		acquire("v-a-3")
		own.Cohort = false
		out, _, err = script.ReleaseNext(ctx, rdb, n, "v-a-3", script.PublishPlain, own)
		require.NoError(t, err)
		assert.Equal(t, script.Released, out)
		assert.Equal(t, "reserved:proc-b", rdb.Get(ctx, n.Lock).Val())
	})
}
