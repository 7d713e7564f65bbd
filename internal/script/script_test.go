package script_test

import (
	"context"
	"strconv"
	"testing"
	"time"

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
		assert.Equal(t, "token-a", rdb.Get(ctx, "job").Val())
		stored, err := rdb.Get(ctx, n.Fence).Int64()
		require.NoError(t, err, "the counter is stored as an integer, not in float notation")
		assert.Equal(t, a.Fence, stored)
		assert.InDelta(t, script.FenceTTL, rdb.PTTL(ctx, n.Fence).Val(), float64(time.Minute), "the counter expires")

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

func TestFenceNeverGoesBackwards(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("counter")
		var last int64
		acquire := func(why string) {
			value := "holder-" + strconv.FormatInt(last, 10)
			a, err := script.Acquire(ctx, rdb, n, value, time.Second)
			require.NoError(t, err)
			require.True(t, a.OK)
			assert.Greater(t, a.Fence, last, why)
			last = a.Fence
			ok, err := script.Release(ctx, rdb, n, value, script.PublishPlain)
			require.NoError(t, err)
			require.True(t, ok)
		}
		for i := range 5 {
			acquire("holder " + strconv.Itoa(i))
		}
		require.NoError(t, rdb.ScriptFlush(ctx).Err())
		acquire("after SCRIPT FLUSH (EVALSHA answers NOSCRIPT, EVAL reloads)")
		require.NoError(t, rdb.Del(ctx, n.Fence).Err())
		acquire("after the counter was lost")
		// A counter ahead of the clock (many acquisitions within a microsecond, or a clock that stepped back)
		// still advances by one.
		require.NoError(t, rdb.Set(ctx, n.Fence, last+1_000_000_000, 0).Err())
		acquire("counter ahead of the clock")
		assert.Equal(t, strconv.FormatInt(last, 10), rdb.Get(ctx, n.Fence).Val())
	})
}

func TestFenceSurvivesRestartWithoutPersistence(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	n := keys.For("report")
	first, err := script.Acquire(ctx, rdb, n, "before", time.Second)
	require.NoError(t, err)
	require.True(t, first.OK)

	srv.Restart(t) // empty: no RDB, no AOF
	require.Zero(t, rdb.Exists(ctx, n.Fence).Val(), "the restarted server forgot the counter")

	second, err := script.Acquire(ctx, rdb, n, "after", time.Second)
	require.NoError(t, err)
	require.True(t, second.OK)
	assert.Greater(t, second.Fence, first.Fence)
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

		m := keys.For("hashy-fence")
		require.NoError(t, rdb.HSet(ctx, m.Fence, "f", "v").Err())
		_, err = script.Acquire(ctx, rdb, m, "tok", time.Second)
		require.ErrorIs(t, err, keyward.ErrWrongType)
		assert.Zero(t, rdb.Exists(ctx, m.Lock).Val(), "no lock is left behind when the counter has the wrong type")

		o := keys.For("text-fence")
		require.NoError(t, rdb.Set(ctx, o.Fence, "not a number", 0).Err())
		_, err = script.Acquire(ctx, rdb, o, "tok", time.Second)
		require.Error(t, err, "a counter that is not an integer is an error, not a fence")
		assert.Zero(t, rdb.Exists(ctx, o.Lock).Val())
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
			script.Next{Successor: "v-proc-a-2", TTL: time.Minute, Cohort: true, Waiter: "proc-a"})
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
