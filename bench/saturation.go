package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/benchstat"
)

// A saturationRun is one run of the saturation scenario for one library: Goroutines goroutines in one worker
// process, each taking and releasing fresh keys (no contention) as fast as it can for a fixed time.
type saturationRun struct {
	Label   string
	Library library
	// Round is the run's round: every library runs once per round, in the same order.
	Round int
	// Pairs completed, in Took (from the start until the last release returned).
	Pairs int64
	Took  time.Duration
	// Cost is the server's work from right before the start until the worker answered.
	Cost benchstat.ServerCost
	// P50 and P99 are the latency of one try-acquire + release pair.
	P50, P99 time.Duration
	// FailedTries counts the tries that failed on a fresh key (see failedInARow).
	FailedTries int64
	Err         string
}

// Rate is the pairs per second.
func (s saturationRun) Rate() float64 {
	if s.Took <= 0 {
		return 0
	}
	return float64(s.Pairs) / s.Took.Seconds()
}

// CPUPerPair is the server's CPU time per pair, in µs.
func (s saturationRun) CPUPerPair() float64 {
	if s.Pairs == 0 {
		return 0
	}
	return float64(s.Cost.CPU.Nanoseconds()) / 1000 / float64(s.Pairs)
}

// saturate runs the saturation scenario: cfg.saturationRuns rounds, each library once per round in the same
// order (A B C D A B C D), so that every library meets the machine in the states the others meet. A library that
// fails is reported, and the rounds go on.
func saturate(ctx context.Context, r *rig, cfg config, errs *[]string) []saturationRun {
	var runs []saturationRun
	for round := 1; round <= cfg.saturationRuns; round++ {
		for _, c := range saturationContenders {
			if !selected(cfg, c) {
				continue
			}
			lib, ok := libraryNamed(c.Library)
			if !ok {
				continue
			}
			s, err := r.saturation(ctx, c.Label, lib, round, cfg)
			if err != nil {
				s.Err = err.Error()
				*errs = append(*errs, fmt.Sprintf("%s, saturation run %d: %s", c.Label, round, err))
			}
			fmt.Fprintf(os.Stderr, "%-16s %-12s %s\n", c.Label, fmt.Sprintf("saturation %d", round), s.progress())
			runs = append(runs, s)
		}
	}
	return runs
}

// selected says whether -only picks the contender (by its name or its library row's).
func selected(cfg config, c contender) bool {
	return cfg.only == nil || cfg.only.MatchString(c.Label) || cfg.only.MatchString(c.Library)
}

func (s saturationRun) progress() string {
	if s.Err != "" {
		return "ERROR " + s.Err
	}
	return fmt.Sprintf("%6.0f pairs/s  cpu %.1f µs/pair  %.2f commands/pair  p50 %v  p99 %v  failed tries %d", s.Rate(),
		s.CPUPerPair(), float64(s.Cost.Commands())/float64(max(s.Pairs, 1)), s.P50.Round(time.Microsecond),
		s.P99.Round(time.Microsecond), s.FailedTries)
}

// saturation runs one library once in the saturation scenario, on a flushed server.
func (r *rig) saturation(ctx context.Context, label string, lib library, round int, cfg config) (saturationRun, error) {
	s := saturationRun{Label: label, Library: lib, Round: round}
	addrs, admins, err := r.flushed(ctx, r.nodes(lib))
	if err != nil {
		return s, err
	}
	j := job{Kind: kindSaturation, Library: lib.Name, Addrs: addrs, Key: fmt.Sprintf("bench:saturation:%d", round),
		Goroutines: cfg.saturationGoroutines}
	if cfg.profiles != "" {
		j.CPUProfile = filepath.Join(cfg.profiles, strings.NewReplacer("/", "-", " ", "-").Replace(
			fmt.Sprintf("%s-saturation-%d.pprof", label, round)))
	}
	w, err := r.start(j)
	if err != nil {
		return s, err
	}
	defer w.kill()
	// A worker that hangs must not hang the benchmark.
	watchdog := time.AfterFunc(cfg.saturation+time.Minute, func() { _ = w.cmd.Process.Kill() })
	defer watchdog.Stop()
	if err := w.ready(); err != nil {
		return s, err
	}
	before, err := snapshot(ctx, admins)
	if err != nil {
		return s, err
	}
	start := r.clock.Now().Add(50 * time.Millisecond)
	if err := w.in.Encode(goMsg{Start: start.UnixNano(), End: start.Add(cfg.saturation).UnixNano()}); err != nil {
		return s, w.fail("start", err, "")
	}
	var res result
	if err := w.out.Decode(&res); err != nil || res.Err != "" {
		return s, w.fail("run", err, res.Err)
	}
	after, err := snapshot(ctx, admins)
	if err != nil {
		return s, err
	}
	if err := w.finish(); err != nil {
		return s, err
	}
	s.Pairs, s.Took, s.P50, s.P99, s.FailedTries = res.Done, res.Took, res.PairP50, res.PairP99, res.Retried
	s.Cost = after.Since(before)
	return s, nil
}

// flushed flushes the servers nodes, and returns their addresses and admin clients.
func (r *rig) flushed(ctx context.Context, nodes []int) ([]string, []*redis.Client, error) {
	var addrs []string
	var admins []*redis.Client
	for _, i := range nodes {
		addrs = append(addrs, r.servers[i].Addr())
		admins = append(admins, r.admins[i])
		if err := r.admins[i].FlushAll(ctx).Err(); err != nil {
			return nil, nil, err
		}
	}
	return addrs, admins, nil
}

// saturationSummary is one library's saturation runs, summed up.
type saturationSummary struct {
	Label   string
	Library library
	Runs    []saturationRun // those without error, in round order
	// Best and median over the runs: the highest rate, the lowest CPU per pair.
	BestRate, MedianRate float64
	BestCPU, MedianCPU   float64 // µs per pair
	// Commands and Scripts per pair, over every run.
	Commands, Scripts float64
	// P50 and P99: the medians of the runs' pair latencies.
	P50, P99 time.Duration
	// FailedTries over every run.
	FailedTries int64
}

// summarize sums up the runs of the library label; false if none succeeded.
func summarize(runs []saturationRun, label string) (saturationSummary, bool) {
	s := saturationSummary{Label: label}
	var rates, cpus []float64
	var p50s, p99s []time.Duration
	var pairs, commands, scripts int64
	for _, r := range runs {
		if r.Label != label || r.Err != "" || r.Pairs == 0 {
			continue
		}
		s.Library = r.Library
		s.Runs = append(s.Runs, r)
		rates, cpus = append(rates, r.Rate()), append(cpus, r.CPUPerPair())
		p50s, p99s = append(p50s, r.P50), append(p99s, r.P99)
		pairs += r.Pairs
		commands += r.Cost.Commands()
		scripts += r.Cost.Scripts()
		s.FailedTries += r.FailedTries
	}
	if len(s.Runs) == 0 {
		return s, false
	}
	s.BestRate, s.MedianRate = slices.Max(rates), median(rates)
	s.BestCPU, s.MedianCPU = slices.Min(cpus), median(cpus)
	s.Commands, s.Scripts = float64(commands)/float64(pairs), float64(scripts)/float64(pairs)
	s.P50 = time.Duration(median(durations(p50s)))
	s.P99 = time.Duration(median(durations(p99s)))
	return s, true
}

// median returns the median of xs (the mean of the middle two of an even count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func durations(ds []time.Duration) []float64 {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return xs
}
