package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"

	"github.com/keyward/keyward/internal/benchstat"
)

// workerEnv holds the job of a worker process: the benchmark program runs itself as a worker for every
// measurement, so that each library runs in fresh processes of its own, and a contended scenario in as many
// processes as it says.
const workerEnv = "KEYWARD_BENCH_WORKER"

// grace is how long the waits still going on at the end of a contended run may go on (see benchstat.Workload).
const grace = time.Second

// job is what one worker process does.
type job struct {
	Library string   `json:"library"`
	Addrs   []string `json:"addrs"`
	Key     string   `json:"key"`
	// Pairs > 0: measure that many uncontended acquire+release pairs, each after a PING.
	Pairs int `json:"pairs,omitempty"`
	// Otherwise run a contended workload, checked by the guard in GuardFile (shared by all workers of a run).
	Goroutines  int           `json:"goroutines,omitempty"`
	Hold        time.Duration `json:"hold,omitempty"`
	Think       time.Duration `json:"think,omitempty"`
	FirstHolder int           `json:"first_holder,omitempty"`
	GuardFile   string        `json:"guard_file,omitempty"`
	// CPUProfile, when set, is the file the worker writes a CPU profile of its measured part to.
	CPUProfile string `json:"cpu_profile,omitempty"`
	// Kind, when set, is a load of fresh keys instead: kindSaturation takes and releases fresh keys with
	// Goroutines goroutines until the end; kindMemory takes and releases each of Names fresh names once, for TTL,
	// with Goroutines goroutines.
	Kind  string        `json:"kind,omitempty"`
	Names int           `json:"names,omitempty"`
	TTL   time.Duration `json:"ttl,omitempty"`
	// Interleave, when set, replaces Library and Addrs: the worker measures Pairs rounds of uncontended pairs of
	// every one of these libraries, one pair each per round in a new random order, so that all of them meet the
	// machine in the same states.
	Interleave []member `json:"interleave,omitempty"`
}

// member is one library of an interleaved job, with the servers it locks on.
type member struct {
	Library string   `json:"library"`
	Addrs   []string `json:"addrs"`
}

// memberResult is what an interleaved job measured for one library.
type memberResult struct {
	Pings []time.Duration `json:"pings"`
	Pairs []time.Duration `json:"pairs"`
}

// The conversation on a worker's stdin and stdout, one JSON value each: the worker says it is ready (connected and
// warmed up), the parent says when to start and end (CLOCK_MONOTONIC ns), the worker answers with its result,
// and exits when its stdin closes (after the parent read the servers' counters).
type (
	readyMsg struct {
		Ready bool   `json:"ready"`
		Err   string `json:"err,omitempty"`
		// FailedMember is, when an interleaved job failed, the library that failed: its index in Interleave + 1.
		FailedMember int `json:"failed_member,omitempty"`
	}
	goMsg struct {
		Start int64 `json:"start"`
		End   int64 `json:"end"`
	}
	result struct {
		Err string `json:"err,omitempty"`
		// Uncontended.
		Pings []time.Duration `json:"pings,omitempty"`
		Pairs []time.Duration `json:"pairs,omitempty"`
		// Contended: spans as {acquired, releasing, released, holder}, times in CLOCK_MONOTONIC ns.
		Spans      [][4]int64      `json:"spans,omitempty"`
		Waits      []time.Duration `json:"waits,omitempty"`
		Unfinished []time.Duration `json:"unfinished,omitempty"`
		PerHolder  map[int]int64   `json:"per_holder,omitempty"`
		Discarded  int64           `json:"discarded,omitempty"`
		// FailedTries is -1 when the library does not count them.
		FailedTries int64 `json:"failed_tries"`
		GaveUp      int64 `json:"gave_up"`
		// Members are an interleaved job's results, in the order of its Interleave; FailedMember is as in
		// readyMsg.
		Members      []memberResult `json:"members,omitempty"`
		FailedMember int            `json:"failed_member,omitempty"`
		// A load's (job.Kind): the pairs it completed, how long from the start until its last release returned,
		// and the pairs' latency quantiles.
		Done    int64         `json:"done,omitempty"`
		Took    time.Duration `json:"took,omitempty"`
		PairP50 time.Duration `json:"pair_p50,omitempty"`
		PairP99 time.Duration `json:"pair_p99,omitempty"`
		// Retried counts the tries of a load that failed (see failedInARow and tryAgain).
		Retried int64 `json:"retried,omitempty"`
		// Admissions are a rate-limit job's (kindRateLimit).
		Admissions []admission `json:"admissions,omitempty"`
	}
)

// worker runs the job in the environment and returns the process's exit code.
func worker(spec string) int {
	var j job
	out := json.NewEncoder(os.Stdout)
	in := json.NewDecoder(bufio.NewReader(os.Stdin))
	if err := json.Unmarshal([]byte(spec), &j); err != nil {
		_ = out.Encode(readyMsg{Err: err.Error()})
		return 2
	}
	if j.Kind == kindRateLimit {
		return rateWorker(j, out, in)
	}
	if j.Kind != "" {
		return loadWorker(j, out, in)
	}
	res, err := runJob(j, out, in)
	if err != nil {
		res.Err = err.Error()
	}
	if err := out.Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	// Stay connected until the parent has read the servers' counters: closing the clients is not part of the
	// measurement.
	var done struct{}
	_ = in.Decode(&done)
	return 0
}

func runJob(j job, out *json.Encoder, in *json.Decoder) (res result, err error) {
	res.FailedTries = -1
	if len(j.Interleave) > 0 {
		err = interleaved(j, out, in, &res)
		return res, err
	}
	lib, ok := libraryNamed(j.Library)
	if !ok {
		return res, fmt.Errorf("no library %q", j.Library)
	}
	l, err := lib.Open(j.Addrs)
	if err != nil {
		return res, err
	}
	defer l.Close()
	ping := goredisClient(j.Addrs[0])
	defer ping.Close()

	ctx := context.Background()
	if err := warmUp(ctx, l, ping, j.Key); err != nil {
		return res, err
	}
	if r, ok := l.(interface{ resetCounts() }); ok {
		r.resetCounts()
	}
	clock, err := benchstat.NewClock()
	if err != nil {
		return res, err
	}
	var guard *benchstat.Guard
	if j.Pairs == 0 {
		mem, err := mapGuard(j.GuardFile)
		if err != nil {
			return res, err
		}
		defer unix.Munmap(mem)
		if guard, err = benchstat.NewGuard(mem); err != nil {
			return res, err
		}
	}

	start, end, stop, err := readyThenGo(out, in, j.CPUProfile)
	if err != nil {
		return res, err
	}
	defer stop()

	defer func() {
		if n, ok := l.FailedTries(); ok {
			res.FailedTries = n
		}
		res.GaveUp = l.GaveUp()
	}()
	if j.Pairs > 0 {
		time.Sleep(clock.Until(start))
		err = uncontended(ctx, j, l, ping, &res)
		return res, err
	}
	w := benchstat.Workload{Goroutines: j.Goroutines, Hold: j.Hold, Think: j.Think, Start: start, End: end,
		Grace: grace, FirstHolder: j.FirstHolder}
	a, err := w.Run(clock, guard, func(ctx context.Context) (func(context.Context) error, error) {
		return l.Obtain(ctx, j.Key)
	})
	for _, s := range a.Spans {
		res.Spans = append(res.Spans, [4]int64{s.Acquired.UnixNano(), s.Releasing.UnixNano(), s.Released.UnixNano(), int64(s.Holder)})
	}
	res.Waits, res.Unfinished, res.PerHolder, res.Discarded = a.Waits, a.Unfinished, a.PerHolder, a.Discarded
	return res, err
}

// profile starts a CPU profile into path, if path is not "", and returns the function that stops it.
func profile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, errors.Join(err, f.Close())
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

// readyThenGo tells the parent the worker is ready, and returns when to start and end, with a CPU profile into
// cpuProfile started (none for "") and the function that stops it.
func readyThenGo(out *json.Encoder, in *json.Decoder, cpuProfile string) (start, end time.Time, stop func(), err error) {
	var g goMsg
	if err := out.Encode(readyMsg{Ready: true}); err != nil {
		return start, end, nil, err
	}
	if err := in.Decode(&g); err != nil {
		return start, end, nil, fmt.Errorf("waiting for the start: %w", err)
	}
	stop, err = profile(cpuProfile)
	return time.Unix(0, g.Start), time.Unix(0, g.End), stop, err
}

// warmUp dials the connections and loads the scripts, on a key of its own.
func warmUp(ctx context.Context, l locker, ping *redis.Client, key string) error {
	for range 20 {
		if err := ping.Ping(ctx).Err(); err != nil {
			return err
		}
		release, err := l.Obtain(ctx, key+":warm-up")
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		if err := release(ctx); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	return nil
}

// uncontended measures acquire+release pairs on a free lock, each after a PING, so both see the same machine.
func uncontended(ctx context.Context, j job, l locker, ping *redis.Client, res *result) error {
	res.Pings = make([]time.Duration, 0, j.Pairs)
	res.Pairs = make([]time.Duration, 0, j.Pairs)
	for range j.Pairs {
		p, pair, err := onePair(ctx, l, ping, j.Key)
		if err != nil {
			return err
		}
		res.Pings, res.Pairs = append(res.Pings, p), append(res.Pairs, pair)
	}
	return nil
}

// onePair times a PING, then an acquire+release pair on a free lock.
func onePair(ctx context.Context, l locker, ping *redis.Client, key string) (time.Duration, time.Duration, error) {
	t0 := time.Now()
	if err := ping.Ping(ctx).Err(); err != nil {
		return 0, 0, err
	}
	p := time.Since(t0)
	t0 = time.Now()
	release, err := l.Obtain(ctx, key)
	if err != nil {
		return 0, 0, err
	}
	if err := release(ctx); err != nil {
		return 0, 0, err
	}
	return p, time.Since(t0), nil
}

// interleaved runs an interleaved job (see job.Interleave): every library in the same worker, one uncontended
// pair each per round, in a new random order every round.
func interleaved(j job, out *json.Encoder, in *json.Decoder, res *result) error {
	ctx := context.Background()
	type open struct {
		l    locker
		ping *redis.Client
	}
	members := make([]open, 0, len(j.Interleave))
	defer func() {
		for _, m := range members {
			_ = m.l.Close()
			_ = m.ping.Close()
		}
	}()
	for i, m := range j.Interleave {
		lib, ok := libraryNamed(m.Library)
		if !ok {
			return fmt.Errorf("no library %q", m.Library)
		}
		l, err := lib.Open(m.Addrs)
		if err != nil {
			res.FailedMember = i + 1
			return fmt.Errorf("%s: %w", m.Library, err)
		}
		members = append(members, open{l: l, ping: goredisClient(m.Addrs[0])})
		if err := warmUp(ctx, l, members[i].ping, memberKey(j.Key, i)); err != nil {
			res.FailedMember = i + 1
			return fmt.Errorf("%s: %w", m.Library, err)
		}
	}
	clock, err := benchstat.NewClock()
	if err != nil {
		return err
	}
	start, _, stop, err := readyThenGo(out, in, "")
	if err != nil {
		return err
	}
	defer stop()
	time.Sleep(clock.Until(start))
	res.Members = make([]memberResult, len(members))
	for i := range res.Members {
		res.Members[i] = memberResult{Pings: make([]time.Duration, 0, j.Pairs), Pairs: make([]time.Duration, 0, j.Pairs)}
	}
	for range j.Pairs {
		for _, i := range rand.Perm(len(members)) {
			p, pair, err := onePair(ctx, members[i].l, members[i].ping, memberKey(j.Key, i))
			if err != nil {
				res.FailedMember = i + 1
				return fmt.Errorf("%s: %w", j.Interleave[i].Library, err)
			}
			r := &res.Members[i]
			r.Pings, r.Pairs = append(r.Pings, p), append(r.Pairs, pair)
		}
	}
	return nil
}

// memberKey is the lock key of the i-th library of an interleaved job: each its own, on servers they share.
func memberKey(key string, i int) string { return fmt.Sprintf("%s:%d", key, i) }

// mapGuard maps the guard file shared by the workers of a run.
func mapGuard(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, benchstat.GuardSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, errors.Join(errors.New("mapping the guard"), err)
	}
	return mem, nil
}
