package chaos

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/token"
)

// HistoryDirEnv names the environment variable that, when set, makes the rig keep the workers' records (one
// JSON-lines file per phase and worker, plus the worker's output) and each phase's merged history
// (<phase>.history.jsonl, see WriteHistory) in that directory instead of a temporary one.
const HistoryDirEnv = "KEYWARD_CHAOS_DIR"

// Settings size a schedule.
type Settings struct {
	// Workers is the number of worker processes per phase.
	Workers int
	// TTL is the lock ttl; Hold the pause inside the critical section.
	TTL, Hold time.Duration
	// PhaseLen is how long each phase's workload and faults run.
	PhaseLen time.Duration
	// Goroutines is the number of goroutines per worker process in the single-node phases: they contend
	// through the process's one lock client (see WorkerConfig.Goroutines).
	Goroutines int
	// Short leaves out the Redlock phases that only show progress (a paused node, a killed majority).
	Short bool
}

// ShortSettings are those of the short schedule, run by every `go test`: 4 workers (of 2 goroutines in the
// single-node phases), ttl 250 ms, 2.5 s phases.
func ShortSettings() Settings {
	return Settings{Workers: 4, TTL: 250 * time.Millisecond, Hold: 10 * time.Millisecond,
		PhaseLen: 2500 * time.Millisecond, Goroutines: 2, Short: true}
}

// FullSettings are those of the full schedule (make chaos): as the short one, with 11 s phases and every phase.
func FullSettings() Settings {
	s := ShortSettings()
	s.PhaseLen, s.Short = 11*time.Second, false
	return s
}

// A Rig owns the servers of a schedule: the storage server, the lock server reached through an in-process
// toxiproxy, the Redlock nodes, and (after Prepare) a Sentinel group and a Cluster. Everything is stopped in
// t.Cleanup.
type Rig struct {
	set Settings
	bin string // the test binary, re-executed as the workers
	dir string

	// Storage is the storage server; Lock the lock server.
	Storage, Lock *redistest.Server
	// Netns, when not nil, is the namespace in which the partition phase runs its cut-off worker.
	Netns *Netns
	// PartitionMethod says how partitions are made: "netns+veth+iptables", or toxiproxy's timeout toxic and why.
	PartitionMethod string

	// Nodes are the independent Redlock nodes.
	Nodes []*redistest.Server
	// Sentinel and Cluster are the deployments of the failover phases, started by Prepare and shared by them.
	Sentinel *redistest.SentinelGroup
	Cluster  *redistest.Cluster

	toxi       *Toxiproxy
	nodeProxy  []*Proxy        // the workers' paths to the Redlock nodes
	nodeDirect []*redis.Client // to the Redlock nodes, for the injector
	proxy      *Proxy          // the workers' path to the lock server
	minority   *Proxy          // worker 0's own path in the partition phase, when there is no netns
	storage    *redis.Client
	direct     *redis.Client // to the lock server, for the injector

	sentinelClient *redis.Client        // a failover client of the Sentinel group, for the injector
	clusterClient  *redis.ClusterClient // a cluster client of the Cluster, for the injector
}

// NewRig starts the servers and proxies.
func NewRig(t testing.TB, set Settings) *Rig {
	t.Helper()
	redistest.Require(t)
	bin, err := os.Executable()
	if err != nil {
		t.Fatalf("chaos: %v", err)
	}
	g := &Rig{set: set, bin: bin, dir: t.TempDir()}
	if dir := os.Getenv(HistoryDirEnv); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatalf("chaos: %v", err)
		}
		g.dir = dir
	}

	var opts []redistest.Option
	if n, err := NewNetns(); err != nil {
		g.PartitionMethod = "toxiproxy timeout toxic (netns+iptables unavailable: " + err.Error() + ")"
	} else {
		g.Netns, g.PartitionMethod = n, "netns+veth+iptables"
		t.Cleanup(func() {
			if err := n.Close(); err != nil {
				t.Errorf("chaos: %v", err)
			}
		})
		opts = append(opts, redistest.WithArgs("--bind", "127.0.0.1", n.HostIP))
	}
	servers := redistest.StartN(t, 2, opts...)
	g.Storage, g.Lock = servers[0], servers[1]
	g.storage, g.direct = g.Storage.Client(t), g.Lock.Client(t)

	g.toxi = NewToxiproxy()
	t.Cleanup(func() {
		if err := g.toxi.Close(); err != nil {
			t.Errorf("chaos: closing toxiproxy: %v", err)
		}
	})
	if g.proxy, err = g.toxi.Proxy("lock", g.Lock.Addr()); err != nil {
		t.Fatalf("chaos: %v", err)
	}
	if g.minority, err = g.toxi.Proxy("lock-minority", g.Lock.Addr()); err != nil {
		t.Fatalf("chaos: %v", err)
	}
	g.startNodes(t)
	return g
}

// RedlockNodes is the number of independent nodes of the Redlock phases.
const RedlockNodes = 3

// startNodes starts the Redlock nodes and their proxies.
func (g *Rig) startNodes(t testing.TB) {
	g.Nodes = redistest.StartN(t, RedlockNodes)
	for i, n := range g.Nodes {
		p, err := g.toxi.Proxy(fmt.Sprintf("node-%d", i), n.Addr())
		if err != nil {
			t.Fatalf("chaos: %v", err)
		}
		g.nodeProxy = append(g.nodeProxy, p)
		g.nodeDirect = append(g.nodeDirect, n.Client(t))
	}
}

// A Phase is one part of a schedule: a workload, the faults injected meanwhile, and the verdict expected.
type Phase struct {
	// Name names the phase (and its lock key); Fault says what is injected.
	Name, Fault string
	// Try makes the workers use TryObtain instead of Obtain.
	Try bool
	// Minority runs worker 0 over a path of its own to the lock server, the one partitions cut.
	Minority bool
	// Redlock runs the workers on Redlock over three independent nodes instead of the single lock server.
	Redlock bool
	// Deploy is the deployment the lock lives on: the single lock server (the zero value), or the Sentinel
	// group or the Cluster of the failover phases (which the workers reach directly, not through toxiproxy).
	Deploy Deployment
	// TTL overrides the Settings' lock ttl; Hold their pause inside the critical section.
	TTL, Hold time.Duration
	// Workers and Goroutines override the Settings' number of worker processes and of goroutines per process;
	// Goroutines applies to the single-node phases only (Redlock and the deployments run one per process).
	Workers, Goroutines int
	// Do makes the odd-numbered goroutines of each worker take the lock with Do (see WorkerConfig.Do).
	Do bool
	// DirectWatch gives the workers' lock clients a watcher that reaches the lock server directly, past the
	// proxy (see WorkerConfig.Watch): the proxy's toxics then slow or break the tries but not the wake-ups.
	DirectWatch bool
	// Rest and RestJitter pace each goroutine's attempts (see WorkerConfig.Rest); ClaimWindow sets the lock
	// client's claim window.
	Rest, RestJitter, ClaimWindow time.Duration
	// LongHolder, when its Hold is set, gives worker 0 sections of that length: a holder of a long job.
	LongHolder LongHolder
	// AmbiguousReleases: replies may be lost in this phase (see History.AmbiguousReleases).
	AmbiguousReleases bool
	// Inject injects the faults; it runs on the test goroutine for the phase's length. Nil: no faults.
	Inject func(r *PhaseRun)
	// Expect are the properties the verdict must have.
	Expect []Expectation
}

// An Expectation is a property of a phase's result that must hold.
type Expectation struct {
	// Name says what must hold, in the verdict table's words.
	Name string
	// Holds checks it.
	Holds func(Result) bool
}

// Result is a phase's outcome.
type Result struct {
	// Phase is the phase that ran.
	Phase *Phase
	// Verdict is what the checker found in its history.
	Verdict Verdict
	// Faults counts the faults injected.
	Faults int
	// Failed lists the expectations that did not hold.
	Failed []string
	// Notes are remarks of the injector (e.g. which partition method ran).
	Notes []string
	// Failovers are the failovers of the phase, in order: how long each took, and the hand-off gap after it.
	Failovers []Failover
	// Stranded counts holders caught taking the lock on a master whose writes the replica promoted next never
	// received (FailoverSentinelLagging).
	Stranded int
}

// PhaseRun is a running phase, handed to its Inject function.
type PhaseRun struct {
	t        testing.TB
	rig      *Rig
	phase    *Phase
	key      string
	workers  []*workerProc
	deadline time.Time
	faults   int
	paused   map[int]bool // Redlock nodes stopped by PauseNode
	pauses   []Pause
	resets   []Span
	notes    []string

	failovers []failoverSpan
	stranded  int
}

type workerProc struct {
	id     int
	cmd    *exec.Cmd
	ready  *os.File // read end of the pipe the worker writes "ready" to
	stdin  io.WriteCloser
	out    string
	log    string
	done   chan struct{}
	err    error
	paused bool
}

// Run runs a phase: starts the workers, injects the faults, stops the workers and checks the history. t is
// the (sub)test the phase runs in; faults that fail stop it.
func (g *Rig) Run(t testing.TB, p *Phase) Result {
	t.Helper()
	r := &PhaseRun{t: t, rig: g, phase: p, key: "chaos:" + p.Name}
	if (p.Deploy == SentinelGroup && g.Sentinel == nil) || (p.Deploy == RedisCluster && g.Cluster == nil) {
		t.Fatalf("chaos: %s: the rig has no %v: call Prepare with the phases first", p.Name, p.Deploy)
	}
	for i := range cmp.Or(p.Workers, g.set.Workers) {
		w, err := g.startWorker(r, i)
		if err != nil {
			r.stopWorkers()
			t.Fatalf("chaos: %s: starting worker %d: %v", p.Name, i, err)
		}
		r.workers = append(r.workers, w)
	}
	for _, w := range r.workers {
		if err := w.waitReady(); err != nil {
			r.stopWorkers()
			t.Fatalf("chaos: %s: worker %d: %v\n%s", p.Name, w.id, err, readTail(w.log))
		}
	}
	r.deadline = time.Now().Add(g.set.PhaseLen)
	if p.Inject != nil {
		p.Inject(r)
	}
	r.Sleep(time.Until(r.deadline))
	r.heal()
	r.stopWorkers()

	h := History{Pauses: r.pauses, Resets: r.resets, TTL: cmp.Or(p.TTL, g.set.TTL), AmbiguousReleases: p.AmbiguousReleases}
	for _, w := range r.workers {
		if w.err != nil {
			t.Errorf("chaos: %s: worker %d: %v\n%s", p.Name, w.id, w.err, readTail(w.log))
		}
		recs, err := ReadRecords(w.out)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("chaos: %s: %v", p.Name, err)
		}
		h.Records = append(h.Records, recs...)
	}
	var err error
	if h.Store, err = ReadStore(context.Background(), g.storage, KeysFor(r.key)); err != nil {
		t.Fatalf("chaos: %s: reading the storage: %v", p.Name, err)
	}
	if err := WriteHistory(filepath.Join(g.dir, p.Name+".history.jsonl"), h); err != nil {
		t.Errorf("chaos: %s: writing the history: %v", p.Name, err)
	}
	res := Result{Phase: p, Verdict: Check(h), Faults: r.faults, Notes: r.notes, Stranded: r.stranded,
		Failovers: failovers(h.Records, r.failovers)}
	for _, e := range p.Expect {
		if !e.Holds(res) {
			res.Failed = append(res.Failed, e.Name)
		}
	}
	return res
}

func (g *Rig) startWorker(r *PhaseRun, id int) (*workerProc, error) {
	ttl, long := cmp.Or(r.phase.TTL, g.set.TTL), r.phase.LongHolder
	cfg := WorkerConfig{
		ID:            id,
		Lock:          []string{g.proxy.Addr()},
		Observe:       []string{g.Lock.Addr()},
		NodeTimeout:   g.set.TTL / 10,
		Storage:       g.Storage.Addr(),
		Key:           r.key,
		TTL:           ttl,
		Hold:          cmp.Or(r.phase.Hold, g.set.Hold),
		ReadTimeout:   2 * g.set.TTL,
		ObtainTimeout: 20*ttl + 2*long.Hold, // the others wait for the long holder too
		Try:           r.phase.Try,
		Do:            r.phase.Do,
		Rest:          r.phase.Rest,
		RestJitter:    r.phase.RestJitter,
		ClaimWindow:   r.phase.ClaimWindow,
		Out:           filepath.Join(g.dir, fmt.Sprintf("%s-%d.jsonl", r.phase.Name, id)),
	}
	if !r.phase.Redlock && r.phase.Deploy == SingleNode {
		cfg.Goroutines = cmp.Or(r.phase.Goroutines, g.set.Goroutines)
		if r.phase.DirectWatch {
			cfg.Watch = g.Lock.Addr()
		}
	}
	if id == 0 && long.Hold > 0 {
		cfg.TTL, cfg.Hold, cfg.AutoRefresh, cfg.Rest = cmp.Or(long.TTL, ttl), long.Hold, long.AutoRefresh, long.Rest
	}
	switch r.phase.Deploy {
	case SentinelGroup:
		cfg.Lock, cfg.Observe = nil, nil
		cfg.SentinelMaster, cfg.SentinelAddrs = redistest.SentinelMasterName, g.Sentinel.SentinelAddrs()
	case RedisCluster:
		cfg.Lock, cfg.Observe = nil, nil
		cfg.ClusterAddrs = g.Cluster.Addrs()
	}
	if r.phase.Redlock {
		cfg.Lock, cfg.Observe = nil, nil
		for i, n := range g.Nodes {
			cfg.Lock = append(cfg.Lock, g.nodeProxy[i].Addr())
			cfg.Observe = append(cfg.Observe, n.Addr())
		}
	}
	args := []string{"-test.run=^TestChaosWorker$", "-test.count=1"}
	var cmd *exec.Cmd
	switch {
	case r.phase.Minority && id == 0 && g.Netns != nil:
		lockAddr := g.Netns.HostIP + ":" + strconv.Itoa(g.Lock.Port())
		cfg.Lock, cfg.Observe = []string{lockAddr}, []string{lockAddr}
		cfg.Storage = g.Netns.HostIP + ":" + strconv.Itoa(g.Storage.Port())
		cmd = g.Netns.Command(g.bin, args...)
	case r.phase.Minority && id == 0:
		cfg.Lock = []string{g.minority.Addr()}
		cmd = exec.Command(g.bin, args...)
	default:
		cmd = exec.Command(g.bin, args...)
	}
	w := &workerProc{id: id, cmd: cmd, out: cfg.Out, log: cfg.Out + ".log", done: make(chan struct{})}
	logf, err := os.Create(w.log)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own copy
	cmd.Env = append(os.Environ(), cfg.Env())
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if w.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	readyW, err := w.readyPipe()
	if err != nil {
		return nil, err
	}
	cmd.ExtraFiles = []*os.File{readyW} // fd 3 in the worker
	err = cmd.Start()
	_ = readyW.Close() // the child has its own copy
	if err != nil {
		_ = w.ready.Close()
		return nil, err
	}
	go func() {
		w.err = cmd.Wait()
		close(w.done)
	}()
	return w, nil
}

func (w *workerProc) readyPipe() (*os.File, error) {
	r, wr, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	w.ready = r
	return wr, nil
}

// waitReady waits until the worker reports it is ready (its clients made, about to loop), or exits, for at
// most a minute: on a loaded machine a race-instrumented worker can take seconds to start, and a phase's
// clock must not run before its workers do.
func (w *workerProc) waitReady() error {
	defer w.ready.Close()
	_ = w.ready.SetReadDeadline(time.Now().Add(time.Minute))
	buf := make([]byte, len(ReadyLine))
	if _, err := io.ReadFull(w.ready, buf); err != nil || string(buf) != ReadyLine {
		return fmt.Errorf("did not report ready: %q, %v", buf, err)
	}
	return nil
}

// stopWorkers resumes paused workers, closes their stdin (the stop signal) and waits for them to exit, killing
// those that do not within 30 s.
func (r *PhaseRun) stopWorkers() {
	for _, w := range r.workers {
		r.resume(w)
		_ = w.stdin.Close()
	}
	for _, w := range r.workers {
		select {
		case <-w.done:
		case <-time.After(30 * time.Second):
			_ = w.cmd.Process.Kill()
			<-w.done
			w.err = errors.Join(w.err, errors.New("did not stop within 30 s of its stop signal: killed"))
		}
	}
}

// Remaining returns how long the phase still runs.
func (r *PhaseRun) Remaining() time.Duration { return time.Until(r.deadline) }

// Sleep waits for d, or until the phase ends if that is sooner. It paces the faults: a phase's length, not
// synchronisation.
func (r *PhaseRun) Sleep(d time.Duration) {
	if d = min(d, r.Remaining()); d > 0 {
		time.Sleep(d)
	}
}

// Note records a remark shown with the phase's verdict.
func (r *PhaseRun) Note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// TTL returns the lock ttl of the phase.
func (r *PhaseRun) TTL() time.Duration { return r.rig.set.TTL }

// holder returns the worker whose value is in the lock key (on any node, for Redlock), its value, or nil.
func (r *PhaseRun) holder() (*workerProc, string) {
	var servers []redis.UniversalClient
	switch {
	case r.phase.Redlock:
		for i, c := range r.rig.nodeDirect {
			if !r.paused[i] { // a paused node would not answer
				servers = append(servers, c)
			}
		}
	case r.phase.Deploy == SentinelGroup:
		servers = []redis.UniversalClient{r.rig.sentinelClient}
	case r.phase.Deploy == RedisCluster:
		servers = []redis.UniversalClient{r.rig.clusterClient}
	default:
		servers = []redis.UniversalClient{r.rig.direct}
	}
	return r.holderOn(servers...)
}

// holderOn returns the worker whose value is in the lock key on one of servers, its value, or nil.
func (r *PhaseRun) holderOn(servers ...redis.UniversalClient) (*workerProc, string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, c := range servers {
		v, err := c.Get(ctx, r.key).Result()
		if err != nil {
			continue
		}
		pid, ok := token.Parse(v).PID()
		if !ok {
			continue // free, or reserved for a waiting process
		}
		for _, w := range r.workers {
			if w.cmd.Process.Pid == pid {
				return w, v
			}
		}
	}
	return nil, ""
}

// waitHolder polls the lock key until one of the workers (worker want, or any when want < 0) holds it, for
// at most until the phase ends.
func (r *PhaseRun) waitHolder(want int) (*workerProc, string) {
	for r.Remaining() > 0 {
		if w, v := r.holder(); w != nil && (want < 0 || w.id == want) {
			return w, v
		}
		time.Sleep(time.Millisecond)
	}
	return nil, ""
}

// PauseHolder finds the process holding the lock from the pid in the lock's value, stops it (SIGSTOP) for d
// and resumes it. It reports whether it found one.
func (r *PhaseRun) PauseHolder(d time.Duration) bool {
	w, v := r.waitHolder(-1)
	if w == nil {
		return false
	}
	if err := w.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		r.Note("SIGSTOP worker %d: %v", w.id, err)
		return false
	}
	w.paused = true
	if err := redistest.WaitStopped(w.cmd.Process.Pid); err != nil {
		r.Note("waiting for worker %d to stop: %v", w.id, err)
	}
	p := Pause{PID: w.cmd.Process.Pid, Token: v, Stop: Mono()}
	// The holder may have handed the lock to another goroutine of its process before the SIGSTOP landed: the
	// value in the key now, if it is still the stopped process's, is the one it was caught holding.
	if w2, v2 := r.holder(); w2 == w {
		p.Token = v2
	}
	r.faults++
	r.Sleep(d)
	r.resume(w)
	p.Cont = Mono()
	r.pauses = append(r.pauses, p)
	return true
}

func (r *PhaseRun) resume(w *workerProc) {
	if w.paused {
		_ = w.cmd.Process.Signal(syscall.SIGCONT)
		w.paused = false
	}
}

// AddToxic adds a toxic to the workers' path to the lock server.
func (r *PhaseRun) AddToxic(t Toxic) {
	if err := r.rig.proxy.Add(t); err != nil {
		r.t.Fatalf("chaos: %s: %v", r.phase.Name, err)
	}
	r.faults++
}

// RemoveToxic removes it.
func (r *PhaseRun) RemoveToxic(name string) {
	if err := r.rig.proxy.Remove(name); err != nil {
		r.t.Fatalf("chaos: %s: %v", r.phase.Name, err)
	}
}

// KillPubSub kills the lock server's pub/sub connections (CLIENT KILL TYPE pubsub): the waiters' watchers
// must reconnect, and may have missed messages.
func (r *PhaseRun) KillPubSub() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if n, err := r.rig.direct.ClientKillByFilter(ctx, "TYPE", "pubsub").Result(); err != nil {
		r.Note("CLIENT KILL TYPE pubsub: %v", err)
	} else if n > 0 {
		r.faults++
	}
}

// RestartLock kills the lock server (-9) and starts it again, empty, on the same port.
func (r *PhaseRun) RestartLock() {
	from := Mono()
	r.rig.Lock.Restart(r.t)
	r.resets = append(r.resets, Span{From: from, To: Mono()})
	r.faults++
}

// KillNode kills Redlock node i (-9); its data is gone.
func (r *PhaseRun) KillNode(i int) {
	r.rig.Nodes[i].Kill(r.t)
	r.faults++
}

// RestartNode starts Redlock node i again, empty, on the same port (killing it first if it runs).
func (r *PhaseRun) RestartNode(i int) {
	r.rig.Nodes[i].Restart(r.t)
	r.faults++
}

// PauseNode stops Redlock node i (SIGSTOP): it accepts connections and answers nothing until ResumeNode.
func (r *PhaseRun) PauseNode(i int) {
	r.rig.Nodes[i].Pause(r.t)
	if r.paused == nil {
		r.paused = map[int]bool{}
	}
	r.paused[i] = true
	r.faults++
}

// ResumeNode resumes Redlock node i.
func (r *PhaseRun) ResumeNode(i int) {
	r.rig.Nodes[i].Resume(r.t)
	delete(r.paused, i)
}

// WaitHolder waits until a worker holds the lock, for at most the rest of the phase, and reports whether one
// does.
func (r *PhaseRun) WaitHolder() bool {
	w, _ := r.waitHolder(-1)
	return w != nil
}

// CutMinority partitions worker 0 (in a Minority phase) from the lock server once it holds the lock, for d,
// then heals the partition. It reports whether it caught worker 0 holding the lock.
func (r *PhaseRun) CutMinority(d time.Duration) bool {
	if w, _ := r.waitHolder(0); w == nil {
		return false
	}
	r.cut()
	r.faults++
	r.Sleep(d)
	r.healCut()
	return true
}

func (r *PhaseRun) cut() {
	g := r.rig
	if g.Netns != nil {
		if err := g.Netns.Cut(g.Lock.Port()); err != nil {
			r.t.Fatalf("chaos: %v", err)
		}
		return
	}
	for _, stream := range []string{"upstream", "downstream"} {
		if err := g.minority.Add(Toxic{Name: "partition-" + stream, Type: "timeout", Stream: stream,
			Attributes: map[string]any{"timeout": 0}}); err != nil {
			r.t.Fatalf("chaos: %v", err)
		}
	}
}

func (r *PhaseRun) healCut() {
	g := r.rig
	if g.Netns != nil {
		if err := g.Netns.Heal(g.Lock.Port()); err != nil {
			r.t.Fatalf("chaos: %v", err)
		}
		return
	}
	g.minority.Reset()
}

// heal undoes whatever faults are still in place at the end of a phase.
func (r *PhaseRun) heal() {
	for _, w := range r.workers {
		r.resume(w)
	}
	r.rig.proxy.Reset()
	r.rig.minority.Reset()
	if r.phase.Redlock {
		for _, n := range r.rig.Nodes {
			if !n.Alive() {
				n.Restart(r.t)
			} else {
				n.Resume(r.t)
			}
		}
		for i := range r.paused {
			delete(r.paused, i)
		}
	}
}

func readTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}
