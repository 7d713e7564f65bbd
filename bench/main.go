// Command bench measures keyward's locks against the libraries a Go user would pick instead — redsync,
// bsm/redislock and rueidislock — on the same machine, in the same run, and reports them side by side, in units
// of a PING round trip measured in that run (absolute times on shared machines drift between runs).
//
// It starts its own redis-server processes (one, three for Redlock, two more for the memory scenario) on free
// loopback ports, and runs every measurement in fresh worker processes: itself, started again with a job in the
// environment. A contended run with four processes is four real processes, whose spans are put in one order by
// CLOCK_MONOTONIC.
//
//	cd bench && go run .              # tables on stdout (about 4 minutes after the build)
//	cd bench && go run . -write-docs  # and docs/BENCHMARKS.md, docs/bench.png, the README's performance section
//
// A run whose critical sections overlapped, or lost an update to a counter guarded by the lock, fails. A
// library that returns an error is reported and left out of the tables.
//
// Besides the latency and contention scenarios, two measure what a lock costs Redis without contention:
// saturation (-saturation, -saturation-goroutines, -saturation-runs: goroutines taking and releasing fresh keys,
// Redis CPU and commands per pair) and memory (-names: names each locked once, and the keys and memory the
// server still holds 2 × ttl later). 0 skips either. One more compares keyward's rate limiter with
// github.com/go-redis/redis_rate (-ratelimit, -ratelimit-runs: 4 processes × 8 goroutines against 1000/s).
//
// For a closer look at one library: -only and -scenarios pick rows and scenarios (regular expressions),
// -cpuprofile DIR writes each worker's CPU profile of its measured part, -dump DIR writes every contended run's
// spans as CSV and the servers' command counts.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/keyward/keyward/internal/benchstat"
)

// config is the command line.
type config struct {
	contended time.Duration // length of each one-process contended run
	realistic time.Duration // length of the realistic run
	pairs     int           // uncontended acquire+release pairs per library
	writeDocs bool
	docs      string         // the docs directory
	only      *regexp.Regexp // libraries to run (nil: all)
	scenarios *regexp.Regexp // scenarios to run (nil: all)
	profiles  string         // directory for the workers' CPU profiles, or ""
	dump      string         // directory for the spans of every contended run, as CSV, or ""

	// saturation is the length of each saturation run (0: none), by saturationGoroutines goroutines, in
	// saturationRuns rounds.
	saturation           time.Duration
	saturationGoroutines int
	saturationRuns       int
	// names is how many distinct names the memory scenario locks once each (0: none).
	names int
	// rateLimit is the length of each run of the rate-limit scenario (0: none), in rateLimitRuns rounds.
	rateLimit     time.Duration
	rateLimitRuns int
}

func main() {
	if spec := os.Getenv(workerEnv); spec != "" {
		os.Exit(worker(spec))
	}
	var cfg config
	var only, scens string
	flag.DurationVar(&cfg.contended, "contended", 3*time.Second, "length of each one-process contended run")
	flag.DurationVar(&cfg.realistic, "realistic", 5*time.Second, "length of the realistic (4 processes × 4 goroutines) run")
	flag.IntVar(&cfg.pairs, "pairs", 2000, "uncontended acquire+release pairs per library")
	flag.DurationVar(&cfg.saturation, "saturation", 4*time.Second, "length of each saturation run: goroutines taking and releasing fresh keys (0: skip the scenario)")
	flag.IntVar(&cfg.saturationGoroutines, "saturation-goroutines", 32, "goroutines of the saturation scenario, in one process")
	flag.IntVar(&cfg.saturationRuns, "saturation-runs", 2, "saturation runs per library, in rounds (A B C D A B C D)")
	flag.IntVar(&cfg.names, "names", 100000, "distinct names the memory scenario locks and releases once each (0: skip the scenario)")
	flag.DurationVar(&cfg.rateLimit, "ratelimit", 10*time.Second, "length of each run of the rate-limit scenario: 4 processes × 8 goroutines against 1000/s, keyward's ratelimit and redis_rate (0: skip the scenario)")
	flag.IntVar(&cfg.rateLimitRuns, "ratelimit-runs", 2, "rate-limit runs per library, in rounds (A B A B)")
	flag.BoolVar(&cfg.writeDocs, "write-docs", false, "write BENCHMARKS.md and bench.png into -docs, and the performance section of the README beside it")
	flag.StringVar(&cfg.docs, "docs", "../docs", "the docs directory -write-docs writes to")
	flag.StringVar(&cfg.profiles, "cpuprofile", "", "write each worker's CPU profile of its measured part into this directory")
	flag.StringVar(&cfg.dump, "dump", "", "write the spans of every contended run into this directory, as CSV (for a closer look)")
	flag.StringVar(&only, "only", "", "run only the libraries whose name matches this regexp (docs are then not written)")
	flag.StringVar(&scens, "scenarios", "", "run only the scenarios whose name matches this regexp: uncontended, 1×2, 1×8, 1×32, 4×4, saturation, memory, ratelimit (docs are then not written)")
	flag.Parse()
	if cfg.saturation < 0 || cfg.names < 0 || cfg.rateLimit < 0 || cfg.saturationGoroutines < 1 || cfg.saturationRuns < 1 ||
		cfg.rateLimitRuns < 1 {
		fmt.Fprintln(os.Stderr, "bench: -saturation, -names and -ratelimit must not be negative, -saturation-goroutines, -saturation-runs and -ratelimit-runs must be at least 1")
		os.Exit(2)
	}
	for _, f := range []struct {
		expr string
		re   **regexp.Regexp
	}{{only, &cfg.only}, {scens, &cfg.scenarios}} {
		if f.expr == "" {
			continue
		}
		re, err := regexp.Compile(f.expr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		*f.re = re
	}
	if err := run(context.Background(), cfg, os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// libraryNamed returns the library of that name.
func libraryNamed(name string) (library, bool) {
	for _, l := range libraries() {
		if l.Name == name {
			return l, true
		}
	}
	return library{}, false
}

// command is how the program was run, for the docs.
func command(args []string) string {
	return "cd bench && go run . " + strings.Join(args[1:], " ")
}

// run measures every library in every scenario, prints the tables, and writes the docs when asked.
func run(ctx context.Context, cfg config, args []string) error {
	env := describeMachine()
	r, err := newRig()
	if err != nil {
		return err
	}
	defer r.Close()
	// On ^C, stop the servers and remove their directories before going; the kernel kills the workers
	// (Pdeathsig).
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(interrupted)
	go func() {
		if _, ok := <-interrupted; ok {
			_ = r.Close()
			os.Exit(130)
		}
	}()
	env.Redis = redisVersion(ctx, r.admins[0])

	var (
		results []measurement
		broken  []string
		errs    []string
		runs    int
	)
	began := time.Now()
	for _, lib := range libraries() {
		if cfg.only != nil && !cfg.only.MatchString(lib.Name) {
			continue
		}
		for _, sc := range scenarios(cfg) {
			if cfg.scenarios != nil && !cfg.scenarios.MatchString(sc.Name) {
				continue
			}
			runs++
			m, err := r.measure(ctx, lib, sc, cfg, fmt.Sprintf("bench:%d", runs))
			if err != nil {
				// A library that fails (an error from Obtain or Release) is reported in the tables; the run
				// goes on with the others.
				m = measurement{Library: lib, Scenario: sc, Err: err.Error()}
				errs = append(errs, lib.Name+", "+sc.Name+": "+err.Error())
			}
			fmt.Fprintf(os.Stderr, "%-16s %-12s %s\n", lib.Name, sc.Name, progress(m))
			if why := m.Failed(); why != "" {
				broken = append(broken, lib.Name+", "+sc.Name+": "+why)
			}
			results = append(results, m)
		}
	}
	errs = append(errs, interleaveUncontended(ctx, r, results, cfg.pairs)...)
	var sat []saturationRun
	if cfg.saturation > 0 && (cfg.scenarios == nil || cfg.scenarios.MatchString("saturation")) {
		sat = saturate(ctx, r, cfg, &errs)
	}
	var mem []memoryRun
	if cfg.names > 0 && (cfg.scenarios == nil || cfg.scenarios.MatchString("memory")) {
		mem = memory(ctx, r, cfg, &errs)
	}
	var rl []rateRun
	if cfg.rateLimit > 0 && (cfg.scenarios == nil || cfg.scenarios.MatchString("ratelimit")) {
		rl = rateLimits(ctx, r, cfg, &errs)
	}
	env.finish(began, command(args))

	rep := report{Env: env, Results: results, Scenarios: scenarios(cfg), Errors: errs, Pairs: cfg.pairs, Unit: unit(results),
		Saturation: sat, Memory: mem, RateLimit: rl, Config: cfg}
	fmt.Print(rep.Tables())
	if len(broken) > 0 {
		return fmt.Errorf("mutual exclusion violated:\n%s", strings.Join(broken, "\n"))
	}
	if cfg.writeDocs {
		if cfg.only != nil || cfg.scenarios != nil {
			return fmt.Errorf("-write-docs needs every library and scenario: drop -only and -scenarios")
		}
		return rep.WriteDocs(cfg.docs)
	}
	return nil
}

// interleaveUncontended measures the uncontended pairs once more, every library in one worker, round by round
// in a new random order each round, and puts those latencies in the results: measured one library after
// another, each library met the machine in a state of its own, and on a shared machine the PING round trip of
// one library's second can be half another's. The separate runs still give the command counts. A library that
// fails is reported and left out of the uncontended results (the interleaved run starts again without it). It
// returns the errors.
func interleaveUncontended(ctx context.Context, r *rig, results []measurement, pairs int) []string {
	var libs []library
	var at []int
	for i, m := range results {
		if m.Scenario.Processes == 0 && m.Err == "" {
			libs, at = append(libs, m.Library), append(at, i)
		}
	}
	var errs []string
	for len(libs) > 0 {
		members, err := r.interleave(ctx, libs, pairs)
		var mf *memberFailure
		if errors.As(err, &mf) && mf.Member < len(libs) {
			errs = append(errs, libs[mf.Member].Name+", uncontended (interleaved): "+err.Error())
			fmt.Fprintf(os.Stderr, "%-16s %-12s ERROR %s\n", libs[mf.Member].Name, "interleaved", err)
			results[at[mf.Member]].Err = "interleaved: " + err.Error()
			libs, at = slices.Delete(libs, mf.Member, mf.Member+1), slices.Delete(at, mf.Member, mf.Member+1)
			continue
		}
		if err != nil {
			return append(errs, "uncontended, interleaved: "+err.Error())
		}
		for k, mr := range members {
			m := &results[at[k]]
			m.Pings = mr.Pings
			m.Ping = benchstat.Quantile(mr.Pings, 0.5)
			m.P50, m.P99 = benchstat.Quantile(mr.Pairs, 0.5), benchstat.Quantile(mr.Pairs, 0.99)
			fmt.Fprintf(os.Stderr, "%-16s %-12s %s\n", m.Library.Name, "interleaved", progress(*m))
		}
		break
	}
	return errs
}
