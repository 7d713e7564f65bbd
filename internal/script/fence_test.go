package script_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/script"
)

// TestFenceAboveAStaleCounter covers a failover to a replica that had not received the last writes: its counter is
// below the last fence handed out (in the report: …137410 after …137412). Every way a fence is handed out from a
// counter must still give more than the last one, and at least the server's clock. The lagging replica is simulated
// by writing the counter back to a lower value. A lock on one server writes its counter when it is released (with
// the holder's fence), a quorum lock's node and a semaphore when they hand out a fence.
func TestFenceAboveAStaleCounter(t *testing.T) {
	ctx := context.Background()
	ttl := time.Minute
	n := keys.For("job")
	k := script.SemaphoreKeysFor("pool")
	// Each hands out one fence on a free lock or semaphore and frees it again.
	ways := []struct {
		name  string
		fence string // the counter it advances
		take  func(t *testing.T, rdb *redis.Client) int64
	}{
		{"acquire and release", n.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			a, err := script.Acquire(ctx, rdb, n, "holder", ttl)
			require.NoError(t, err)
			require.True(t, a.OK)
			releaseWithFence(t, rdb, n, "holder", a.Fence, ttl)
			return a.Fence
		}},
		{"acquire of a waiting process and release", n.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			a, err := script.AcquireQueued(ctx, rdb, n, "holder", ttl, "proc", ttl)
			require.NoError(t, err)
			require.True(t, a.OK)
			releaseWithFence(t, rdb, n, "holder", a.Fence, ttl)
			return a.Fence
		}},
		{"acquire without a script and release", n.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			a, err := script.AcquireFast(ctx, rdb, n, "holder", ttl)
			require.NoError(t, err)
			require.True(t, a.OK)
			releaseWithFence(t, rdb, n, "holder", a.Fence, ttl)
			return a.Fence
		}},
		{"acquire above a floor below the counter", n.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			a, err := script.AcquireAbove(ctx, rdb, n, "holder", ttl, 5, "", 0)
			require.NoError(t, err)
			require.True(t, a.OK)
			require.NoError(t, rdb.Del(ctx, n.Lock).Err())
			return a.Fence
		}},
		{"acquire above a floor, of a waiting process", n.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			a, err := script.AcquireAbove(ctx, rdb, n, "holder", ttl, 5, "proc", ttl)
			require.NoError(t, err)
			require.True(t, a.OK)
			require.NoError(t, rdb.Del(ctx, n.Lock).Err())
			return a.Fence
		}},
		{"semaphore acquire", k.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			st, err := script.SemaphoreAcquire(ctx, rdb, k, script.SemaphoreTry{Value: "holder", TTL: ttl, Limit: 1,
				Fencing: true, Publish: script.PublishPlain})
			require.NoError(t, err)
			require.True(t, st.OK)
			require.NoError(t, rdb.Del(ctx, k.Holders).Err())
			return st.Fence
		}},
		{"semaphore hand-over", k.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			expiry := serverMicros(t, rdb)/1000 + ttl.Milliseconds()
			require.NoError(t, rdb.ZAdd(ctx, k.Holders, redis.Z{Score: float64(expiry), Member: "holder"}).Err())
			res, err := script.SemaphoreRelease(ctx, rdb, k, script.SemaphoreGiveBack{Value: "holder", Limit: 1,
				Window: time.Second, Successor: "successor", TTL: ttl, Cohort: true, Fencing: true,
				Publish: script.PublishPlain})
			require.NoError(t, err)
			require.Equal(t, script.HandedOver, res.Outcome)
			require.NoError(t, rdb.Del(ctx, k.Holders).Err())
			return res.Fence
		}},
	}
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		for _, w := range ways {
			t.Run(w.name, func(t *testing.T) {
				require.NoError(t, rdb.Del(ctx, w.fence).Err())
				last := w.take(t, rdb)
				// The new primary's counter: two acquisitions behind, with the ttl it had.
				require.NoError(t, rdb.Set(ctx, w.fence, last-2, redis.KeepTTL).Err())

				before := serverMicros(t, rdb)
				next := w.take(t, rdb)
				assert.Greater(t, next, last, "the fence does not go backwards")
				assert.GreaterOrEqual(t, next, before, "the fence is at least the server's clock in µs")
				stored, err := rdb.Get(ctx, w.fence).Int64()
				require.NoError(t, err)
				assert.Equal(t, next, stored, "the counter remembers it")
				assert.InDelta(t, script.CounterTTL(ttl), rdb.PTTL(ctx, w.fence).Val(), float64(500*time.Millisecond),
					"the counter lives CounterTTL from this write")
			})
		}
	})
}

// releaseWithFence releases the lock held by value, whose fence is fence, as lock.Client does.
func releaseWithFence(t *testing.T, rdb *redis.Client, n keys.Names, value string, fence int64, ttl time.Duration) {
	t.Helper()
	out, _, err := script.ReleaseNext(context.Background(), rdb, n, value, script.PublishPlain,
		script.Next{Fence: fence, HolderTTL: ttl})
	require.NoError(t, err)
	require.Equal(t, script.Released, out)
}

// TestFenceOfALockOnOneServer: a lock on one server only reads its counter. Every way it is taken hands out
// max(counter + 1, the server's clock): the clock without a counter or with one behind it, and exactly one more
// than a counter ahead of the clock (set by hand: a quorum lock's fence on a node also used alone, or a clock
// that stepped back). The acquire writes nothing but the lock: the counter keeps its value and its ttl.
func TestFenceOfALockOnOneServer(t *testing.T) {
	ctx := context.Background()
	ttl := time.Minute
	n := keys.For("job")
	hour := int64(time.Hour / time.Microsecond)
	ways := []struct {
		name string
		take func(rdb *redis.Client) (script.Acquired, error)
	}{
		{"acquire", func(rdb *redis.Client) (script.Acquired, error) {
			return script.Acquire(ctx, rdb, n, "holder", ttl)
		}},
		{"acquire of a waiting process", func(rdb *redis.Client) (script.Acquired, error) {
			return script.AcquireQueued(ctx, rdb, n, "holder", ttl, "proc", ttl)
		}},
		{"acquire without a script", func(rdb *redis.Client) (script.Acquired, error) {
			return script.AcquireFast(ctx, rdb, n, "holder", ttl)
		}},
	}
	const none = 0
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		for _, w := range ways {
			for _, c := range []struct {
				name    string
				counter int64 // relative to the server's clock in µs
			}{{"no counter", none}, {"a counter behind the clock", -hour}, {"a counter ahead of the clock", hour}} {
				t.Run(w.name+", "+c.name, func(t *testing.T) {
					require.NoError(t, rdb.FlushAll(ctx).Err())
					counter := serverMicros(t, rdb) + c.counter
					if c.counter != none {
						require.NoError(t, rdb.Set(ctx, n.Fence, counter, time.Hour).Err())
					}
					before := serverMicros(t, rdb)
					a, err := w.take(rdb)
					require.NoError(t, err)
					require.True(t, a.OK)
					after := serverMicros(t, rdb)
					if c.counter > 0 {
						assert.Equal(t, counter+1, a.Fence, "one more than the counter ahead of the clock")
					} else {
						assert.GreaterOrEqual(t, a.Fence, before, "at least the server's clock in µs")
						assert.LessOrEqual(t, a.Fence, after, "and no more than the clock")
					}
					if c.counter == none {
						assert.Equal(t, []string{n.Lock}, rdb.Keys(ctx, "*").Val(), "the acquire writes nothing but the lock")
						return
					}
					assert.ElementsMatch(t, []string{n.Lock, n.Fence}, rdb.Keys(ctx, "*").Val())
					assert.Equal(t, strconv.FormatInt(counter, 10), rdb.Get(ctx, n.Fence).Val(), "the counter is only read")
					assert.Greater(t, rdb.PTTL(ctx, n.Fence).Val(), 59*time.Minute, "and keeps its ttl")
				})
			}
		}
	})
}

// TestHandOverAboveTheHoldersFence: the successor that takes the lock over inside a release gets more than the
// holder's fence and the counter, even when they are ahead of the server's clock (given by a quorum's floor, or by
// a clock that stepped back), and at least the clock otherwise. The counter is set to the holder's fence, for
// CounterTTL(HolderTTL), unless it is above it: then it is left as it is.
func TestHandOverAboveTheHoldersFence(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		ttl := time.Minute
		holderTTL := 10 * time.Second
		handOver := func(holder, successor string, fence int64) int64 {
			t.Helper()
			out, next, err := script.ReleaseNext(ctx, rdb, n, holder, script.PublishPlain,
				script.Next{Successor: successor, TTL: ttl, Fence: fence, HolderTTL: holderTTL, Cohort: true})
			require.NoError(t, err)
			require.Equal(t, script.HandedOver, out)
			assert.Equal(t, successor, rdb.Get(ctx, n.Lock).Val())
			assert.InDelta(t, ttl, rdb.PTTL(ctx, n.Lock).Val(), float64(time.Second), "for the successor's ttl")
			return next
		}
		remembers := func(fence int64, ttl time.Duration, why string) {
			t.Helper()
			assert.Equal(t, strconv.FormatInt(fence, 10), rdb.Get(ctx, n.Fence).Val(), why)
			assert.InDelta(t, ttl, rdb.PTTL(ctx, n.Fence).Val(), float64(time.Second), why)
		}
		a, err := script.Acquire(ctx, rdb, n, "a", ttl)
		require.NoError(t, err)
		require.True(t, a.OK)

		before := serverMicros(t, rdb)
		b := handOver("a", "b", a.Fence)
		assert.Greater(t, b, a.Fence)
		assert.GreaterOrEqual(t, b, before, "at least the clock")
		remembers(a.Fence, script.CounterTTL(holderTTL), "the counter holds the holder's fence")

		ahead := serverMicros(t, rdb) + int64(time.Hour/time.Microsecond)
		assert.Equal(t, ahead+1, handOver("b", "c", ahead), "a holder's fence ahead of the clock: one more")
		remembers(ahead, script.CounterTTL(holderTTL), "the counter holds the holder's fence")

		// A counter above the holder's fence: the successor's is one more than the counter, which stays.
		above := ahead + 1_000
		require.NoError(t, rdb.Set(ctx, n.Fence, above, time.Hour).Err())
		assert.Equal(t, above+1, handOver("c", "d", ahead+1), "a counter above the holder's fence: one more than it")
		remembers(above, time.Hour, "the counter is neither lowered nor written")
		assert.ElementsMatch(t, []string{n.Lock, n.Fence}, rdb.Keys(ctx, "*").Val(), "the lock and its counter")
	})
}

// TestCounterLivesCounterTTLFromItsLastWrite: every write of a fencing counter (a release with the holder's fence,
// a quorum node's acquire, a raise that raises, a semaphore's acquire and hand-over with fencing) sets its ttl to
// CounterTTL of the lock's ttl, whether the counter lived longer or shorter before.
func TestCounterLivesCounterTTLFromItsLastWrite(t *testing.T) {
	ctx := context.Background()
	ttl := 10 * time.Second
	n := keys.For("job")
	k := script.SemaphoreKeysFor("pool")
	ways := []struct {
		name    string
		counter string
		write   func(t *testing.T, rdb *redis.Client) int64
	}{
		{"release", n.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			require.NoError(t, rdb.Set(ctx, n.Lock, "holder", ttl).Err())
			fence := serverMicros(t, rdb) + int64(time.Hour/time.Microsecond)
			releaseWithFence(t, rdb, n, "holder", fence, ttl)
			return fence
		}},
		{"acquire above a floor", n.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			a, err := script.AcquireAbove(ctx, rdb, n, "holder", ttl, 5, "", 0)
			require.NoError(t, err)
			require.True(t, a.OK)
			require.NoError(t, rdb.Del(ctx, n.Lock).Err())
			return a.Fence
		}},
		{"raise", n.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			fence := serverMicros(t, rdb) + int64(time.Hour/time.Microsecond)
			got, err := script.Raise(ctx, rdb, n, fence, ttl)
			require.NoError(t, err)
			require.Equal(t, fence, got)
			return got
		}},
		{"semaphore acquire", k.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			st, err := script.SemaphoreAcquire(ctx, rdb, k, script.SemaphoreTry{Value: "holder", TTL: ttl, Limit: 1,
				Fencing: true, Publish: script.PublishPlain})
			require.NoError(t, err)
			require.True(t, st.OK)
			require.NoError(t, rdb.Del(ctx, k.Holders).Err())
			return st.Fence
		}},
		{"semaphore hand-over", k.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			expiry := serverMicros(t, rdb)/1000 + time.Minute.Milliseconds()
			require.NoError(t, rdb.ZAdd(ctx, k.Holders, redis.Z{Score: float64(expiry), Member: "holder"}).Err())
			res, err := script.SemaphoreRelease(ctx, rdb, k, script.SemaphoreGiveBack{Value: "holder", Limit: 1,
				Window: time.Second, Successor: "successor", TTL: ttl, Cohort: true, Fencing: true,
				Publish: script.PublishPlain})
			require.NoError(t, err)
			require.Equal(t, script.HandedOver, res.Outcome)
			require.NoError(t, rdb.Del(ctx, k.Holders).Err())
			return res.Fence
		}},
	}
	require.Equal(t, 20*time.Second, script.CounterTTL(ttl), "2 × ttl")
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		for _, w := range ways {
			t.Run(w.name, func(t *testing.T) {
				check := func(why string) {
					t.Helper()
					fence := w.write(t, rdb)
					stored, err := rdb.Get(ctx, w.counter).Int64()
					require.NoError(t, err, "the counter is stored as an integer, not in float notation")
					assert.Equal(t, fence, stored, why)
					assert.InDelta(t, script.CounterTTL(ttl), rdb.PTTL(ctx, w.counter).Val(),
						float64(500*time.Millisecond), why)
				}
				require.NoError(t, rdb.FlushAll(ctx).Err())
				check("a new counter")
				require.NoError(t, rdb.PExpire(ctx, w.counter, time.Hour).Err())
				check("a counter that would have lived longer")
				require.NoError(t, rdb.PExpire(ctx, w.counter, 2*time.Second).Err())
				check("a counter about to expire")
			})
		}
	})
}
