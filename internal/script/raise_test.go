package script_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/script"
)

func TestRaise(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		counter := func() int64 {
			v, err := rdb.Get(ctx, n.Fence).Int64()
			require.NoError(t, err, "the counter is stored as an integer")
			return v
		}

		got, err := script.Raise(ctx, rdb, n, 1_000, time.Second)
		require.NoError(t, err)
		assert.Equal(t, int64(1_000), got, "an absent counter is raised")
		assert.Equal(t, int64(1_000), counter())
		assert.InDelta(t, script.CounterTTL(time.Second), rdb.PTTL(ctx, n.Fence).Val(), float64(500*time.Millisecond),
			"it lives CounterTTL, as after an acquire")

		require.NoError(t, rdb.PExpire(ctx, n.Fence, time.Hour).Err())
		got, err = script.Raise(ctx, rdb, n, 500, time.Second)
		require.NoError(t, err)
		assert.Equal(t, int64(1_000), got, "a counter above the fence is left alone")
		assert.Equal(t, int64(1_000), counter())
		assert.InDelta(t, time.Hour, rdb.PTTL(ctx, n.Fence).Val(), float64(time.Minute), "not written: its ttl stays")

		// Fences are microsecond timestamps, beyond 32 bits and exact in Lua's doubles.
		big := time.Now().UnixMicro() + 1_000_000_007
		got, err = script.Raise(ctx, rdb, n, big, time.Minute)
		require.NoError(t, err)
		assert.Equal(t, big, got)
		assert.Equal(t, big, counter())
		assert.InDelta(t, script.CounterTTL(time.Minute), rdb.PTTL(ctx, n.Fence).Val(), float64(500*time.Millisecond),
			"a raise sets the ttl again: 2 × ttl")

		a, err := script.AcquireAbove(ctx, rdb, n, "holder", time.Second, 5, "", 0)
		require.NoError(t, err)
		require.True(t, a.OK)
		assert.Equal(t, big+1, a.Fence, "a quorum node's next acquire hands out more than the raised counter")
		assert.Equal(t, big+1, counter())
		assert.InDelta(t, script.CounterTTL(time.Second), rdb.PTTL(ctx, n.Fence).Val(), float64(500*time.Millisecond),
			"the acquire sets the counter's ttl again, for its own ttl")
	})
}

func TestRaiseWrongType(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("hashy")
		require.NoError(t, rdb.HSet(ctx, n.Fence, "f", "v").Err())
		_, err := script.Raise(ctx, rdb, n, 1_000, time.Second)
		require.ErrorIs(t, err, keyward.ErrWrongType)
		assert.Contains(t, err.Error(), "WRONGTYPE")
		assert.Equal(t, "hash", rdb.Type(ctx, n.Fence).Val(), "nothing was written")

		_, err = script.AcquireAbove(ctx, rdb, n, "tok", time.Second, 1_000, "", 0)
		require.ErrorIs(t, err, keyward.ErrWrongType)
		assert.Zero(t, rdb.Exists(ctx, n.Lock).Val())
	})
}

func TestAcquireAbove(t *testing.T) {
	ctx := context.Background()
	// Two independent servers whose clocks are below the floor hand out the same fence.
	servers := redistest.StartN(t, 2)
	floor := time.Now().Add(time.Hour).UnixMicro()
	for i, srv := range servers {
		rdb := srv.Client(t)
		a, err := script.AcquireAbove(ctx, rdb, keys.For("job"), "holder", time.Second, floor, "", 0)
		require.NoError(t, err)
		require.True(t, a.OK)
		assert.Equal(t, floor+1, a.Fence, "server %d", i)
	}

	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		n := keys.For("job")
		floor := time.Now().Add(time.Hour).UnixMicro()
		a, err := script.AcquireAbove(ctx, rdb, n, "holder", time.Second, floor, "", 0)
		require.NoError(t, err)
		require.True(t, a.OK)
		assert.Equal(t, floor+1, a.Fence)

		taken, err := script.AcquireAbove(ctx, rdb, n, "other", time.Second, floor+1_000, "", 0)
		require.NoError(t, err)
		assert.False(t, taken.OK)
		assert.Positive(t, taken.PTTL)
		assert.Equal(t, strconv.FormatInt(floor+1, 10), rdb.Get(ctx, n.Fence).Val(),
			"a try that finds the lock taken leaves the counter alone")

		ok, err := script.Release(ctx, rdb, n, "holder", script.PublishPlain)
		require.NoError(t, err)
		require.True(t, ok)
		low, err := script.AcquireAbove(ctx, rdb, n, "next", time.Second, 5, "", 0)
		require.NoError(t, err)
		require.True(t, low.OK)
		assert.Equal(t, floor+2, low.Fence, "a floor below the counter changes nothing")
		assert.InDelta(t, script.CounterTTL(time.Second), rdb.PTTL(ctx, n.Fence).Val(), float64(500*time.Millisecond),
			"the counter lives CounterTTL from its last write")
	})
}

func TestAcquireAboveAfterScriptFlush(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		floor := time.Now().Add(time.Hour).UnixMicro()
		acquire := func(value string, floor int64) script.Acquired {
			t.Helper()
			a, err := script.AcquireAbove(ctx, rdb, n, value, time.Second, floor, "", 0)
			require.NoError(t, err)
			require.True(t, a.OK)
			ok, err := script.Release(ctx, rdb, n, value, script.PublishPlain)
			require.NoError(t, err)
			require.True(t, ok)
			return a
		}

		// The script is not cached: it goes again as EVAL, and the floor still holds.
		require.NoError(t, rdb.ScriptFlush(ctx).Err())
		assert.Equal(t, floor+1, acquire("first", floor).Fence)
		assert.Equal(t, floor+11, acquire("second", floor+10).Fence)
		require.NoError(t, rdb.ScriptFlush(ctx).Err())
		assert.Equal(t, floor+12, acquire("third", 5).Fence, "a floor below the counter changes nothing")
	})
}

// TestAcquireAboveCounterRule: a quorum node's fence is max(counter + 1, the server's clock in µs, floor + 1), the
// counter is set to it, and lives CounterTTL of the lock's ttl from then on.
func TestAcquireAboveCounterRule(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		ttl := 5 * time.Second
		hour := int64(time.Hour / time.Microsecond)
		const none = -1
		for _, tc := range []struct {
			name string
			// counter and floor, relative to the server's clock in µs (none: no counter); a negative floor is 5.
			counter, floor int64
			want           string // "clock", "counter" or "floor"
		}{
			{"no counter, low floor", none, -hour, "clock"},
			{"stale counter, low floor", -hour, -hour, "clock"},
			{"counter ahead of the clock", hour, -hour, "counter"},
			{"floor ahead of the clock, no counter", none, hour, "floor"},
			{"floor ahead of the counter ahead of the clock", hour, 2 * hour, "floor"},
			{"counter ahead of the floor ahead of the clock", 2 * hour, hour, "counter"},
			{"counter equal to the floor", hour, hour, "counter"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				require.NoError(t, rdb.FlushAll(ctx).Err())
				now := serverMicros(t, rdb)
				counter, floor := now+tc.counter, now+tc.floor
				if tc.floor < 0 {
					floor = 5
				}
				if tc.counter != none {
					require.NoError(t, rdb.Set(ctx, n.Fence, counter, time.Hour).Err())
				}
				before := serverMicros(t, rdb)
				a, err := script.AcquireAbove(ctx, rdb, n, "holder", ttl, floor, "", 0)
				require.NoError(t, err)
				require.True(t, a.OK)
				after := serverMicros(t, rdb)
				switch tc.want {
				case "clock":
					assert.GreaterOrEqual(t, a.Fence, before)
					assert.LessOrEqual(t, a.Fence, after)
				case "counter":
					assert.Equal(t, counter+1, a.Fence)
				case "floor":
					assert.Equal(t, floor+1, a.Fence)
				}
				assert.Greater(t, a.Fence, floor)
				if tc.counter != none {
					assert.Greater(t, a.Fence, counter)
				}
				assert.Equal(t, strconv.FormatInt(a.Fence, 10), rdb.Get(ctx, n.Fence).Val(), "the counter is set to it")
				assert.InDelta(t, script.CounterTTL(ttl), rdb.PTTL(ctx, n.Fence).Val(), float64(500*time.Millisecond),
					"the counter lives CounterTTL(ttl) from this write")
				assert.ElementsMatch(t, []string{n.Lock, n.Fence}, rdb.Keys(ctx, "*").Val(), "the lock and its counter")
			})
		}
	})
}
