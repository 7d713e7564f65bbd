package lock_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// BenchmarkUncontended measures TryObtain followed by Release on a free lock against a real redis-server, and
// reports the p50 and p99 of the pair in units of a PING round trip measured in the same run: a PING is sent
// before each pair, so both see the same machine. The physical minimum is 2 round trips.
func BenchmarkUncontended(b *testing.B) {
	rdb := redistest.Start(b).Client(b)
	ctx := context.Background()
	locks, err := lock.New(rdb)
	if err != nil {
		b.Fatal(err)
	}
	warm, err := locks.TryObtain(ctx, "warm-up", time.Second) // loads the scripts, opens the connection
	if err != nil {
		b.Fatal(err)
	}
	if err := warm.Release(ctx); err != nil {
		b.Fatal(err)
	}
	pings := make([]time.Duration, 0, b.N)
	pairs := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := rdb.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		pings = append(pings, time.Since(start))

		start = time.Now()
		l, err := locks.TryObtain(ctx, "bench", 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
		pairs = append(pairs, time.Since(start))
	}
	b.StopTimer()
	rtt := quantile(pings, 0.5)
	b.ReportMetric(float64(rtt.Microseconds()), "ping-µs-p50")
	b.ReportMetric(float64(quantile(pairs, 0.5))/float64(rtt), "RTT-p50")
	b.ReportMetric(float64(quantile(pairs, 0.99))/float64(rtt), "RTT-p99")
}

// quantile returns the q-quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
