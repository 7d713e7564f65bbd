package script_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/script"
)

// BenchmarkServerCost measures what each script costs the server, which is what every other client waits for
// (scripts run one at a time): the µs per call that INFO commandstats reports for EVALSHA, as the metric
// "server-µs/call". Only the script under test runs as EVALSHA; the set-up between calls uses other commands.
// acquire-fast, which runs no script, reports the µs per call of its SET, its TIME and its GET added up.
//
//	go test -run '^$' -bench ServerCost -benchtime 20000x ./internal/script/
func BenchmarkServerCost(b *testing.B) {
	srv := redistest.Start(b)
	rdb := srv.Client(b)
	ctx := context.Background()
	n := keys.For("bench")
	ttl := time.Minute

	// run times op, and reports the server's µs per call of the commands cmds (EVALSHA when none are given).
	run := func(b *testing.B, setUp func(i int), op func(i int), cmds ...string) {
		b.Helper()
		if len(cmds) == 0 {
			cmds = []string{"evalsha"}
		}
		setUp(-1)
		op(-1) // loads the script: the timed calls are EVALSHA hits
		require.NoError(b, rdb.ConfigResetStat(ctx).Err())
		b.ResetTimer()
		for i := range b.N {
			b.StopTimer()
			setUp(i)
			b.StartTimer()
			op(i)
		}
		b.StopTimer()
		var us float64
		for _, cmd := range cmds {
			us += commandMicros(b, rdb, cmd)
		}
		b.ReportMetric(us, "server-µs/call")
	}
	value := func(i int) string { return "holder-" + strconv.Itoa(i) }

	b.Run("acquire", func(b *testing.B) {
		run(b, func(int) { require.NoError(b, rdb.Del(ctx, n.Lock).Err()) }, func(i int) {
			a, err := script.Acquire(ctx, rdb, n, value(i), ttl)
			require.NoError(b, err)
			require.True(b, a.OK)
		})
	})
	b.Run("acquire-fast", func(b *testing.B) { // lock.Client's plain try on Redis ≥ 7: SET NX GET, TIME, GET
		run(b, func(int) { require.NoError(b, rdb.Del(ctx, n.Lock).Err()) }, func(i int) {
			a, err := script.AcquireFast(ctx, rdb, n, value(i), ttl)
			require.NoError(b, err)
			require.True(b, a.OK)
		}, "set", "time", "get")
	})
	b.Run("acquire-waiter", func(b *testing.B) { // lock.Client's waiting try
		run(b, func(int) { require.NoError(b, rdb.Del(ctx, n.Lock).Err()) }, func(i int) {
			a, err := script.AcquireQueued(ctx, rdb, n, value(i), ttl, "proc", ttl)
			require.NoError(b, err)
			require.True(b, a.OK)
		})
	})
	b.Run("acquire-taken", func(b *testing.B) {
		run(b, func(int) { require.NoError(b, rdb.Set(ctx, n.Lock, "other", ttl).Err()) }, func(i int) {
			a, err := script.Acquire(ctx, rdb, n, value(i), ttl)
			require.NoError(b, err)
			require.False(b, a.OK)
		})
	})
	b.Run("release", func(b *testing.B) {
		run(b, func(i int) { require.NoError(b, rdb.Set(ctx, n.Lock, value(i), ttl).Err()) }, func(i int) {
			ok, err := script.Release(ctx, rdb, n, value(i), script.PublishPlain)
			require.NoError(b, err)
			require.True(b, ok)
		})
	})
	b.Run("release-waiter", func(b *testing.B) { // lock.Client's release, which sets the counter to its fence
		run(b, func(i int) { require.NoError(b, rdb.Set(ctx, n.Lock, value(i), ttl).Err()) }, func(i int) {
			out, _, err := script.ReleaseNext(ctx, rdb, n, value(i), script.PublishPlain,
				script.Next{Waiter: "proc", Fence: int64(i) + 2, HolderTTL: ttl})
			require.NoError(b, err)
			require.Equal(b, script.Released, out)
		})
	})
	b.Run("release-reserve", func(b *testing.B) {
		run(b, func(i int) {
			require.NoError(b, rdb.Set(ctx, n.Lock, value(i), ttl).Err())
			require.NoError(b, rdb.ZAdd(ctx, n.Queue, redis.Z{Score: 1, Member: "proc"}).Err())
		}, func(i int) {
			ok, err := script.Release(ctx, rdb, n, value(i), script.PublishPlain)
			require.NoError(b, err)
			require.True(b, ok)
		})
	})
	b.Run("refresh", func(b *testing.B) {
		run(b, func(int) { require.NoError(b, rdb.Set(ctx, n.Lock, "mine", ttl).Err()) }, func(int) {
			ok, err := script.Refresh(ctx, rdb, n, "mine", ttl)
			require.NoError(b, err)
			require.True(b, ok)
		})
	})
	k := script.SemaphoreKeysFor("bench-sem")
	b.Run("semaphore-acquire", func(b *testing.B) {
		run(b, func(int) { require.NoError(b, rdb.Del(ctx, k.Holders).Err()) }, func(i int) {
			st, err := script.SemaphoreAcquire(ctx, rdb, k, script.SemaphoreTry{Value: value(i), TTL: ttl, Limit: 2,
				Publish: script.PublishPlain})
			require.NoError(b, err)
			require.True(b, st.OK)
		})
	})
	b.Run("semaphore-release", func(b *testing.B) {
		run(b, func(i int) {
			require.NoError(b, rdb.ZAdd(ctx, k.Holders, redis.Z{Score: 4e12, Member: value(i)}).Err())
		}, func(i int) {
			res, err := script.SemaphoreRelease(ctx, rdb, k, script.SemaphoreGiveBack{Value: value(i), Limit: 2,
				Window: time.Second, Publish: script.PublishPlain})
			require.NoError(b, err)
			require.Equal(b, script.Released, res.Outcome)
		})
	})
}

// commandMicros reads the µs per call of the command cmd (lower case, such as "evalsha") from INFO commandstats.
func commandMicros(b *testing.B, rdb *redis.Client, cmd string) float64 {
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	require.NoError(b, err)
	for line := range strings.SplitSeq(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":")
		if !ok {
			continue
		}
		for field := range strings.SplitSeq(rest, ",") {
			if v, ok := strings.CutPrefix(field, "usec_per_call="); ok {
				us, err := strconv.ParseFloat(v, 64)
				require.NoError(b, err)
				return us
			}
		}
	}
	b.Fatalf("no %s in INFO commandstats:\n%s", cmd, info)
	return 0
}
