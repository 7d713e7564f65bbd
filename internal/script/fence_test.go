package script_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/script"
)

// TestFenceAboveAStaleCounter covers a failover to a replica that had not received the last acquisitions: its
// counter is below the last fence handed out (in the report: …137410 after …137412). Every way a fence is handed
// out must still give more than the last one, and at least the server's clock. The lagging replica is simulated by
// writing the counter back to a lower value.
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
		{"acquire", n.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			a, err := script.Acquire(ctx, rdb, n, "holder", ttl)
			require.NoError(t, err)
			require.True(t, a.OK)
			require.NoError(t, rdb.Del(ctx, n.Lock).Err())
			return a.Fence
		}},
		{"acquire of a waiting process", n.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			a, err := script.AcquireQueued(ctx, rdb, n, "holder", ttl, "proc", ttl)
			require.NoError(t, err)
			require.True(t, a.OK)
			require.NoError(t, rdb.Del(ctx, n.Lock).Err())
			return a.Fence
		}},
		{"acquire above a floor below the counter", n.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			a, err := script.AcquireAbove(ctx, rdb, n, "holder", ttl, 5, "", 0)
			require.NoError(t, err)
			require.True(t, a.OK)
			require.NoError(t, rdb.Del(ctx, n.Lock).Err())
			return a.Fence
		}},
		{"hand-over in a release", n.Fence, func(t *testing.T, rdb *redis.Client) int64 {
			require.NoError(t, rdb.Set(ctx, n.Lock, "holder", ttl).Err())
			out, fence, err := script.ReleaseNext(ctx, rdb, n, "holder", script.PublishPlain,
				script.Next{Successor: "successor", TTL: ttl, Cohort: true})
			require.NoError(t, err)
			require.Equal(t, script.HandedOver, out)
			require.NoError(t, rdb.Del(ctx, n.Lock).Err())
			return fence
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
				assert.Positive(t, rdb.PTTL(ctx, w.fence).Val(), "the counter still expires")
			})
		}
	})
}

// TestFenceCounterKeepsItsTTL: a counter lives FenceTTL from when it was started, as before fences looked at the
// clock on every acquisition (memory stays as it was).
func TestFenceCounterKeepsItsTTL(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		require.NoError(t, rdb.Set(ctx, n.Fence, 5, time.Hour).Err())
		a, err := script.Acquire(ctx, rdb, n, "holder", time.Second)
		require.NoError(t, err)
		require.True(t, a.OK)
		assert.InDelta(t, time.Hour, rdb.PTTL(ctx, n.Fence).Val(), float64(time.Minute), "an existing counter keeps its ttl")
	})
}
