package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/lockopt"
	"github.com/keyward/keyward/internal/token"
	"github.com/keyward/keyward/internal/watch"
	"github.com/keyward/keyward/lock"
	"github.com/keyward/keyward/redlock"
)

// WorkerEnv is the environment variable that carries a worker's WorkerConfig (JSON) to the re-executed test
// binary; TestChaosWorker runs RunWorker only when it is set.
const WorkerEnv = "KEYWARD_CHAOS_WORKER"

// WorkerConfig tells a worker process what to do.
type WorkerConfig struct {
	// ID numbers the worker within its phase, from 0.
	ID int
	// Lock are the addresses the worker's lock client dials: through toxiproxy, or directly (over a veth pair
	// for the partition phase). One address: the single-node lock (lock/); several: Redlock (redlock/) over
	// those independent nodes.
	Lock []string
	// NodeTimeout is Redlock's per-node timeout (0: its default).
	NodeTimeout time.Duration
	// Observe are direct addresses of the same lock servers, for the worker's own checks of the lock key;
	// nothing the lock client does goes through them.
	Observe []string
	// SentinelMaster and SentinelAddrs, when set, replace Lock and Observe: the worker's lock client is a
	// go-redis failover client for the master the sentinels at SentinelAddrs monitor under that name (and so is
	// its observing client, with the short timeouts of observation).
	SentinelMaster string
	SentinelAddrs  []string
	// ClusterAddrs, when set, replaces Lock and Observe: the worker's lock client (and its observing client) is a
	// go-redis cluster client seeded with these nodes.
	ClusterAddrs []string
	// Storage is the address of the storage server.
	Storage string
	// Key is the lock key.
	Key string
	// TTL is the lock's ttl; Hold the pause between reading and writing the counter.
	TTL, Hold time.Duration
	// AutoRefresh takes the locks with auto-refresh: a holder whose Hold is longer than its TTL keeps the lock
	// by refreshing it.
	AutoRefresh bool
	// Rest is how long the worker waits before each attempt; RestJitter adds a random part, up to itself.
	Rest, RestJitter time.Duration
	// Goroutines is the number of goroutines of the process that take the lock, each in a loop of its own,
	// through the process's one lock client: the client's in-process queue, its hand-overs in the release's
	// round trip and its cohorts run as users run them. 0 means 1.
	Goroutines int
	// Do makes the odd-numbered goroutines take the lock with Locker.Do (auto-refresh, the section run as its fn)
	// instead of Obtain. Only for the single-node lock (lock/): the section reads the lock key directly to learn
	// the value Do obtained, and takes the fence from fn's ctx (lock.FenceFrom).
	Do bool
	// ClaimWindow is the lock client's claim window (0: its default).
	ClaimWindow time.Duration
	// Watch, when set, is the address the single-node lock client's pub/sub connection (release messages,
	// keyspace notifications) dials, with a go-redis client of its own (watch.Redirect), instead of sharing the
	// lock client's path: the waiters hear of a release on another path than their tries' replies.
	Watch string
	// ReadTimeout is the lock client's socket read/write timeout.
	ReadTimeout time.Duration
	// ObtainTimeout bounds each Obtain (or TryObtain) call.
	ObtainTimeout time.Duration
	// Try makes the worker call TryObtain in a loop (pausing a millisecond after ErrNotObtained) instead of the
	// blocking Obtain.
	Try bool
	// Out is the file the worker appends its records to, one JSON line each.
	Out string
}

// Env returns the environment entry that passes c to a worker process.
func (c WorkerConfig) Env() string {
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // plain data: cannot fail
	}
	return WorkerEnv + "=" + string(b)
}

// ConfigFromEnv returns the WorkerConfig in the environment, and whether there is one.
func ConfigFromEnv() (WorkerConfig, bool, error) {
	v, ok := os.LookupEnv(WorkerEnv)
	if !ok {
		return WorkerConfig{}, false, nil
	}
	var c WorkerConfig
	err := json.Unmarshal([]byte(v), &c)
	return c, true, err
}

// clientOptions are the go-redis options of the worker's clients: go-redis defaults (MaxRetries 3, as users
// have them) except for short timeouts, no CLIENT SETINFO and no maintenance notifications.
func clientOptions(addr string, timeout time.Duration) *redis.Options {
	return &redis.Options{
		Addr:                  addr,
		DialTimeout:           timeout,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode:         maintnotifications.ModeDisabled,
			EndpointType: maintnotifications.EndpointTypeNone,
		},
	}
}

// ReadyLine is what a worker writes to fd 3 (a pipe from the rig) once it is ready to loop.
const ReadyLine = "ready\n"

// RunWorker runs the worker loop until ctx ends, appending one Record per attempt to cfg.Out. A section that
// has begun is finished (and its lock released) even when ctx ends meanwhile, so that every write to the
// storage is in the history. It returns an error only when the worker cannot run at all.
func RunWorker(ctx context.Context, cfg WorkerConfig) (err error) {
	deployed := cfg.SentinelMaster != "" || len(cfg.ClusterAddrs) > 0
	if !deployed && (len(cfg.Lock) == 0 || len(cfg.Observe) != len(cfg.Lock)) {
		return fmt.Errorf("chaos worker: %d lock addresses, %d to observe", len(cfg.Lock), len(cfg.Observe))
	}
	out, err := os.OpenFile(cfg.Out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, out.Close()) }()

	w := &worker{cfg: cfg, pid: os.Getpid(), keys: KeysFor(cfg.Key), out: out}
	var nodes []redis.UniversalClient
	switch {
	case cfg.SentinelMaster != "":
		rdb := redis.NewFailoverClient(failoverOptions(cfg, cfg.ReadTimeout))
		defer rdb.Close()
		oopt := failoverOptions(cfg, 200*time.Millisecond)
		oopt.MaxRetries, oopt.DialerRetries = -1, 1
		observe := redis.NewFailoverClient(oopt)
		defer observe.Close()
		nodes, w.observe = []redis.UniversalClient{rdb}, []redis.UniversalClient{observe}
	case len(cfg.ClusterAddrs) > 0:
		rdb := redis.NewClusterClient(clusterOptions(cfg.ClusterAddrs, cfg.ReadTimeout))
		defer rdb.Close()
		oopt := clusterOptions(cfg.ClusterAddrs, 200*time.Millisecond)
		oopt.MaxRetries, oopt.DialerRetries = -1, 1
		observe := redis.NewClusterClient(oopt)
		defer observe.Close()
		nodes, w.observe = []redis.UniversalClient{rdb}, []redis.UniversalClient{observe}
	default:
		for i, addr := range cfg.Lock {
			rdb := redis.NewClient(clientOptions(addr, cfg.ReadTimeout))
			defer rdb.Close()
			nodes = append(nodes, rdb)
			// Observation fails fast: no retries, short timeouts, so a dead node does not delay the workload.
			oopt := clientOptions(cfg.Observe[i], 200*time.Millisecond)
			oopt.MaxRetries, oopt.DialerRetries = -1, 1
			observe := redis.NewClient(oopt)
			defer observe.Close()
			w.observe = append(w.observe, observe)
		}
	}
	if cfg.Do && len(w.observe) != 1 {
		return errors.New("chaos worker: Do is for the single-node lock")
	}
	w.store = redis.NewClient(clientOptions(cfg.Storage, 2*time.Second))
	defer w.store.Close()
	lockerFor, closeLocker, err := newLocker(nodes, cfg)
	if err != nil {
		return err
	}
	defer closeLocker()

	n := max(cfg.Goroutines, 1)
	gs := make([]*goroutine, n)
	for i := range gs {
		// Each goroutine's lock values name it: its records, and the values its attempts leave, are its own.
		md := token.DefaultMetadata() + " g=" + strconv.Itoa(i)
		gs[i] = &goroutine{w: w, g: i, locks: lockerFor(md), mine: " pid=" + strconv.Itoa(w.pid) + " g=" + strconv.Itoa(i),
			do: cfg.Do && i%2 == 1}
	}
	if ready := os.NewFile(3, "ready"); ready != nil { // started by a Rig
		_, _ = ready.WriteString(ReadyLine)
		_ = ready.Close()
	}
	errs := make(chan error, n)
	for _, g := range gs {
		go func() { errs <- g.loop(ctx) }()
	}
	for range gs {
		err = errors.Join(err, <-errs)
	}
	return err
}

// loop takes the lock again and again until ctx ends.
func (g *goroutine) loop(ctx context.Context) error {
	cfg := g.w.cfg
	for seq := 0; ctx.Err() == nil; seq++ {
		if rest := cfg.Rest + randN(cfg.RestJitter); rest > 0 {
			sleep(ctx, rest) // the workload's pace
			if ctx.Err() != nil {
				break
			}
		}
		var r *Record
		if g.do {
			r = g.attemptDo(ctx, seq)
		} else {
			r = g.attempt(ctx, seq)
		}
		if err := g.w.write(r); err != nil {
			return err
		}
		if r.Result == Stopped {
			break
		}
		if r.Result == Failed || r.Result == NotObtained {
			// Rate of retries after an error or a refused TryObtain; the workload's pace, not synchronisation.
			sleep(ctx, time.Millisecond)
		}
	}
	return nil
}

// write appends r to the worker's records, one write per record.
func (w *worker) write(r *Record) error {
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err = w.out.Write(append(line, '\n'))
	return err
}

func randN(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}

// failoverOptions are clientOptions for a go-redis failover client of the Sentinel group in cfg.
func failoverOptions(cfg WorkerConfig, timeout time.Duration) *redis.FailoverOptions {
	return &redis.FailoverOptions{
		MasterName:            cfg.SentinelMaster,
		SentinelAddrs:         cfg.SentinelAddrs,
		DialTimeout:           timeout,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
	}
}

// clusterOptions are clientOptions for a go-redis cluster client seeded with addrs.
func clusterOptions(addrs []string, timeout time.Duration) *redis.ClusterOptions {
	return &redis.ClusterOptions{
		Addrs:                 addrs,
		DialTimeout:           timeout,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode:         maintnotifications.ModeDisabled,
			EndpointType: maintnotifications.EndpointTypeNone,
		},
	}
}

// newLocker returns the single-node lock for one client (a single server, a Sentinel group or a Cluster),
// Redlock for several: a function that returns a Locker of that client whose locks carry the given metadata.
func newLocker(nodes []redis.UniversalClient, cfg WorkerConfig) (func(metadata string) keyward.Locker, func(), error) {
	if len(nodes) == 1 {
		var opts []lock.Option
		var obtainOpts []lock.ObtainOption
		if cfg.AutoRefresh {
			obtainOpts = append(obtainOpts, lock.WithAutoRefresh())
		}
		if cfg.ClaimWindow > 0 {
			opts = append(opts, lock.WithClaimWindow(cfg.ClaimWindow))
		}
		closeWatch := func() {}
		if cfg.Watch != "" {
			wrdb := redis.NewClient(clientOptions(cfg.Watch, cfg.ReadTimeout))
			undo := watch.Redirect(nodes[0], wrdb)
			closeWatch = func() { undo(); _ = wrdb.Close() }
		}
		locks, err := lock.New(nodes[0], opts...)
		if err != nil {
			closeWatch()
			return nil, nil, err
		}
		// The goroutines share the Client (its in-process queue and hand-overs are under test); metadata is a
		// Client option, so each goroutine's metadata goes with its calls' contexts.
		return func(md string) keyward.Locker { return callMetadata{Locker: locks.Locker(obtainOpts...), md: md} },
			func() { _ = locks.Close(); closeWatch() }, nil
	}
	var opts []redlock.Option
	if cfg.NodeTimeout > 0 {
		opts = append(opts, redlock.WithNodeTimeout(cfg.NodeTimeout))
	}
	if cfg.ClaimWindow > 0 {
		opts = append(opts, redlock.WithClaimWindow(cfg.ClaimWindow))
	}
	var obtainOpts []redlock.ObtainOption
	if cfg.AutoRefresh {
		obtainOpts = append(obtainOpts, redlock.WithAutoRefresh())
	}
	// The metadata is the Client's: one Client per goroutine (the Redlock phases run one goroutine per worker,
	// so a worker's locks still come from one Client).
	check, err := redlock.New(nodes, opts...) // the nodes and options, checked once here
	if err != nil {
		return nil, nil, err
	}
	_ = check.Close()
	var mu sync.Mutex
	var clients []*redlock.Client
	lockerFor := func(md string) keyward.Locker {
		locks, err := redlock.New(nodes, append(slices.Clip(opts), redlock.WithMetadata(md))...)
		if err != nil {
			return failedLocker{err} // not reached: the same nodes and options, and any metadata is valid
		}
		mu.Lock()
		clients = append(clients, locks)
		mu.Unlock()
		return locks.Locker(obtainOpts...)
	}
	closeAll := func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range clients {
			_ = c.Close()
		}
	}
	return lockerFor, closeAll, nil
}

// failedLocker is a Locker whose every call fails with err.
type failedLocker struct{ err error }

func (f failedLocker) TryObtain(context.Context, string, time.Duration) (keyward.Lock, error) {
	return nil, f.err
}
func (f failedLocker) Obtain(context.Context, string, time.Duration) (keyward.Lock, error) {
	return nil, f.err
}
func (f failedLocker) Do(context.Context, string, time.Duration, func(context.Context) error) error {
	return f.err
}

// callMetadata is a Locker of the single-node lock whose locks carry md as their metadata.
type callMetadata struct {
	keyward.Locker
	md string
}

func (c callMetadata) TryObtain(ctx context.Context, key string, ttl time.Duration) (keyward.Lock, error) {
	return c.Locker.TryObtain(lockopt.CallMetadata(ctx, c.md), key, ttl)
}

func (c callMetadata) Obtain(ctx context.Context, key string, ttl time.Duration) (keyward.Lock, error) {
	return c.Locker.Obtain(lockopt.CallMetadata(ctx, c.md), key, ttl)
}

func (c callMetadata) Do(ctx context.Context, key string, ttl time.Duration, fn func(context.Context) error) error {
	return c.Locker.Do(lockopt.CallMetadata(ctx, c.md), key, ttl, fn)
}

type worker struct {
	cfg     WorkerConfig
	pid     int
	observe []redis.UniversalClient // direct to each lock node (or a client of the Sentinel group or Cluster)
	store   *redis.Client
	keys    StoreKeys

	mu  sync.Mutex // serialises the writes to out
	out *os.File
}

// goroutine is one of a worker's goroutines that take the lock.
type goroutine struct {
	w     *worker
	g     int
	locks keyward.Locker // the process's one client, with this goroutine's metadata
	mine  string         // " pid=<pid> g=<g>": what this goroutine's lock values end with
	do    bool           // takes the lock with Do
}

// attempt obtains the lock once and, when it got it, runs the critical section and releases it. An attempt
// that was still waiting when ctx ended is Stopped.
func (g *goroutine) attempt(ctx context.Context, seq int) *Record {
	w := g.w
	r := &Record{Worker: w.cfg.ID, G: g.g, PID: w.pid, Seq: seq}
	octx, cancel := context.WithTimeout(ctx, w.cfg.ObtainTimeout)
	r.Call = Mono()
	var l keyward.Lock
	var err error
	if w.cfg.Try {
		l, err = g.locks.TryObtain(octx, w.cfg.Key, w.cfg.TTL)
	} else {
		l, err = g.locks.Obtain(octx, w.cfg.Key, w.cfg.TTL)
	}
	r.Start = Mono()
	cancel()
	if err != nil {
		g.failed(ctx, r, octx, err)
		return r
	}

	r.Fence, r.Token = l.Fence(), l.Value()
	r.TTL, r.AutoRefresh = int64(w.cfg.TTL), w.cfg.AutoRefresh
	r.Until = r.Start + int64(time.Until(l.Until()))
	if r.Until > r.Start {
		r.Result = Obtained
		w.section(r, l.Value(), l.Until)
	} else {
		r.Result = ExpiredOnArrival // the validity check: never work under a lock that has expired
	}
	if w.cfg.AutoRefresh {
		// Refreshes moved the validity deadline: the holder could count on the lock until the last one.
		r.Until = max(r.Until, Mono()+int64(time.Until(l.Until())))
	}

	// Release at once, also past the deadline (a holder that resumes after a pause does just that, before the
	// lease's timer has had its turn): Release must then report the loss and close Lost by itself.
	rctx, rcancel := context.WithTimeout(context.Background(), w.cfg.ObtainTimeout)
	r.RelCall = Mono()
	err = l.Release(rctx)
	r.RelEnd = Mono()
	rcancel()
	select {
	case <-l.Lost():
		r.LostFired = true
	default:
	}
	r.settleRelease(err)
	return r
}

// failed fills in r for an obtain that returned err.
func (g *goroutine) failed(ctx context.Context, r *Record, octx context.Context, err error) {
	switch {
	case ctx.Err() != nil:
		r.Result = Stopped
	case errors.Is(err, keyward.ErrNotObtained):
		r.Result = NotObtained
	case !g.w.cfg.Try && errors.Is(err, context.DeadlineExceeded) && octx.Err() != nil:
		r.Result = TimedOut
	default:
		r.Result = Failed
	}
	r.Err = err.Error()
	if r.Result != Stopped {
		r.LeftValue, r.OwnKeyLeft = g.ownKeyLeft()
	}
}

// attemptDo takes the lock with Do, which refreshes it, and runs the critical section as its fn. Do shows fn the
// fence (lock.FenceFrom), not the value: the section reads the lock key directly and takes the value as its token
// when the key holds this goroutine's value (the last acquire or hand-over was its own). It believes it holds the lock until fn returns, or until fn's context is
// cancelled with ErrLost, which is then its validity deadline (Until).
func (g *goroutine) attemptDo(ctx context.Context, seq int) *Record {
	w := g.w
	r := &Record{Worker: w.cfg.ID, G: g.g, PID: w.pid, Seq: seq, Do: true, TTL: int64(w.cfg.TTL), AutoRefresh: true}
	octx, cancel := context.WithTimeout(ctx, w.cfg.ObtainTimeout)
	defer cancel()
	var lostAt atomic.Int64
	ran := false
	r.Call = Mono()
	err := g.locks.Do(octx, w.cfg.Key, w.cfg.TTL, func(fctx context.Context) error {
		ran = true
		r.Start = Mono()
		stop := context.AfterFunc(fctx, func() {
			if errors.Is(context.Cause(fctx), keyward.ErrLost) {
				lostAt.Store(Mono())
			}
		})
		defer stop()
		if errors.Is(context.Cause(fctx), keyward.ErrLost) {
			r.Result, r.Until = ExpiredOnArrival, r.Start
			r.RelCall = Mono()
			return nil
		}
		r.Result = Obtained
		value, err := g.observeHeld()
		fence, _ := lock.FenceFrom(fctx)
		r.HeldAt = Mono()
		switch {
		case err != nil:
			r.StoreErr = "observing the lock key: " + err.Error() // no fault reaches the direct path here
		case !strings.HasSuffix(value, g.mine):
			r.HeldChecked = true // the key is not this goroutine's: lost under a holder that believes it valid
		default:
			r.Token, r.Fence = value, fence
			w.section(r, value, func() time.Time {
				if lostAt.Load() != 0 {
					return time.Time{} // lost: no longer valid
				}
				return time.Now().Add(time.Hour) // valid until fn returns
			})
		}
		r.RelCall = Mono()
		r.Until = r.RelCall
		if at := lostAt.Load(); at != 0 {
			r.Until = at
		}
		return nil
	})
	r.RelEnd = Mono()
	if !ran {
		r.Start = r.RelEnd
		g.failed(ctx, r, octx, err)
		return r
	}
	r.settleRelease(err)
	if errors.Is(err, keyward.ErrLost) {
		r.LostFired = true // Do has no Lost channel to read: its ErrLost is the loss told
	}
	return r
}

// observeHeld reads the lock key directly.
func (g *goroutine) observeHeld() (value string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	value, err = g.w.observe[0].Get(ctx, g.w.cfg.Key).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", err
	}
	return value, nil
}

// section is the critical section: a non-atomic increment of the counter, then a fenced write, then a direct
// look at the lock key while until (the lock's validity deadline) has not passed.
func (w *worker) section(r *Record, value string, until func() time.Time) {
	ctx := context.Background()
	n, err := w.store.Get(ctx, w.keys.Counter).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		r.StoreErr = err.Error()
		r.End = Mono()
		return
	}
	r.Read = n
	time.Sleep(w.cfg.Hold) // the window in which another holder would lose this update
	if err := w.store.Set(ctx, w.keys.Counter, n+1, 0).Err(); err != nil {
		r.StoreErr = err.Error()
		r.End = Mono()
		return
	}
	r.Wrote = true
	r.WStart = Mono()
	ok, err := FencedWrite(ctx, w.store, w.keys, r.Fence, fmt.Sprintf("%d.%d %d", r.Worker, r.G, r.Seq))
	r.WEnd = Mono()
	r.End = r.WEnd
	if err != nil {
		r.StoreErr = err.Error()
		return
	}
	r.Accepted = ok

	if time.Now().Before(until()) {
		// Is the key still ours (on a majority of the nodes, for Redlock)? Read directly, past any fault on the
		// lock client's path. Reads that return before the validity deadline must find it: the nodes keep the
		// key at least until then.
		answered, holding := 0, 0
		for _, o := range w.observe {
			v, err := o.Get(ctx, w.cfg.Key).Result()
			if err == nil || errors.Is(err, redis.Nil) {
				answered++
				if v == value {
					holding++
				}
			}
		}
		r.HeldAt = Mono()
		// A node that does not answer (killed, stopped) may still hold the token: Redlock keeps the lock while
		// its holder's nodes that are alive plus those it cannot see make a majority, and no one else can then
		// get one. On one node, the key must simply hold the token.
		quorum := len(w.observe)/2 + 1
		r.HeldChecked = answered >= quorum
		r.Held = holding+len(w.observe)-answered >= quorum
	}
}

// ownKeyLeft returns the lock key's value on a node where it is one of this goroutine's although the attempt
// failed: the goroutine runs one attempt at a time, so it comes from the attempt that just failed or from an
// earlier lock whose release failed (the checker tells them apart by the token).
func (g *goroutine) ownKeyLeft() (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, o := range g.w.observe {
		if v, err := o.Get(ctx, g.w.cfg.Key).Result(); err == nil && strings.HasSuffix(v, g.mine) {
			return v, true
		}
	}
	return "", false
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// settleRelease records in r the outcome of a release that returned err.
func (r *Record) settleRelease(err error) {
	switch {
	case err == nil:
		r.Release = Released
	case errors.Is(err, keyward.ErrLost):
		r.Release = ReleaseLost
	case errors.Is(err, keyward.ErrNotHeld):
		r.Release = ReleaseNotHeld
	default:
		r.Release = ReleaseFailed
	}
	if err != nil {
		r.RelErr = err.Error()
	}
}
