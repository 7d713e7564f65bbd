// Package demo is keyward's guided demonstration, what `make demo` and `keyward demo` run: a few scenarios that
// each show a problem a distributed lock solves, with several simulated replicas (each a separate Redis client
// with its own lock.Client, in this one process), and each with an invariant that is checked, not just shown.
//
// Without a server given, it runs on an embedded Redis (miniredis) whose keys expire on the wall clock, so it
// needs nothing installed. With one, it keeps its keys under a random prefix and deletes them at the end.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/keyward/keyward/keyspace"
	"github.com/keyward/keyward/lock"
)

// Config says where and how the demo runs.
type Config struct {
	// Redis is the server to run on; nil starts an embedded miniredis.
	Redis *redis.Options
	// Out receives the demo's report.
	Out io.Writer
	// Progress draws a progress line, redrawn in place, for steps longer than a second; for terminals.
	Progress bool
	// Scenarios are the names of the scenarios to run (see Names); all of them when empty.
	Scenarios []string
}

// scenarioTimeout bounds one scenario, so that a bug shows as a failure instead of a hang.
const scenarioTimeout = 20 * time.Second

type scenario struct {
	name  string
	title string
	run   func(ctx context.Context, e *env) error
}

func scenarios() []scenario {
	return []scenario{
		{"counter", "Shared counter: read-modify-write from several replicas", counter},
		{"stampede", "Cache stampede: a cold cache entry and 1,000 concurrent requests", stampede},
		{"cron", "Cron across replicas with leader election: a job that must run once per tick", cron},
		{"handoff", "Hand-off latency under contention, measured live", handoff},
	}
}

// Names returns the names of the scenarios, in the order they run.
func Names() []string {
	var names []string
	for _, s := range scenarios() {
		names = append(names, s.name)
	}
	return names
}

// Run runs the scenarios and reports whether every invariant held. An error means the demo could not run at all
// (no server, an unknown scenario name); a scenario that fails is reported in the output and makes ok false.
func Run(ctx context.Context, cfg Config) (ok bool, err error) {
	todo, err := pick(cfg.Scenarios)
	if err != nil {
		return false, err
	}
	out := newPrinter(cfg.Out, cfg.Progress)
	opts := cfg.Redis
	where := ""
	if opts == nil {
		srv := miniredis.NewMiniRedis()
		// Keys expire on the wall clock, as on a real server (miniredis otherwise only expires on FastForward).
		srv.ClockTTL(true)
		if err := srv.Start(); err != nil {
			return false, fmt.Errorf("starting the embedded Redis: %w", err)
		}
		defer srv.Close()
		opts = &redis.Options{Addr: srv.Addr()}
		where = fmt.Sprintf("an embedded Redis (miniredis, in this process, at %s)", srv.Addr())
	} else {
		where = "Redis at " + opts.Addr
	}
	e := newEnv(opts, out, cfg.Redis == nil)
	defer e.cleanUp(ctx)

	began := time.Now()
	if cfg.Redis != nil {
		where += fmt.Sprintf(", keys under %q (deleted at the end)", e.prefix)
	}
	out.line("keyward demo on %s.", where)
	out.line("Each replica is a separate Redis client with its own lock.Client, all in this one process.")
	failed := 0
	for i, s := range todo {
		out.line("")
		out.line("[%d/%d] %s", i+1, len(todo), s.title)
		before := out.failures()
		sctx, cancel := context.WithTimeout(ctx, scenarioTimeout)
		err := s.run(sctx, e)
		cancel()
		e.closeReplicas()
		switch {
		case ctx.Err() != nil:
			return false, context.Cause(ctx)
		case errors.Is(err, context.DeadlineExceeded) && sctx.Err() != nil:
			out.check(false, "did not finish within %v", scenarioTimeout)
		case err != nil:
			out.check(false, "%v", err)
		}
		if out.failures() > before {
			failed++
		}
	}
	out.line("")
	if failed > 0 {
		out.line("FAILED: %d of %d scenarios broke an invariant (%.1f s)", failed, len(todo), time.Since(began).Seconds())
		return false, nil
	}
	out.line("Every invariant held: %d of %d scenarios ok (%.1f s).", len(todo), len(todo), time.Since(began).Seconds())
	return true, nil
}

// pick returns the scenarios named, in their usual order; all when names is empty.
func pick(names []string) ([]scenario, error) {
	all := scenarios()
	if len(names) == 0 {
		return all, nil
	}
	want := map[string]bool{}
	for _, n := range names {
		found := false
		for _, s := range all {
			found = found || s.name == n
		}
		if !found {
			return nil, fmt.Errorf("unknown scenario %q (the scenarios: %s)", n, strings.Join(Names(), ", "))
		}
		want[n] = true
	}
	var out []scenario
	for _, s := range all {
		if want[s.name] {
			out = append(out, s)
		}
	}
	return out, nil
}

// env is what scenarios share: the server, the key prefix, the report.
type env struct {
	opts     *redis.Options
	prefix   string
	out      *printer
	replicas []*replica // of the running scenario, closed after it
	admin    *redis.Client
	inProc   bool // the server is the embedded miniredis
}

func newEnv(opts *redis.Options, out *printer, embedded bool) *env {
	var b [4]byte
	_, _ = rand.Read(b[:])
	e := &env{opts: opts, prefix: "keyward-demo:" + hex.EncodeToString(b[:]) + ":", out: out, inProc: embedded}
	e.admin = e.newClient()
	return e
}

// embedded reports whether the demo runs on the embedded miniredis.
func (e *env) embedded() bool { return e.inProc }

// newClient returns a client of its own, as a replica on another machine would have.
func (e *env) newClient() *redis.Client {
	o := *e.opts
	// Hundreds of concurrent requests per replica share the pool: they wait for a connection, never fail for
	// lack of one.
	o.PoolSize = 64
	o.PoolTimeout = scenarioTimeout
	o.DisableIdentity = true
	o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return redis.NewClient(&o)
}

// key returns the Redis key for a demo data key: under the demo's prefix, like the lock names.
func (e *env) key(name string) string { return e.prefix + name }

// replica is one simulated replica of a service: its own Redis client and lock.Client.
type replica struct {
	name    string
	rdb     *redis.Client
	locks   *lock.Client
	watcher *keyspace.Watcher // waits on the pub/sub connection its lock.Client shares, for other waits
	prefix  string            // the lock names' prefix
}

// newReplicas starts n replicas, named replica-1 to replica-n; they are closed after the scenario.
func (e *env) newReplicas(n int, opts ...lock.Option) ([]*replica, error) {
	var rs []*replica
	for i := range n {
		rdb := e.newClient()
		w := keyspace.New(rdb)
		locks, err := lock.New(rdb, append([]lock.Option{lock.WithPrefix(e.prefix)}, opts...)...)
		if err != nil {
			_ = w.Close()
			_ = rdb.Close()
			return nil, err
		}
		r := &replica{name: fmt.Sprintf("replica-%d", i+1), rdb: rdb, locks: locks, watcher: w, prefix: e.prefix}
		e.replicas = append(e.replicas, r)
		rs = append(rs, r)
	}
	return rs, nil
}

// crash ends the replica as a crash would: its connections close at once, nothing is released.
func (r *replica) crash() { _ = r.rdb.Close() }

func (e *env) closeReplicas() {
	for _, r := range e.replicas {
		_ = r.locks.Close()
		_ = r.watcher.Close()
		_ = r.rdb.Close()
	}
	e.replicas = nil
}

// cleanUp deletes the demo's keys (a real server is left as it was found) and closes the last client.
func (e *env) cleanUp(ctx context.Context) {
	e.closeReplicas()
	defer e.admin.Close()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	// Derived names wrap the lock name in braces ("{keyward-demo:…:x}:fence"): match the prefix anywhere.
	iter := e.admin.Scan(ctx, 0, "*"+e.prefix+"*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 500 {
			_ = e.admin.Del(ctx, batch...).Err()
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		_ = e.admin.Del(ctx, batch...).Err()
	}
}
