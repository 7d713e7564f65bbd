package script_test

import (
	"context"
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

func TestGiveBack(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		held, err := script.Acquire(ctx, rdb, n, "holder", time.Minute)
		require.NoError(t, err)
		require.True(t, held.OK)
		for _, w := range []string{"proc-a", "proc-b", "proc-c"} {
			_, err := script.AcquireQueued(ctx, rdb, n, "v-"+w, time.Minute, w, time.Minute)
			require.NoError(t, err)
		}
		sub := rdb.Subscribe(ctx, n.Channel)
		defer sub.Close()
		_, err = sub.Receive(ctx)
		require.NoError(t, err)

		// A process with nothing reserved only leaves the queue; the holder's lock is left alone.
		gave, err := script.GiveBack(ctx, rdb, n, "proc-c", script.PublishPlain, time.Minute)
		require.NoError(t, err)
		assert.False(t, gave)
		assert.Equal(t, []string{"proc-a", "proc-b"}, rdb.ZRange(ctx, n.Queue, 0, -1).Val())
		assert.Equal(t, "holder", rdb.Get(ctx, n.Lock).Val())

		// The release reserves the lock for proc-a, which gives it back: it goes to proc-b, which is told.
		_, _, err = script.ReleaseNext(ctx, rdb, n, "holder", script.PublishPlain, script.Next{Window: time.Minute})
		require.NoError(t, err)
		msg, err := sub.ReceiveMessage(ctx)
		require.NoError(t, err)
		require.Equal(t, "r proc-a 60000", msg.Payload)
		gave, err = script.GiveBack(ctx, rdb, n, "proc-a", script.PublishPlain, time.Minute)
		require.NoError(t, err)
		assert.True(t, gave)
		msg, err = sub.ReceiveMessage(ctx)
		require.NoError(t, err)
		assert.Equal(t, "r proc-b 60000", msg.Payload)
		assert.Equal(t, "reserved:proc-b", rdb.Get(ctx, n.Lock).Val())
		assert.Empty(t, rdb.ZRange(ctx, n.Queue, 0, -1).Val())

		// The last in line gives it back: the lock is freed, and everyone is told.
		gave, err = script.GiveBack(ctx, rdb, n, "proc-b", script.PublishPlain, time.Minute)
		require.NoError(t, err)
		assert.True(t, gave)
		msg, err = sub.ReceiveMessage(ctx)
		require.NoError(t, err)
		assert.Equal(t, "", msg.Payload)
		assert.Zero(t, rdb.Exists(ctx, n.Lock).Val())
	})
}

func TestGiveBackWrongType(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		require.NoError(t, rdb.LPush(ctx, n.Lock, "x").Err())
		require.NoError(t, rdb.ZAdd(ctx, n.Queue, redis.Z{Score: 1, Member: "proc-a"}).Err())
		_, err := script.GiveBack(ctx, rdb, n, "proc-a", script.PublishPlain, time.Minute)
		assert.ErrorIs(t, err, keyward.ErrWrongType)
		assert.Equal(t, int64(1), rdb.ZCard(ctx, n.Queue).Val(), "nothing was written")
	})
}
