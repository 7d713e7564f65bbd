package election_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// failedTries is a go-redis hook that counts the waiting tries that found the lock taken: the acquire scripts
// sent with a waiter id (the first try of a Campaign goes without one, unless the lock.Client kept its
// subscription from an earlier wait). A waiting try comes after the waiter's subscription was confirmed, so a
// candidate whose Campaign has made one since it started is waiting.
type failedTries struct {
	mu      sync.Mutex
	count   int
	target  int
	reached chan struct{}
}

// after returns a channel that is closed once n more attempts have failed.
func (h *failedTries) after(n int) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.target, h.reached = h.count+n, make(chan struct{})
	return h.reached
}

func (h *failedTries) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *failedTries) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *failedTries) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if name := cmd.Name(); (name == "evalsha" || name == "eval") && err == nil {
			// EVALSHA sha 3 lock fence queue value ttl fence-ttl waiter …: the acquire script, as a waiter.
			args := cmd.Args()
			waiter := len(args) > 9 && fmt.Sprint(args[2]) == "3" && fmt.Sprint(args[9]) != ""
			if res, ok := cmd.(*redis.Cmd).Val().([]any); ok && waiter && len(res) == 2 && res[0] == int64(0) {
				h.mu.Lock()
				h.count++
				if h.reached != nil && h.count == h.target {
					close(h.reached)
				}
				h.mu.Unlock()
			}
		}
		return err
	}
}

// benchCandidate is a candidate with a connection pool and lock.Client of its own, as a process would have.
type benchCandidate struct {
	e       *election.Election
	waiting *failedTries
	crash   *redistest.Outage
}

func newBenchCandidate(b *testing.B, srv *redistest.Server, id string, ttl time.Duration) *benchCandidate {
	c := &benchCandidate{waiting: &failedTries{}, crash: newCrash()}
	rdb := redistest.NewClient(b, srv.ClientOptions())
	rdb.AddHook(c.waiting)
	rdb.AddHook(c.crash)
	locks, err := lock.New(rdb)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = locks.Close() })
	c.e, err = election.New(locks.Locker(), "bench", election.WithRedis(rdb), election.WithIdentity(id), election.WithTTL(ttl))
	if err != nil {
		b.Fatal(err)
	}
	return c
}

type campaigned struct {
	lead *election.Leadership
	at   time.Time
	err  error
}

// campaign starts c's Campaign and returns once c waits for the lock; the result arrives on the channel.
func (c *benchCandidate) campaign(ctx context.Context) <-chan campaigned {
	got := make(chan campaigned, 1)
	waiting := c.waiting.after(1)
	go func() {
		lead, err := c.e.Campaign(ctx)
		got <- campaigned{lead, time.Now(), err}
	}()
	<-waiting
	return got
}

// BenchmarkFailoverAfterResign measures, against a real redis-server, the time from a leader's call to Resign
// until the candidate that was waiting returns from Campaign as the new leader (its record written, so that
// observers see it). Two candidates in the same process but with connections of their own trade the leadership
// back and forth. It reports the p50 and p99 in milliseconds and in units of a PING round trip measured in the
// same run.
func BenchmarkFailoverAfterResign(b *testing.B) {
	srv := redistest.Start(b)
	ctx := context.Background()
	ping := srv.Client(b)
	leader := newBenchCandidate(b, srv, "a", 10*time.Second)
	waiter := newBenchCandidate(b, srv, "b", 10*time.Second)
	lead, err := leader.e.Campaign(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var pings, failovers []time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := ping.Ping(ctx).Err(); err != nil {
			b.Fatal(err)
		}
		pings = append(pings, time.Since(start))

		next := waiter.campaign(ctx)
		start = time.Now()
		if err := lead.Resign(ctx); err != nil {
			b.Fatal(err)
		}
		r := <-next
		if r.err != nil {
			b.Fatal(r.err)
		}
		failovers = append(failovers, r.at.Sub(start))
		lead, leader, waiter = r.lead, waiter, leader
	}
	b.StopTimer()
	if err := lead.Resign(ctx); err != nil {
		b.Fatal(err)
	}
	reportLatencies(b, failovers, quantile(pings, 0.5))
}

// BenchmarkFailoverAfterCrash measures how long after a dead leader's lease ran out a waiting candidate leads.
// The leader campaigns on a free lock (ttl 200 ms) and dies at once: every command of its connection fails from
// then on, so it neither renews nor releases, as after kill -9. The overshoot is the time from
// (just before the dead leader's acquire) + ttl — no later than the server's expiry of its lock — until the
// waiting candidate returns from Campaign. It reports the p50 and p99 of the overshoot in milliseconds.
func BenchmarkFailoverAfterCrash(b *testing.B) {
	const ttl = 200 * time.Millisecond
	srv := redistest.Start(b)
	ctx := context.Background()
	dying := newBenchCandidate(b, srv, "dying", ttl)
	waiter := newBenchCandidate(b, srv, "waiter", ttl)
	var overshoots []time.Duration
	b.ResetTimer()
	for range b.N {
		dying.crash.Off()
		start := time.Now()
		dead, err := dying.e.Campaign(ctx)
		if err != nil {
			b.Fatal(err)
		}
		dying.crash.On()

		r := <-waiter.campaign(ctx)
		if r.err != nil {
			b.Fatal(r.err)
		}
		overshoots = append(overshoots, r.at.Sub(start.Add(ttl)))
		<-dead.Done()
		_ = dead.Resign(ctx) // fails: the process is "dead"; it only stops its goroutine
		if err := r.lead.Resign(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(ms(quantile(overshoots, 0.5)), "ms-after-ttl-p50")
	b.ReportMetric(ms(quantile(overshoots, 0.99)), "ms-after-ttl-p99")
}

func reportLatencies(b *testing.B, ds []time.Duration, rtt time.Duration) {
	p50, p99 := quantile(ds, 0.5), quantile(ds, 0.99)
	b.ReportMetric(float64(rtt.Microseconds()), "ping-µs-p50")
	b.ReportMetric(ms(p50), "ms-p50")
	b.ReportMetric(ms(p99), "ms-p99")
	b.ReportMetric(float64(p50)/float64(rtt), "RTT-p50")
	b.ReportMetric(float64(p99)/float64(rtt), "RTT-p99")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// quantile returns the q-quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}
