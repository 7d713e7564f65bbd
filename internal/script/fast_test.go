package script_test

import (
	"context"
	"errors"
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

// TestAcquireFast covers the answers of SET NX PX GET + TIME + GET counter on both servers.
func TestAcquireFast(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		ttl := 10 * time.Second

		t.Run("free", func(t *testing.T) {
			require.NoError(t, rdb.FlushAll(ctx).Err())
			before := serverMicros(t, rdb)
			a, err := script.AcquireFast(ctx, rdb, n, "mine", ttl)
			require.NoError(t, err)
			require.True(t, a.OK)
			after := serverMicros(t, rdb)
			assert.GreaterOrEqual(t, a.Fence, before, "the fence is at least the server's clock before the call")
			assert.LessOrEqual(t, a.Fence, after, "the fence is the server's clock during the call")
			assert.Equal(t, "mine", rdb.Get(ctx, n.Lock).Val())
			assert.InDelta(t, ttl, rdb.PTTL(ctx, n.Lock).Val(), float64(time.Second))
			assert.Equal(t, []string{n.Lock}, rdb.Keys(ctx, "*").Val(), "nothing but the lock is written")
		})

		t.Run("beside a counter", func(t *testing.T) {
			// The fence is max(counter + 1, the server's clock), as the script's; the counter is only read.
			hour := int64(time.Hour / time.Microsecond)
			for _, c := range []struct {
				name    string
				counter int64 // relative to the server's clock in µs
			}{{"behind the clock", -hour}, {"ahead of the clock", hour}} {
				require.NoError(t, rdb.FlushAll(ctx).Err())
				counter := serverMicros(t, rdb) + c.counter
				require.NoError(t, rdb.Set(ctx, n.Fence, counter, time.Hour).Err())
				before := serverMicros(t, rdb)
				a, err := script.AcquireFast(ctx, rdb, n, "mine", ttl)
				require.NoError(t, err)
				require.True(t, a.OK)
				after := serverMicros(t, rdb)
				if c.counter > 0 {
					assert.Equal(t, counter+1, a.Fence, "%s: one more than the counter", c.name)
				} else {
					assert.GreaterOrEqual(t, a.Fence, before, "%s: the clock", c.name)
					assert.LessOrEqual(t, a.Fence, after, "%s: the clock", c.name)
				}
				assert.Equal(t, strconv.FormatInt(counter, 10), rdb.Get(ctx, n.Fence).Val(), "%s: only read", c.name)
				assert.Greater(t, rdb.PTTL(ctx, n.Fence).Val(), 59*time.Minute, "%s: its ttl stays", c.name)
				assert.ElementsMatch(t, []string{n.Lock, n.Fence}, rdb.Keys(ctx, "*").Val(), c.name)
			}
		})

		t.Run("a counter of another type", func(t *testing.T) {
			// The SET has taken the lock when the GET of the counter fails: OK with the error, so that the caller
			// releases the lock, whose fence it does not know.
			for _, set := range []func() error{
				func() error { return rdb.HSet(ctx, n.Fence, "f", "v").Err() },
				func() error { return rdb.Set(ctx, n.Fence, "not a number", 0).Err() },
			} {
				require.NoError(t, rdb.FlushAll(ctx).Err())
				require.NoError(t, set())
				a, err := script.AcquireFast(ctx, rdb, n, "mine", ttl)
				require.ErrorIs(t, err, keyward.ErrWrongType)
				assert.NotErrorIs(t, err, script.ErrNoFastPath)
				assert.True(t, a.OK, "the SET took the lock: the caller must release it")
				assert.Zero(t, a.Fence, "whose fence it does not know")
				assert.Equal(t, "mine", rdb.Get(ctx, n.Lock).Val())
			}
		})

		t.Run("taken by another", func(t *testing.T) {
			require.NoError(t, rdb.FlushAll(ctx).Err())
			require.NoError(t, rdb.Set(ctx, n.Lock, "theirs", time.Minute).Err())
			a, err := script.AcquireFast(ctx, rdb, n, "mine", ttl)
			require.NoError(t, err)
			assert.False(t, a.OK)
			assert.Zero(t, a.Fence)
			assert.Equal(t, "theirs", rdb.Get(ctx, n.Lock).Val(), "the holder keeps it")
			assert.InDelta(t, time.Minute, rdb.PTTL(ctx, n.Lock).Val(), float64(time.Second), "with its ttl")
			assert.Equal(t, []string{n.Lock}, rdb.Keys(ctx, "*").Val(), "nothing else is written")
		})

		t.Run("reserved for a waiting process", func(t *testing.T) {
			require.NoError(t, rdb.FlushAll(ctx).Err())
			require.NoError(t, rdb.Set(ctx, n.Lock, "reserved:proc", time.Minute).Err())
			a, err := script.AcquireFast(ctx, rdb, n, "mine", ttl)
			require.NoError(t, err)
			assert.False(t, a.OK, "a plain try does not take a reservation")
			assert.Equal(t, "reserved:proc", rdb.Get(ctx, n.Lock).Val())
		})

		t.Run("already holds this value", func(t *testing.T) {
			// A resent pipeline whose first SET took the lock, or a script's acquire answered but lost.
			require.NoError(t, rdb.FlushAll(ctx).Err())
			require.NoError(t, rdb.Set(ctx, n.Lock, "mine", time.Minute).Err())
			before := serverMicros(t, rdb)
			a, err := script.AcquireFast(ctx, rdb, n, "mine", ttl)
			require.NoError(t, err)
			assert.True(t, a.OK, "the lock holds our own value: we have it")
			assert.GreaterOrEqual(t, a.Fence, before)
			assert.Equal(t, "mine", rdb.Get(ctx, n.Lock).Val())
			assert.Positive(t, rdb.PTTL(ctx, n.Lock).Val(), "it still expires")
			assert.Equal(t, []string{n.Lock}, rdb.Keys(ctx, "*").Val())
		})

		t.Run("a key of another type", func(t *testing.T) {
			require.NoError(t, rdb.FlushAll(ctx).Err())
			require.NoError(t, rdb.HSet(ctx, n.Lock, "f", "v").Err())
			a, err := script.AcquireFast(ctx, rdb, n, "mine", ttl)
			require.ErrorIs(t, err, keyward.ErrWrongType, "a hash under the lock's name is an error, not a held lock")
			assert.NotErrorIs(t, err, script.ErrNoFastPath)
			assert.True(t, script.IsReply(err), "the server's answer stays in the chain")
			assert.Contains(t, err.Error(), "WRONGTYPE")
			assert.False(t, a.OK)
			assert.Equal(t, "hash", rdb.Type(ctx, n.Lock).Val(), "nothing was written")
			assert.Equal(t, map[string]string{"f": "v"}, rdb.HGetAll(ctx, n.Lock).Val())
			assert.Equal(t, []string{n.Lock}, rdb.Keys(ctx, "*").Val())
		})
	})
}

// noSetNXGet makes a client's pipelines answer SET as a server before Redis 7.0 answers SET with both NX and GET
// ("ERR syntax error"), without sending it: the other commands of the pipeline go to the server.
type noSetNXGet struct{ refused int }

func (h *noSetNXGet) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *noSetNXGet) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *noSetNXGet) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var sent []redis.Cmder
		for _, cmd := range cmds {
			if cmd.Name() == "set" {
				h.refused++
				cmd.SetErr(proto("ERR syntax error"))
				continue
			}
			sent = append(sent, cmd)
		}
		if len(sent) > 0 {
			_ = next(ctx, sent)
		}
		for _, cmd := range cmds {
			if err := cmd.Err(); err != nil {
				return err
			}
		}
		return nil
	}
}

// TestAcquireFastOnAnOlderServer: a server that does not know SET NX GET answers ErrNoFastPath, with its own error
// in the chain, and nothing was written.
func TestAcquireFastOnAnOlderServer(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		hook := &noSetNXGet{}
		rdb.AddHook(hook)
		a, err := script.AcquireFast(ctx, rdb, n, "mine", time.Second)
		require.Equal(t, 1, hook.refused, "the SET went through the hook")
		require.ErrorIs(t, err, script.ErrNoFastPath)
		assert.True(t, script.IsReply(err), "the server's answer stays in the chain")
		assert.Contains(t, err.Error(), "ERR syntax error")
		assert.False(t, a.OK)
		assert.Zero(t, rdb.DBSize(ctx).Val(), "nothing was written")

		// The script works on such a server.
		s, err := script.Acquire(ctx, rdb, n, "mine", time.Second)
		require.NoError(t, err)
		assert.True(t, s.OK)
	})
}

// TestAcquireFastErrors: the server's refusals of the SET are classified as the script's are, and are not taken
// for an older server; a TIME refused after the SET took the lock says OK with the error, so that the caller
// releases a lock whose fence it does not know (as a GET of the counter refused does: see
// TestLockWithoutAccessToTheCounter).
func TestAcquireFastErrors(t *testing.T) {
	ctx := context.Background()
	n := keys.For("job")

	t.Run("OOM", func(t *testing.T) {
		srv := redistest.Start(t, redistest.WithArgs("--maxmemory", "1", "--maxmemory-policy", "noeviction"))
		rdb := srv.Client(t)
		a, err := script.AcquireFast(ctx, rdb, n, "mine", time.Second)
		require.ErrorIs(t, err, keyward.ErrOutOfMemory)
		assert.NotErrorIs(t, err, script.ErrNoFastPath)
		assert.False(t, a.OK)
		assert.Zero(t, rdb.DBSize(ctx).Val())
	})

	t.Run("SET refused", func(t *testing.T) {
		srv := redistest.Start(t)
		user := srv.User(t, "app", "secret", []string{"reset", "on", ">secret", "~*", "&*", "+@all", "-set"})
		a, err := script.AcquireFast(ctx, user, n, "mine", time.Second)
		require.ErrorIs(t, err, keyward.ErrNoPermission)
		assert.NotErrorIs(t, err, script.ErrNoFastPath)
		assert.False(t, a.OK)
		assert.Zero(t, srv.Client(t).DBSize(ctx).Val(), "nothing was written")
	})

	t.Run("TIME refused", func(t *testing.T) {
		srv := redistest.Start(t)
		admin := srv.Client(t)
		user := srv.User(t, "app", "secret", []string{"reset", "on", ">secret", "~*", "&*", "+@all", "-time"})
		a, err := script.AcquireFast(ctx, user, n, "mine", time.Minute)
		require.ErrorIs(t, err, keyward.ErrNoPermission)
		assert.True(t, script.IsReply(err))
		assert.Contains(t, err.Error(), "NOPERM")
		assert.True(t, a.OK, "the SET took the lock: the caller must release it")
		assert.Zero(t, a.Fence, "whose fence it does not know")
		assert.Equal(t, "mine", admin.Get(ctx, n.Lock).Val())

		// The user can release it (no TIME needed without a successor), without its fence: no counter is written.
		ok, err := script.Release(ctx, user, n, "mine", script.PublishPlain)
		require.NoError(t, err)
		assert.True(t, ok)
		assert.Zero(t, admin.Exists(ctx, n.Lock).Val(), "the lock is released")
		assert.Zero(t, admin.Exists(ctx, n.Fence).Val(), "a release without a fence writes no counter")
	})

	t.Run("not a reply", func(t *testing.T) {
		srv := redistest.Start(t)
		rdb := srv.Client(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		a, err := script.AcquireFast(cctx, rdb, n, "mine", time.Second)
		require.Error(t, err)
		assert.True(t, errors.Is(err, context.Canceled), "%v", err)
		assert.False(t, script.IsReply(err))
		assert.NotErrorIs(t, err, script.ErrNoFastPath)
		assert.False(t, a.OK)
	})
}
