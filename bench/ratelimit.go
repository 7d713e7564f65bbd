package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/benchstat"
	"github.com/keyward/keyward/internal/slot"
	"github.com/keyward/keyward/ratelimit"
)

// The rate-limit scenario: rateProcesses worker processes × rateGoroutines goroutines ask for as many
// admissions as they can against one limit of rateLimit a second (bursts of rateBurst), for a fixed time, with
// keyward's ratelimit and with github.com/go-redis/redis_rate as its users write it (Allow, and a sleep of
// RetryAfter when refused).
const (
	kindRateLimit  = "ratelimit"
	rateProcesses  = 4
	rateGoroutines = 8
	rateLimit      = 1000
	rateBurst      = 1000
	// rateGrace is how long the calls still going on at the end may go on: their admissions count for the costs
	// per admission, not for the rate.
	rateGrace = time.Second
	// rateSteady is when the steady state starts: the busiest 1 s window from then on is reported too.
	rateSteady = 2 * time.Second
)

// A rateContender is a row of the rate-limit table.
type rateContender struct {
	Name, Setup string
	Keyward     bool
	// Open returns one process's admit function on key: it returns once one event may happen, or an error
	// (ctx ended, or the library failed), and how long after the time the server gave the event it returned
	// (-1: the library's answer carries no time).
	Open func(rdb *redis.Client, key string) (admitFunc, error)
}

// An admitFunc returns once one event may happen (see rateContender.Open).
type admitFunc func(ctx context.Context) (late time.Duration, err error)

// rateContenders are the rows of the rate-limit table, keyward's first.
var rateContenders = []rateContender{
	{
		Name: "keyward ratelimit", Keyward: true,
		Setup: fmt.Sprintf("`ratelimit.New(rdb, key, ratelimit.PerSecond(%d))`, `Wait(ctx)`", rateLimit),
		Open: func(rdb *redis.Client, key string) (admitFunc, error) {
			l, err := ratelimit.New(rdb, key, ratelimit.PerSecond(rateLimit).WithBurst(rateBurst))
			if err != nil {
				return nil, err
			}
			return func(ctx context.Context) (time.Duration, error) {
				// The server's time for the turn (µs of its wall clock, which is this machine's), through the hook
				// the library's tests use; Wait returns after it.
				var at int64
				err := l.Wait(slot.With(ctx, func(_ int, a, _, _ int64) { at = a }))
				return time.Duration(time.Now().UnixMicro()-at) * time.Microsecond, err
			}, nil
		},
	},
	{
		Name: "redis_rate",
		Setup: fmt.Sprintf("`redis_rate.NewLimiter(rdb).Allow(ctx, key, redis_rate.PerSecond(%d))`, and when refused "+
			"a sleep of `RetryAfter` before the next Allow", rateLimit),
		Open: func(rdb *redis.Client, key string) (admitFunc, error) {
			l := redis_rate.NewLimiter(rdb)
			limit := redis_rate.PerSecond(rateLimit)
			limit.Burst = rateBurst
			return func(ctx context.Context) (time.Duration, error) {
				for {
					res, err := l.Allow(ctx, key, limit)
					if err != nil {
						return -1, err
					}
					if res.Allowed > 0 {
						return -1, nil
					}
					t := time.NewTimer(res.RetryAfter)
					select {
					case <-ctx.Done():
						t.Stop()
						return -1, ctx.Err()
					case <-t.C:
					}
				}
			}, nil
		},
	},
}

// rateContenderNamed returns the contender of that name.
func rateContenderNamed(name string) (rateContender, bool) {
	for _, c := range rateContenders {
		if c.Name == name {
			return c, true
		}
	}
	return rateContender{}, false
}

// An admission is one event let through: when the call returned (CLOCK_MONOTONIC ns, shared by the processes), by
// which goroutine of the run, how long it waited (from the call to its return, sleeps and retries included), and
// how long after the time the server gave it the call returned (-1: unknown).
type admission struct {
	At        int64         `json:"at"`
	Goroutine int           `json:"g"`
	Wait      time.Duration `json:"wait"`
	Late      time.Duration `json:"late"`
}

// rateWorker is the worker process of the rate-limit scenario: Goroutines goroutines admit as many events as
// they can from the start to the end the parent gives (a call still waiting then may finish within rateGrace).
func rateWorker(j job, out *json.Encoder, in *json.Decoder) int {
	var res result
	rdb := goredisClient(j.Addrs[0])
	defer rdb.Close()
	if err := rateLoad(j, rdb, out, in, &res); err != nil {
		res.Err = err.Error()
	}
	if err := out.Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var done struct{}
	_ = in.Decode(&done) // the parent has read the server's counters
	return 0
}

func rateLoad(j job, rdb *redis.Client, out *json.Encoder, in *json.Decoder, res *result) error {
	c, ok := rateContenderNamed(j.Library)
	if !ok {
		return fmt.Errorf("no rate limiter %q", j.Library)
	}
	admit, err := c.Open(rdb, j.Key)
	if err != nil {
		return err
	}
	warm, err := c.Open(rdb, j.Key+":warm-up")
	if err != nil {
		return err
	}
	// Dials a connection per goroutine and loads the script, on a key of its own.
	ctx := context.Background()
	if err := inGoroutines(ctx, j.Goroutines, func(int, func() bool) error { _, err := warm(ctx); return err }); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	clock, err := benchstat.NewClock()
	if err != nil {
		return err
	}
	start, end, stop, err := readyThenGo(out, in, j.CPUProfile)
	if err != nil {
		return err
	}
	defer stop()
	time.Sleep(clock.Until(start))
	res.Admissions, err = admitUntil(ctx, clock, admit, j.Goroutines, j.FirstHolder, end)
	return err
}

// admitUntil runs admit in goroutines (numbered from first) until end (on clock) and returns the admissions;
// calls still waiting at the end may finish within rateGrace.
func admitUntil(ctx context.Context, clock *benchstat.Clock, admit admitFunc, goroutines, first int,
	end time.Time) ([]admission, error) {
	runCtx, cancel := context.WithTimeout(ctx, clock.Until(end.Add(rateGrace)))
	defer cancel()
	per := make([][]admission, goroutines)
	err := inGoroutines(ctx, goroutines, func(g int, stop func() bool) error {
		for !stop() && clock.Now().Before(end) {
			t0 := clock.Now()
			late, err := admit(runCtx)
			if err != nil {
				if runCtx.Err() != nil {
					return nil // the grace ran out: this call is not an admission
				}
				return err
			}
			now := clock.Now()
			per[g] = append(per[g], admission{At: now.UnixNano(), Goroutine: first + g, Wait: now.Sub(t0), Late: late})
		}
		return nil
	})
	return slices.Concat(per...), err
}

// A rateRun is one run of the rate-limit scenario for one contender.
type rateRun struct {
	Contender rateContender
	Round     int
	Duration  time.Duration
	// Admissions of every process, in order of time; Start and End bound the run (CLOCK_MONOTONIC ns).
	Admissions []admission
	Start, End int64
	// Cost is the server's work from before the start until every process answered.
	Cost benchstat.ServerCost
	Err  string
}

// InRun returns the admissions between the start and the end.
func (r rateRun) InRun() []admission {
	var in []admission
	for _, a := range r.Admissions {
		if a.At >= r.Start && a.At <= r.End {
			in = append(in, a)
		}
	}
	return in
}

// Rate is the admissions per second of the run.
func (r rateRun) Rate() float64 { return float64(len(r.InRun())) / r.Duration.Seconds() }

// Bound is the most admissions the limit allows in the run, from an idle limiter: burst + rate × duration.
func (r rateRun) Bound() float64 { return rateBurst + rateLimit*r.Duration.Seconds() }

// OfBound is the admissions of the run as a share of Bound.
func (r rateRun) OfBound() float64 { return float64(len(r.InRun())) / r.Bound() }

// CallsPerAdmission is the calls the clients made to Redis per admission, the grace's included: every call of
// both libraries is one script (EVALSHA, or EVAL when the server did not have it), counted by INFO commandstats.
func (r rateRun) CallsPerAdmission() float64 {
	return float64(r.Cost.Scripts()) / float64(max(len(r.Admissions), 1))
}

// CommandsPerAdmission is every command the server ran per admission, those the scripts ran included.
func (r rateRun) CommandsPerAdmission() float64 {
	return float64(r.Cost.Commands()) / float64(max(len(r.Admissions), 1))
}

// CPUPerAdmission is the server's CPU time per admission, in µs.
func (r rateRun) CPUPerAdmission() float64 {
	return float64(r.Cost.CPU.Nanoseconds()) / 1000 / float64(max(len(r.Admissions), 1))
}

// Jain is Jain's index of the admissions of the run per goroutine, every goroutine of every process counted.
func (r rateRun) Jain() float64 {
	shares := make([]int64, rateProcesses*rateGoroutines)
	for _, a := range r.InRun() {
		if a.Goroutine < len(shares) {
			shares[a.Goroutine]++
		}
	}
	return benchstat.Jain(shares)
}

// Busiest returns the most admissions in a window of one second, [t, t + 1 s), among the windows that start at an
// admission from from on (ns), by the times the calls returned.
func (r rateRun) Busiest(from int64) int {
	ats := make([]int64, 0, len(r.Admissions))
	for _, a := range r.Admissions {
		ats = append(ats, a.At)
	}
	return busiest(ats, from)
}

// Granted says whether the run knows the times the server gave its admissions (keyward's does).
func (r rateRun) Granted() bool {
	for _, a := range r.Admissions {
		if a.Late < 0 {
			return false
		}
	}
	return len(r.Admissions) > 0
}

// BusiestGranted is Busiest by the times the server gave the admissions: the times the bound is stated on.
func (r rateRun) BusiestGranted() int {
	ats := make([]int64, 0, len(r.Admissions))
	for _, a := range r.Admissions {
		ats = append(ats, a.At-int64(a.Late))
	}
	return busiest(ats, r.Start-int64(time.Second))
}

// busiest returns the most of ats in a window [t, t + 1 s) that starts at one of them from from on.
func busiest(ats []int64, from int64) int {
	slices.Sort(ats)
	most, j := 0, 0
	for i, at := range ats {
		if at < from {
			continue
		}
		if j < i {
			j = i
		}
		for j < len(ats) && ats[j] < at+int64(time.Second) {
			j++
		}
		most = max(most, j-i)
	}
	return most
}

// Excess is the most admissions of a 1 s window beyond the limit's bound for it (burst + rate × 1 s), by the times
// the calls returned; 0 when none.
func (r rateRun) Excess() int { return max(0, r.Busiest(r.Start)-rateBurst-rateLimit) }

// ExcessGranted is Excess by the times the server gave the admissions, when known ("—" otherwise).
func (r rateRun) ExcessGranted() string {
	if !r.Granted() {
		return "—"
	}
	return fmt.Sprint(max(0, r.BusiestGranted()-rateBurst-rateLimit))
}

// Steady is the busiest 1 s window from rateSteady on.
func (r rateRun) Steady() int { return r.Busiest(r.Start + int64(rateSteady)) }

// Waits returns the waits of the admissions of the run.
func (r rateRun) Waits() []time.Duration {
	var ws []time.Duration
	for _, a := range r.InRun() {
		ws = append(ws, a.Wait)
	}
	return ws
}

func (r rateRun) progress() string {
	if r.Err != "" {
		return "ERROR " + r.Err
	}
	ws := r.Waits()
	return fmt.Sprintf("%6.0f admitted/s (%.1f %% of the bound)  %.3f calls/admission  Jain %.3f  busiest 1 s %d (excess %d; by the server's times %s; from %v on %d)  wait p50 %v p99 %v",
		r.Rate(), 100*r.OfBound(), r.CallsPerAdmission(), r.Jain(), r.Busiest(r.Start), r.Excess(), r.ExcessGranted(), rateSteady, r.Steady(),
		benchstat.Quantile(ws, 0.5).Round(time.Microsecond), benchstat.Quantile(ws, 0.99).Round(time.Microsecond))
}

// rateLimits runs the rate-limit scenario: cfg.rateLimitRuns rounds, every contender once per round in the same
// order, each on a flushed server. A contender that fails is reported, and the rounds go on.
func rateLimits(ctx context.Context, r *rig, cfg config, errs *[]string) []rateRun {
	var runs []rateRun
	for round := 1; round <= cfg.rateLimitRuns; round++ {
		for _, c := range rateContenders {
			if cfg.only != nil && !cfg.only.MatchString(c.Name) {
				continue
			}
			run, err := r.rateLimit(ctx, c, round, cfg.rateLimit)
			if err != nil {
				run.Err = err.Error()
				*errs = append(*errs, fmt.Sprintf("%s, rate limit run %d: %s", c.Name, round, err))
			}
			fmt.Fprintf(os.Stderr, "%-18s %-12s %s\n", c.Name, fmt.Sprintf("ratelimit %d", round), run.progress())
			runs = append(runs, run)
		}
	}
	return runs
}

// rateLimit runs one contender once: rateProcesses workers of rateGoroutines goroutines for d.
func (r *rig) rateLimit(ctx context.Context, c rateContender, round int, d time.Duration) (rateRun, error) {
	run := rateRun{Contender: c, Round: round, Duration: d}
	addrs, admins, err := r.flushed(ctx, []int{0})
	if err != nil {
		return run, err
	}
	var ws []*workerProc
	defer func() {
		for _, w := range ws {
			w.kill()
		}
	}()
	for p := range rateProcesses {
		w, err := r.start(job{Kind: kindRateLimit, Library: c.Name, Addrs: addrs, Key: "bench:rate",
			Goroutines: rateGoroutines, FirstHolder: p * rateGoroutines})
		if err != nil {
			return run, err
		}
		ws = append(ws, w)
	}
	// A worker that hangs must not hang the benchmark.
	watchdog := time.AfterFunc(d+time.Minute, func() {
		for _, w := range ws {
			_ = w.cmd.Process.Kill()
		}
	})
	defer watchdog.Stop()
	for _, w := range ws {
		if err := w.ready(); err != nil {
			return run, err
		}
	}
	before, err := snapshot(ctx, admins)
	if err != nil {
		return run, err
	}
	start := r.clock.Now().Add(100 * time.Millisecond)
	end := start.Add(d)
	run.Start, run.End = start.UnixNano(), end.UnixNano()
	for _, w := range ws {
		if err := w.in.Encode(goMsg{Start: start.UnixNano(), End: end.UnixNano()}); err != nil {
			return run, w.fail("start", err, "")
		}
	}
	var failures []error
	for _, w := range ws {
		var res result
		if err := w.out.Decode(&res); err != nil || res.Err != "" {
			failures = append(failures, w.fail("run", err, res.Err))
			continue
		}
		run.Admissions = append(run.Admissions, res.Admissions...)
	}
	if err := errors.Join(failures...); err != nil {
		return run, err
	}
	after, err := snapshot(ctx, admins)
	if err != nil {
		return run, err
	}
	for _, w := range ws {
		if err := w.finish(); err != nil {
			return run, err
		}
	}
	run.Cost = after.Since(before)
	slices.SortFunc(run.Admissions, func(a, b admission) int { return int(a.At - b.At) })
	return run, nil
}

// rateGoals are the goals for keyward's rate limiter.
const (
	goalRateOfBound = 0.99
	goalRateCalls   = 1.05
	goalRateJain    = 0.95
)

// rateTitle and rateTable show the rate-limit runs.
func (r report) rateTitle() string {
	return fmt.Sprintf("Rate limit: %d processes × %d goroutines asking for as many admissions as they can against %d/s (burst %d), %v per run, %d runs per library in rounds",
		rateProcesses, rateGoroutines, rateLimit, rateBurst, r.Config.rateLimit, r.Config.rateLimitRuns)
}

func (r report) rateTable(b *strings.Builder) {
	row(b, "library", "run", "admitted/s", "of the bound", "Redis calls/admission", "commands/admission", "Redis CPU µs/admission",
		"Jain across goroutines", "busiest 1 s window", "excess over burst + rate", "excess, by the server's times",
		fmt.Sprintf("busiest 1 s from %v on", rateSteady), "wait p50", "wait p99", "wait max")
	row(b, "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:")
	for _, run := range r.RateLimit {
		if run.Err != "" {
			continue
		}
		label := bold(run.Contender.Name, run.Contender.Keyward)
		ws := run.Waits()
		row(b, label, fmt.Sprint(run.Round), fmt.Sprintf("%.0f", run.Rate()), fmt.Sprintf("%.1f %%", 100*run.OfBound()),
			fmt.Sprintf("%.3f", run.CallsPerAdmission()), fmt.Sprintf("%.2f", run.CommandsPerAdmission()),
			fmt.Sprintf("%.1f", run.CPUPerAdmission()), fmt.Sprintf("%.3f", run.Jain()),
			fmt.Sprint(run.Busiest(run.Start)), fmt.Sprint(run.Excess()), run.ExcessGranted(), fmt.Sprint(run.Steady()),
			human(benchstat.Quantile(ws, 0.5)), human(benchstat.Quantile(ws, 0.99)), human(slices.Max(append(ws, 0))))
	}
	fmt.Fprintf(b, "\n*Of the bound*: admissions in the run over burst + rate × duration, the most a limit allows from an idle "+
		"limiter. *Redis calls*: the scripts the server ran (INFO commandstats: every call of both libraries is one script), the "+
		"grace period's included; *commands* adds those the scripts ran (TIME, GET, SET). *Busiest "+
		"1 s window*: the most admissions whose call returned within one second, [t, t + 1 s), across the processes "+
		"(CLOCK_MONOTONIC); the limit allows burst + rate = %d there. A call returns a little after the limiter let it "+
		"through (the answer's way back, the scheduler, a stalled process), so a window of return times can catch one "+
		"that was let through just before it: *by the server's times* counts the windows on the times the server "+
		"gave (keyward's Wait returns after its turn's time; redis_rate's answer carries no time). *Wait*: from the "+
		"call to its return, retries and sleeps included.\n\nLibraries: %s.\n", rateBurst+rateLimit, rateSetups())
}

func rateSetups() string {
	var parts []string
	for _, c := range rateContenders {
		parts = append(parts, fmt.Sprintf("%s (%s): %s", c.Name, rateModuleOf(c), c.Setup))
	}
	return strings.Join(parts, "; ")
}

// rateModuleOf names the module and version a contender runs.
func rateModuleOf(c rateContender) string {
	if c.Keyward {
		return "github.com/keyward/keyward (this tree)"
	}
	return moduleOf(library{Name: c.Name})
}

// rateGoalRows writes the goals of the rate limiter: each holds in every run of keyward's.
func (r report) rateGoalRows(b *strings.Builder) {
	var kw, anchor []rateRun
	for _, run := range r.RateLimit {
		if run.Err != "" {
			continue
		}
		if run.Contender.Keyward {
			kw = append(kw, run)
		} else {
			anchor = append(anchor, run)
		}
	}
	show := func(runs []rateRun, f func(rateRun) string) string {
		var parts []string
		for _, run := range runs {
			parts = append(parts, f(run))
		}
		if len(parts) == 0 {
			return "—"
		}
		return strings.Join(parts, ", ")
	}
	all := func(f func(rateRun) bool) string {
		if len(kw) == 0 {
			return "—"
		}
		for _, run := range kw {
			if !f(run) {
				return "**no**"
			}
		}
		return "yes"
	}
	name := "redis_rate "
	for _, g := range []struct {
		goal string
		show func(rateRun) string
		met  func(rateRun) bool
	}{
		{fmt.Sprintf("6. Rate limit: admitted ≥ %.0f %% of the bound (burst + rate × duration)", 100*goalRateOfBound),
			func(run rateRun) string { return fmt.Sprintf("%.1f %%", 100*run.OfBound()) },
			func(run rateRun) bool { return run.OfBound() >= goalRateOfBound }},
		{fmt.Sprintf("6. Rate limit: Redis calls per admission ≤ %.2f", goalRateCalls),
			func(run rateRun) string { return fmt.Sprintf("%.3f", run.CallsPerAdmission()) },
			func(run rateRun) bool { return run.CallsPerAdmission() <= goalRateCalls }},
		{fmt.Sprintf("6. Rate limit: Jain's index across the goroutines ≥ %.2f", goalRateJain),
			func(run rateRun) string { return fmt.Sprintf("%.3f", run.Jain()) },
			func(run rateRun) bool { return run.Jain() >= goalRateJain }},
		{"6. Rate limit: no 1 s window beyond burst + rate, by the server's times (by return times in parentheses)",
			func(run rateRun) string { return fmt.Sprintf("%s (%d)", run.ExcessGranted(), run.Excess()) },
			func(run rateRun) bool { return run.ExcessGranted() == "0" }},
	} {
		row(b, g.goal+fmt.Sprintf(" (%d×%d, every run)", rateProcesses, rateGoroutines), show(kw, g.show), name+show(anchor, g.show), all(g.met))
	}
}
