package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/benchstat"
	"github.com/keyward/keyward/redlock"
)

// BenchmarkUncontended measures TryObtain followed by Release on a free lock, on 3 and 5 real redis-server
// processes, and reports the p50 and p99 of the pair in units of a PING round trip to one node measured in the
// same run: a PING is sent before each pair, so both see the same machine. The acquire and the release each go
// to every node at once, so the ideal is 2. On a machine with fewer cores than nodes the servers queue for the
// CPU, so it also reports, in the same unit, a PING sent to every node at once and answered by a majority
// (fanout-RTT): twice that is what the pair cannot beat there.
//
//	go test -run '^$' -bench Uncontended -benchtime 5000x ./redlock/
func BenchmarkUncontended(b *testing.B) {
	for _, n := range []int{3, 5} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			_, clients := realNodes(b, n)
			ctx := context.Background()
			// The node timeout only matters when a node fails; a generous one keeps a busy machine from failing
			// the run (a timed-out acquire may also leave its key behind until its ttl).
			locks, err := redlock.New(universal(clients), redlock.WithNodeTimeout(time.Second))
			if err != nil {
				b.Fatal(err)
			}
			defer locks.Close()
			for range 10 { // loads the scripts, opens the connections
				warm, err := locks.TryObtain(ctx, "warm-up", 10*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				if err := warm.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
			pings := make([]time.Duration, 0, b.N)
			fanouts := make([]time.Duration, 0, b.N)
			pairs := make([]time.Duration, 0, b.N)
			answered := make(chan error, n)
			failed := 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if err := clients[0].Ping(ctx).Err(); err != nil {
					b.Fatal(err)
				}
				pings = append(pings, time.Since(start))

				start = time.Now()
				for _, c := range clients {
					go func() { answered <- c.Ping(ctx).Err() }()
				}
				for range locks.Quorum() {
					if err := <-answered; err != nil {
						b.Fatal(err)
					}
				}
				fanouts = append(fanouts, time.Since(start))
				for range n - locks.Quorum() {
					<-answered
				}

				start = time.Now()
				l, err := locks.TryObtain(ctx, "bench", 10*time.Second)
				if errors.Is(err, redlock.ErrNotObtained) || errors.Is(err, redlock.ErrQuorum) {
					// An acquire that timed out on an overloaded machine may leave its key for a ttl.
					failed++
					continue
				}
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Release(ctx); err != nil {
					b.Fatal(err)
				}
				pairs = append(pairs, time.Since(start))
			}
			b.StopTimer()
			rtt := benchstat.Quantile(pings, 0.5)
			b.ReportMetric(float64(rtt.Microseconds()), "ping-µs")
			b.ReportMetric(float64(benchstat.Quantile(pairs, 0.5))/float64(rtt), "RTT-p50")
			b.ReportMetric(float64(benchstat.Quantile(pairs, 0.99))/float64(rtt), "RTT-p99")
			b.ReportMetric(float64(benchstat.Quantile(fanouts, 0.5))/float64(rtt), "fanout-RTT-p50")
			b.ReportMetric(float64(failed), "failed")
		})
	}
}

// BenchmarkMajorityDown measures how long TryObtain takes to fail when a majority of the nodes are dead
// (connection refused), with the default node timeout (50 ms for a 10 s ttl): go-redis retries a refused dial
// with a backoff, so the dead nodes answer at the node timeout, and the failure must not wait much longer.
//
//	go test -run '^$' -bench MajorityDown -benchtime 200x ./redlock/
func BenchmarkMajorityDown(b *testing.B) {
	// go-redis logs every refused dial to the dead nodes, thousands of lines; the failures are the measurement.
	redis.SetLogger(discardLogger{})
	b.Cleanup(func() { redis.SetLogger(stderrLogger{log.New(os.Stderr, "redis: ", log.LstdFlags|log.Lshortfile)}) })
	servers, clients := realNodes(b, 3)
	servers[1].Kill(b)
	servers[2].Kill(b)
	ctx := context.Background()
	locks, err := redlock.New(universal(clients))
	if err != nil {
		b.Fatal(err)
	}
	defer locks.Close()
	fails := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := locks.TryObtain(ctx, "bench", 10*time.Second); err == nil {
			b.Fatal("obtained without a majority")
		}
		fails = append(fails, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(float64(benchstat.Quantile(fails, 0.5).Microseconds())/1000, "ms-p50")
	b.ReportMetric(float64(benchstat.Quantile(fails, 0.99).Microseconds())/1000, "ms-p99")
}

// discardLogger drops go-redis's log lines.
type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// stderrLogger writes them as go-redis's default logger does.
type stderrLogger struct{ l *log.Logger }

func (s stderrLogger) Printf(_ context.Context, format string, v ...any) {
	_ = s.l.Output(2, fmt.Sprintf(format, v...))
}
