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
		assert.InDelta(t, script.FenceTTL, rdb.PTTL(ctx, n.Fence).Val(), float64(time.Minute), "it expires like after an acquire")

		got, err = script.Raise(ctx, rdb, n, 500, time.Second)
		require.NoError(t, err)
		assert.Equal(t, int64(1_000), got, "a counter above the fence is left alone")
		assert.Equal(t, int64(1_000), counter())

		// Fences are microsecond timestamps, beyond 32 bits and exact in Lua's doubles.
		big := time.Now().UnixMicro() + 1_000_000_007
		got, err = script.Raise(ctx, rdb, n, big, 48*time.Hour)
		require.NoError(t, err)
		assert.Equal(t, big, got)
		assert.Equal(t, big, counter())
		assert.InDelta(t, 96*time.Hour, rdb.PTTL(ctx, n.Fence).Val(), float64(time.Minute), "2 × ttl when longer")

		a, err := script.Acquire(ctx, rdb, n, "holder", time.Second)
		require.NoError(t, err)
		require.True(t, a.OK)
		assert.Equal(t, big+1, a.Fence, "the next acquire hands out more than the raised counter")
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
		assert.Greater(t, rdb.PTTL(ctx, n.Fence).Val(), time.Hour, "the counter keeps its ttl")
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
