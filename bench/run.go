package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"

	"github.com/keyward/keyward/internal/benchstat"
	"github.com/keyward/keyward/internal/redistest"
)

// A scenario is one column group of the report.
type scenario struct {
	Name string
	// Processes × Goroutines contend (0 processes: uncontended pairs).
	Processes, Goroutines int
	Hold, Think           time.Duration
	Duration              time.Duration
	// Realistic is the scenario the goals are set on.
	Realistic bool
}

func scenarios(cfg config) []scenario {
	return []scenario{
		{Name: "uncontended"},
		{Name: "1×2", Processes: 1, Goroutines: 2, Duration: cfg.contended},
		{Name: "1×8", Processes: 1, Goroutines: 8, Duration: cfg.contended},
		{Name: "1×32", Processes: 1, Goroutines: 32, Duration: cfg.contended},
		{Name: "4×4", Processes: 4, Goroutines: 4, Hold: 200 * time.Microsecond, Think: time.Millisecond,
			Duration: cfg.realistic, Realistic: true},
	}
}

// A measurement is one library in one scenario.
type measurement struct {
	Library  library
	Scenario scenario
	// Ping is the median PING round trip to the (first) server around this measurement, and Pings its samples:
	// from the worker, one before each pair, when uncontended; 100 just before and 100 just after a contended
	// run. The unit of the report is the median of every sample of the run (see report.Unit).
	Ping  time.Duration
	Pings []time.Duration
	// P50 and P99 are the uncontended acquire+release pair's.
	P50, P99 time.Duration
	// Summary, Waits and Unfinished are the contended run's.
	Summary    benchstat.Summary
	Waits      []time.Duration
	Unfinished []time.Duration
	// Acquired counts the acquisitions the servers saw during the measurement, for the costs per acquisition.
	Acquired int64
	// Cost is the servers' work during the measurement, summed over the nodes (PINGs of the uncontended
	// measurement taken off).
	Cost benchstat.ServerCost
	// FailedTries counts acquire attempts that found the lock taken; GaveUp the times the library stopped
	// waiting by itself and was called again.
	FailedTries, GaveUp int64
	// Overlaps (critical sections that overlapped, by the guard and by the spans) and LostUpdates must be 0.
	Overlaps, LostUpdates int64
	// Err is why the measurement could not be made (the library returned an error), or "".
	Err string
}

// Failed says why the measurement shows a broken lock, or "".
func (m measurement) Failed() string {
	if m.Overlaps > 0 || m.LostUpdates > 0 {
		return fmt.Sprintf("MUTUAL EXCLUSION VIOLATED: %d overlaps, %d lost updates", m.Overlaps, m.LostUpdates)
	}
	return ""
}

// rig is the servers of a run.
type rig struct {
	dir     string
	servers []*redistest.Server
	admins  []*redis.Client
	exe     string
	clock   *benchstat.Clock
}

func newRig() (*rig, error) {
	dir, err := os.MkdirTemp("", "keyward-bench-")
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	clock, err := benchstat.NewClock()
	if err != nil {
		return nil, err
	}
	// Server 0 is the single node; 1, 2 and 3 are the Redlock nodes; 4 and 5 are the single nodes of the memory
	// scenario's other libraries (see memory).
	servers, err := redistest.StartProcesses(dir, 6)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	r := &rig{dir: dir, servers: servers, exe: exe, clock: clock}
	for _, s := range servers {
		r.admins = append(r.admins, goredisClient(s.Addr()))
	}
	return r, nil
}

func (r *rig) Close() error {
	var err error
	for _, a := range r.admins {
		err = errors.Join(err, a.Close())
	}
	for _, s := range r.servers {
		err = errors.Join(err, s.Stop())
	}
	return errors.Join(err, os.RemoveAll(r.dir))
}

// nodes returns the servers a library locks on.
func (r *rig) nodes(lib library) []int {
	if lib.Nodes == 1 {
		return []int{0}
	}
	return []int{1, 2, 3}
}

// measure runs one library in one scenario.
func (r *rig) measure(ctx context.Context, lib library, sc scenario, cfg config, key string) (measurement, error) {
	pairs := cfg.pairs
	m := measurement{Library: lib, Scenario: sc, FailedTries: -1}
	nodes := r.nodes(lib)
	var addrs []string
	var admins []*redis.Client
	for _, i := range nodes {
		addrs = append(addrs, r.servers[i].Addr())
		admins = append(admins, r.admins[i])
		if err := r.admins[i].FlushAll(ctx).Err(); err != nil {
			return m, err
		}
	}

	guardFile := filepath.Join(r.dir, "guard")
	if err := os.WriteFile(guardFile, make([]byte, os.Getpagesize()), 0o600); err != nil {
		return m, err
	}
	mem, err := mapGuard(guardFile)
	if err != nil {
		return m, err
	}
	defer unix.Munmap(mem)
	guard, err := benchstat.NewGuard(mem)
	if err != nil {
		return m, err
	}

	var jobs []job
	if sc.Processes == 0 {
		jobs = []job{{Library: lib.Name, Addrs: addrs, Key: key, Pairs: pairs}}
	}
	for p := range sc.Processes {
		jobs = append(jobs, job{Library: lib.Name, Addrs: addrs, Key: key, Goroutines: sc.Goroutines,
			Hold: sc.Hold, Think: sc.Think, FirstHolder: p * sc.Goroutines, GuardFile: guardFile})
	}
	if cfg.profiles != "" {
		for i := range jobs {
			jobs[i].CPUProfile = filepath.Join(cfg.profiles, fileName(lib, sc, fmt.Sprintf("%d.pprof", i)))
		}
	}
	workers := make([]*workerProc, len(jobs))
	defer func() {
		for _, w := range workers {
			if w != nil {
				w.kill()
			}
		}
	}()
	for i, j := range jobs {
		if workers[i], err = r.start(j); err != nil {
			return m, err
		}
	}
	// A worker that hangs must not hang the benchmark.
	watchdog := time.AfterFunc(sc.Duration+grace+time.Duration(pairs)*5*time.Millisecond+30*time.Second, func() {
		for _, w := range workers {
			_ = w.cmd.Process.Kill() // safe while another goroutine waits for it; finish then fails
		}
	})
	defer watchdog.Stop()
	for _, w := range workers {
		if err := w.ready(); err != nil {
			return m, err
		}
	}

	// The unit of a contended run: PINGs just before and just after it, on an idle server. PINGs during the run
	// would wait behind the library's own traffic, and make the unit depend on the library measured.
	var pings []time.Duration
	if sc.Processes > 0 {
		if pings, err = pingTimes(ctx, admins[0], 100); err != nil {
			return m, err
		}
	}
	before, err := snapshot(ctx, admins)
	if err != nil {
		return m, err
	}
	start := r.clock.Now().Add(50 * time.Millisecond)
	end := start.Add(sc.Duration)
	for _, w := range workers {
		if err := w.in.Encode(goMsg{Start: start.UnixNano(), End: end.UnixNano()}); err != nil {
			return m, w.fail("start", err, "")
		}
	}
	results := make([]result, len(workers))
	for i, w := range workers {
		if err := w.out.Decode(&results[i]); err != nil || results[i].Err != "" {
			return m, w.fail("run", err, results[i].Err)
		}
	}
	after, err := snapshot(ctx, admins)
	if err != nil {
		return m, err
	}
	if sc.Processes > 0 {
		more, err := pingTimes(ctx, admins[0], 100)
		if err != nil {
			return m, err
		}
		m.Pings = append(pings, more...)
	}
	for _, w := range workers {
		if err := w.finish(); err != nil {
			return m, err
		}
	}

	m.Cost = after.Since(before)
	for _, res := range results {
		m.GaveUp += res.GaveUp
		if res.FailedTries >= 0 {
			m.FailedTries = max(m.FailedTries, 0) + res.FailedTries
		}
	}
	if sc.Processes == 0 {
		res := results[0]
		m.Pings = res.Pings
		m.P50, m.P99 = benchstat.Quantile(res.Pairs, 0.5), benchstat.Quantile(res.Pairs, 0.99)
		m.Acquired = int64(len(res.Pairs))
		m.Cost.Calls["ping"] -= int64(len(res.Pings))
	} else {
		var parts []benchstat.Acquisitions
		for _, res := range results {
			parts = append(parts, res.acquisitions())
		}
		a := benchstat.Merge(parts...)
		if cfg.dump != "" {
			if err := dumpSpans(filepath.Join(cfg.dump, fileName(lib, sc, "csv")), a, start); err != nil {
				return m, err
			}
		}
		m.Summary = benchstat.Summarize(a, start, end, sc.Goroutines)
		m.Waits, m.Unfinished = a.Waits, a.Unfinished
		m.Acquired = int64(len(a.Spans)) + a.Discarded
		m.Overlaps = int64(m.Summary.Overlaps) + guard.Overlaps()
		m.LostUpdates = int64(len(a.Spans)) - guard.Count()
	}
	m.Ping = benchstat.Quantile(m.Pings, 0.5)
	if lib.Tries != nil {
		m.FailedTries = lib.Tries(m.Cost, len(nodes)) - m.Acquired
	}
	if cfg.dump != "" {
		var b strings.Builder
		fmt.Fprintf(&b, "acquisitions %d, Redis CPU %v\n", m.Acquired, m.Cost.CPU)
		for _, k := range slices.Sorted(maps.Keys(m.Cost.Calls)) {
			fmt.Fprintf(&b, "%-12s %8d  %.2f/acq\n", k, m.Cost.Calls[k], float64(m.Cost.Calls[k])/float64(max(m.Acquired, 1)))
		}
		if err := os.WriteFile(filepath.Join(cfg.dump, fileName(lib, sc, "cost.txt")), []byte(b.String()), 0o644); err != nil {
			return m, err
		}
	}
	return m, nil
}

// interleave measures the uncontended pairs of libs in one worker, round by round (see job.Interleave), and
// returns each library's PINGs and pairs, in the order of libs.
func (r *rig) interleave(ctx context.Context, libs []library, pairs int) ([]memberResult, error) {
	j := job{Library: "interleaved", Key: "bench:interleaved", Pairs: pairs}
	for _, lib := range libs {
		m := member{Library: lib.Name}
		for _, i := range r.nodes(lib) {
			m.Addrs = append(m.Addrs, r.servers[i].Addr())
			if err := r.admins[i].FlushAll(ctx).Err(); err != nil {
				return nil, err
			}
		}
		j.Interleave = append(j.Interleave, m)
	}
	w, err := r.start(j)
	if err != nil {
		return nil, err
	}
	defer w.kill()
	// A worker that hangs must not hang the benchmark.
	watchdog := time.AfterFunc(time.Duration(pairs*len(libs))*5*time.Millisecond+30*time.Second, func() {
		_ = w.cmd.Process.Kill()
	})
	defer watchdog.Stop()
	var ready readyMsg
	if err := w.out.Decode(&ready); err != nil || !ready.Ready {
		return nil, memberFailed(ready.FailedMember, w.fail("not ready", err, ready.Err))
	}
	if err := w.in.Encode(goMsg{Start: r.clock.Now().Add(50 * time.Millisecond).UnixNano()}); err != nil {
		return nil, w.fail("start", err, "")
	}
	var res result
	if err := w.out.Decode(&res); err != nil || res.Err != "" {
		return nil, memberFailed(res.FailedMember, w.fail("run", err, res.Err))
	}
	if len(res.Members) != len(libs) {
		return nil, fmt.Errorf("interleaved worker answered for %d libraries of %d", len(res.Members), len(libs))
	}
	return res.Members, w.finish()
}

// A memberFailure is the failure of one library of an interleaved job.
type memberFailure struct {
	Member int // its index in the job's Interleave
	Err    error
}

func (e *memberFailure) Error() string { return e.Err.Error() }
func (e *memberFailure) Unwrap() error { return e.Err }

// memberFailed returns err as the failure of the member failed (an index + 1, as the worker says it), or err
// as it is when no member failed.
func memberFailed(failed int, err error) error {
	if failed <= 0 {
		return err
	}
	return &memberFailure{Member: failed - 1, Err: err}
}

func (res result) acquisitions() benchstat.Acquisitions {
	a := benchstat.Acquisitions{Waits: res.Waits, Unfinished: res.Unfinished, PerHolder: res.PerHolder, Discarded: res.Discarded}
	for _, s := range res.Spans {
		a.Spans = append(a.Spans, benchstat.Span{Acquired: time.Unix(0, s[0]), Releasing: time.Unix(0, s[1]), Released: time.Unix(0, s[2]), Holder: int(s[3])})
	}
	return a
}

// fileName names a file of a measurement, e.g. keyward-lock-4x4.csv.
func fileName(lib library, sc scenario, suffix string) string {
	return strings.NewReplacer(" ", "-", "×", "x").Replace(lib.Name + "-" + sc.Name + "." + suffix)
}

// dumpSpans writes a run's spans, in µs from its start, with each span's wait.
func dumpSpans(path string, a benchstat.Acquisitions, start time.Time) error {
	var b strings.Builder
	b.WriteString("acquired_us,releasing_us,released_us,holder,wait_us\n")
	us := func(t time.Time) float64 { return float64(t.Sub(start).Nanoseconds()) / 1000 }
	for i, s := range a.Spans {
		fmt.Fprintf(&b, "%.1f,%.1f,%.1f,%d,%.1f\n", us(s.Acquired), us(s.Releasing), us(s.Released), s.Holder,
			float64(a.Waits[i].Nanoseconds())/1000)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// pingTimes returns the round trips of n back-to-back PINGs. (PINGs a millisecond apart measured four times
// as long on a 2-core VM: after each pause, the client and the server wake up from idle, which the round trips
// of a busy lock do not.)
func pingTimes(ctx context.Context, rdb *redis.Client, n int) ([]time.Duration, error) {
	ds := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return nil, err
		}
		ds = append(ds, time.Since(t0))
	}
	return ds, nil
}

// snapshot reads the servers' counters, summed.
func snapshot(ctx context.Context, admins []*redis.Client) (benchstat.ServerCost, error) {
	sum := benchstat.ServerCost{Calls: map[string]int64{}}
	for _, a := range admins {
		c, err := benchstat.Snapshot(ctx, a)
		if err != nil {
			return sum, err
		}
		for k, v := range c.Calls {
			sum.Calls[k] += v
		}
		sum.CPU += c.CPU
	}
	return sum, nil
}

// workerProc is a running worker process.
type workerProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	in     *json.Encoder
	out    *json.Decoder
	stderr lockedBuffer
	job    job
	waited bool
}

// lockedBuffer is a bytes.Buffer safe for the writes of exec's copying goroutine and a read in fail.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (r *rig) start(j job) (*workerProc, error) {
	spec, err := json.Marshal(j)
	if err != nil {
		return nil, err
	}
	w := &workerProc{cmd: exec.Command(r.exe), job: j}
	w.cmd.Env = append(os.Environ(), workerEnv+"="+string(spec))
	w.cmd.Stderr = &w.stderr
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := w.cmd.Start(); err != nil {
		return nil, err
	}
	w.in, w.out = json.NewEncoder(w.stdin), json.NewDecoder(stdout)
	return w, nil
}

// ready waits until the worker says it is ready (connected and warmed up).
func (w *workerProc) ready() error {
	var ready readyMsg
	if err := w.out.Decode(&ready); err != nil || !ready.Ready {
		return w.fail("not ready", err, ready.Err)
	}
	return nil
}

// finish lets the worker exit and waits for it.
func (w *workerProc) finish() error {
	_ = w.stdin.Close()
	err := w.cmd.Wait()
	w.waited = true
	if err != nil {
		return w.fail("exit", err, "")
	}
	return nil
}

// kill stops a worker that has not finished, and waits for it.
func (w *workerProc) kill() {
	if w.waited {
		return
	}
	_ = w.cmd.Process.Kill()
	_ = w.cmd.Wait()
	w.waited = true
}

func (w *workerProc) fail(stage string, err error, msg string) error {
	if msg != "" {
		err = errors.Join(err, errors.New(msg))
	}
	return fmt.Errorf("worker %s (%s, %d goroutines): %s: %w\n%s", w.job.Library, w.job.Key, w.job.Goroutines, stage, err, w.stderr.String())
}
