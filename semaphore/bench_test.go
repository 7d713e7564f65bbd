package semaphore_test

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/benchstat"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/semaphore"
)

// contention is a contended workload: Semaphores stand for processes (each has its own connections and its own
// place in the Redis queue), each running goroutines that acquire, hold and release a permit in a loop.
type contention struct {
	name       string
	sems       int
	goroutines int
	hold       time.Duration
}

// benchLimit is the semaphore's limit in BenchmarkContended.
const benchLimit = 4

// BenchmarkContended runs 32 contenders for a semaphore of limit 4 against a real redis-server, spread over
// Semaphores ("processes") in three ways; b.N is the number of acquisitions in all. It reports acquisitions/s,
// failed tries, scripts, commands and server CPU per acquisition (INFO commandstats and used_cpu deltas), the
// p99 wait, Jain's fairness index over goroutines and Semaphores, and, with a hold, throughput as a fraction of
// the bound limit/(hold + 2·RTT). More than limit holders at once fail the benchmark.
func BenchmarkContended(b *testing.B) {
	srv := redistest.Start(b)
	for _, w := range []contention{
		{name: "32x1/hold-0", sems: 32, goroutines: 1},
		{name: "32x1/hold-200us", sems: 32, goroutines: 1, hold: 200 * time.Microsecond},
		{name: "4x8/hold-0", sems: 4, goroutines: 8},
		{name: "4x8/hold-200us", sems: 4, goroutines: 8, hold: 200 * time.Microsecond},
		{name: "1x32/hold-0", sems: 1, goroutines: 32},
		{name: "1x32/hold-200us", sems: 1, goroutines: 32, hold: 200 * time.Microsecond},
	} {
		b.Run(w.name, func(b *testing.B) { runContention(b, srv, w) })
	}
}

func runContention(b *testing.B, srv *redistest.Server, w contention) {
	ctx := context.Background()
	admin := srv.Client(b)
	rtt, err := benchstat.PingRTT(ctx, admin, 200)
	if err != nil {
		b.Fatal(err)
	}
	sems := make([]*semaphore.Semaphore, w.sems)
	waiting := make([]failedTries, w.sems)
	for i := range sems {
		rdb := redistest.NewClient(b, srv.ClientOptions())
		waiting[i] = make(failedTries, 2)
		rdb.AddHook(waiting[i])
		s, err := semaphore.New(rdb, "bench-"+w.name, benchLimit)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		sems[i] = s
	}
	warmUp(b, admin, sems, waiting)
	before, err := benchstat.Snapshot(ctx, admin)
	if err != nil {
		b.Fatal(err)
	}
	scriptsBefore := scriptTime(b, admin)
	statsBefore := make([]keyward.Stats, len(sems))
	for i, s := range sems {
		statsBefore[i] = s.Stats()
	}

	var (
		remaining   atomic.Int64
		inside, top atomic.Int32
		mu          sync.Mutex
		waits       []time.Duration
		held        time.Duration
		wg          sync.WaitGroup
	)
	remaining.Store(int64(b.N))
	perGoroutine := make([]int64, w.sems*w.goroutines)
	perSem := make([]int64, w.sems)
	b.ResetTimer()
	start := time.Now()
	for si, s := range sems {
		for g := range w.goroutines {
			id := si*w.goroutines + g
			wg.Go(func() {
				var myWaits []time.Duration
				var myHeld time.Duration
				for remaining.Add(-1) >= 0 {
					t0 := time.Now()
					p, err := s.Acquire(ctx, 10*time.Second)
					if err != nil {
						b.Error(err)
						return
					}
					acquired := time.Now()
					n := inside.Add(1)
					for m := top.Load(); n > m && !top.CompareAndSwap(m, n); m = top.Load() {
					}
					spin(w.hold)
					inside.Add(-1)
					releasing := time.Now()
					if err := p.Release(ctx); err != nil {
						b.Error(err)
						return
					}
					myWaits = append(myWaits, acquired.Sub(t0))
					myHeld += releasing.Sub(acquired)
				}
				mu.Lock()
				waits = append(waits, myWaits...)
				held += myHeld
				perGoroutine[id] = int64(len(myWaits))
				perSem[si] += int64(len(myWaits))
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()

	after, err := benchstat.Snapshot(ctx, admin)
	if err != nil {
		b.Fatal(err)
	}
	cost := after.Since(before)
	inScripts := scriptTime(b, admin) - scriptsBefore
	var failed, handOffs int64
	for i, s := range sems {
		failed += s.Stats().FailedTries - statsBefore[i].FailedTries
		handOffs += s.Stats().HandOffs - statsBefore[i].HandOffs
	}
	if top.Load() > benchLimit {
		b.Fatalf("%d holders at once, limit %d", top.Load(), benchLimit)
	}
	n := float64(len(waits))
	rate := n / elapsed.Seconds()
	b.ReportMetric(rate, "acq/s")
	b.ReportMetric(float64(rtt.Microseconds()), "ping-µs")
	b.ReportMetric(float64(held.Microseconds())/n, "hold-µs")
	b.ReportMetric(float64(benchstat.Quantile(waits, 0.99).Microseconds()), "wait-p99-µs")
	b.ReportMetric(float64(failed)/n, "failed-tries/acq")
	b.ReportMetric(float64(handOffs)/n, "hand-offs/acq")
	b.ReportMetric(float64(cost.Scripts())/n, "scripts/acq")
	b.ReportMetric(float64(cost.Commands())/n, "cmds/acq")
	b.ReportMetric(float64(cost.CPU.Microseconds())/n, "cpu-µs/acq")
	b.ReportMetric(float64(inScripts.Microseconds())/n, "script-µs/acq")
	b.ReportMetric(benchstat.Jain(perGoroutine), "jain-goroutines")
	if w.sems > 1 {
		b.ReportMetric(benchstat.Jain(perSem), "jain-sems")
	}
	if w.hold > 0 {
		b.ReportMetric(rate*(held/time.Duration(n)+2*rtt).Seconds()/benchLimit, "of-bound")
	}
}

// scriptTime returns the server's time spent running scripts so far (INFO commandstats, EVALSHA and EVAL).
func scriptTime(b *testing.B, rdb redis.UniversalClient) time.Duration {
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (name != "cmdstat_evalsha" && name != "cmdstat_eval") {
			continue
		}
		for _, f := range strings.Split(rest, ",") {
			if v, ok := strings.CutPrefix(f, "usec="); ok {
				us, _ := strconv.ParseInt(v, 10, 64)
				total += time.Duration(us) * time.Microsecond
			}
		}
	}
	return total
}

// warmUp makes every Semaphore wait once, so that the measurement starts in the steady state: scripts loaded,
// connections open, subscriptions made.
func warmUp(b *testing.B, admin redis.UniversalClient, sems []*semaphore.Semaphore, waiting []failedTries) {
	ctx := context.Background()
	blocker, err := semaphore.New(admin, sems[0].Name(), benchLimit)
	if err != nil {
		b.Fatal(err)
	}
	defer blocker.Close()
	var held []*semaphore.Permit
	for range benchLimit {
		p, err := blocker.TryAcquire(ctx, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		held = append(held, p)
	}
	var wg sync.WaitGroup
	for _, s := range sems {
		wg.Go(func() {
			p, err := s.Acquire(ctx, 10*time.Second)
			if err != nil {
				b.Error(err)
				return
			}
			_ = p.Release(ctx)
		})
	}
	for _, ch := range waiting {
		<-ch // the plain try, then the subscribed one
		<-ch
	}
	for _, p := range held {
		_ = p.Release(ctx)
	}
	wg.Wait()
}

// spin holds the processor's attention for d without sleeping: time.Sleep rounds short sleeps up to the timer's
// granularity, which would hide the semaphore's own cost behind an inflated hold.
func spin(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
		runtime.Gosched()
	}
}

// failedTries signals on its channel (without blocking) after each acquire attempt that found no room.
type failedTries chan struct{}

func (h failedTries) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h failedTries) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h failedTries) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if res, ok := cmd.(*redis.Cmd); ok && err == nil {
			if v, ok := res.Val().([]any); ok && len(v) >= 3 && v[0] == int64(0) {
				select {
				case h <- struct{}{}:
				default:
				}
			}
		}
		return err
	}
}

// BenchmarkWake measures how soon a waiter holds the permit after the holder releases it, with limit 1: from
// Release returning to the waiter's Acquire returning ("after-return"), and from Release being called
// ("after-call"), as p50 and p99 in units of a PING round trip (the p50 of a PING sent in each round), and the
// server's time in scripts per round (the holder's try and release, the waiter's failed try and claim). Across
// processes the waiter hears the release message about when the holder hears the release's reply, then claims
// its reserved place in one round trip; within one Semaphore the permit is handed over in the release's round
// trip.
func BenchmarkWake(b *testing.B) {
	srv := redistest.Start(b)
	for _, across := range []bool{true, false} {
		name := "same-semaphore"
		if across {
			name = "across-processes"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			admin := srv.Client(b)
			waiting := make(failedTries, 4)
			newSem := func() *semaphore.Semaphore {
				rdb := redistest.NewClient(b, srv.ClientOptions())
				rdb.AddHook(waiting)
				s, err := semaphore.New(rdb, "wake-"+name, 1)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = s.Close() })
				return s
			}
			holder := newSem()
			waiter := holder
			if across {
				waiter = newSem()
			}
			pings := make([]time.Duration, 0, b.N)
			afterReturn := make([]time.Duration, 0, b.N)
			afterCall := make([]time.Duration, 0, b.N)
			round := func() {
				// A PING in each round, so that the unit and the measurement see the same machine.
				start := time.Now()
				if err := admin.Ping(ctx).Err(); err != nil {
					b.Fatal(err)
				}
				pings = append(pings, time.Since(start))
				p, err := holder.TryAcquire(ctx, 10*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				for len(waiting) > 0 { // failed tries of earlier rounds
					<-waiting
				}
				got := make(chan time.Time, 1)
				go func() {
					w, err := waiter.Acquire(ctx, 10*time.Second)
					acquired := time.Now()
					if err != nil {
						b.Error(err)
					} else {
						_ = w.Release(ctx)
					}
					got <- acquired
				}()
				<-waiting // the waiter found no room: it waits (subscribed since the warm-up round)
				called := time.Now()
				if err := p.Release(ctx); err != nil {
					b.Fatal(err)
				}
				returned := time.Now()
				acquired := <-got
				afterReturn = append(afterReturn, max(0, acquired.Sub(returned)))
				afterCall = append(afterCall, acquired.Sub(called))
			}
			round() // warm-up: scripts loaded, the waiter subscribed
			pings, afterReturn, afterCall = pings[:0], afterReturn[:0], afterCall[:0]
			scripts := scriptTime(b, admin)
			b.ResetTimer()
			for range b.N {
				round()
			}
			b.StopTimer()
			rtt := benchstat.Quantile(pings, 0.5)
			b.ReportMetric(float64((scriptTime(b, admin)-scripts).Microseconds())/float64(b.N), "script-µs/round")
			b.ReportMetric(float64(rtt.Microseconds()), "ping-µs")
			b.ReportMetric(float64(benchstat.Quantile(afterReturn, 0.5))/float64(rtt), "after-return-p50-RTT")
			b.ReportMetric(float64(benchstat.Quantile(afterReturn, 0.99))/float64(rtt), "after-return-p99-RTT")
			b.ReportMetric(float64(benchstat.Quantile(afterCall, 0.5))/float64(rtt), "after-call-p50-RTT")
			b.ReportMetric(float64(benchstat.Quantile(afterCall, 0.99))/float64(rtt), "after-call-p99-RTT")
		})
	}
}
