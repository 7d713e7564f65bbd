package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/keyward/keyward/cmd/keyward/internal/demo"
)

var demoUsage = `Usage: keyward demo [flags]

The guided demo (what 'make demo' runs): simulated replicas, each a separate Redis client, show what a lock
changes, and every scenario checks an invariant:

  counter    N replicas read-modify-write a counter, without and with the lock (lost updates, then none), and
             a holder paused past its ttl whose late write Guard refuses
  stampede   1,000 concurrent requests for a cold cache entry: one database query, everyone served
  cron       a job every tick on three replicas in a leader election, the leader crashing mid-job: every
             tick runs exactly once
  handoff    hand-off latency under contention, measured live, next to a 100 ms polling loop

It runs on an embedded Redis (miniredis, in the keyward process) unless --redis is given; on a real server its
keys live under a random "keyward-demo:…:" prefix and are deleted at the end. $REDIS_URL is not used: the demo
never touches a server you did not name.

Flags:
  --redis URL        run on this Redis server (redis://, rediss:// or unix://) instead of the embedded one
  --tls-ca-file F, --tls-cert-file F, --tls-key-file F
                     TLS files for a rediss:// URL, as for the other commands
  --scenario NAMES   run only these scenarios, comma-separated (` + strings.Join(demo.Names(), ", ") + `)
  --timeout D        how long to wait for --redis to connect and answer (default 5s)

Exit status: 0 every invariant held, 70 one broke, 64 bad flags or URL, 69 Redis unreachable, 77 Redis refused
the credentials.
`

func demoCommand(ctx context.Context, env Env, args []string) error {
	var conn connFlags
	var only string
	fs := newFlagSet("demo")
	fs.StringVar(&conn.url, "redis", "", "")
	conn.timeout = 5 * time.Second
	newDuration(fs, &conn.timeout, "timeout", "")
	conn.registerTLS(fs)
	fs.StringVar(&only, "scenario", "", "")
	pos, err := parse(fs, args, -1)
	if done, err := help(env, demoUsage, err); done || err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q: the demo takes only flags", pos[0])
	}
	cfg := demo.Config{Out: env.Stdout, Progress: isTerminal(env.Stdout)}
	for _, s := range strings.Split(only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Scenarios = append(cfg.Scenarios, s)
		}
	}
	for _, s := range cfg.Scenarios {
		if !contains(demo.Names(), s) {
			return usagef("--scenario: unknown scenario %q (the scenarios: %s)", s, strings.Join(demo.Names(), ", "))
		}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if conn.url != "" {
		// Only an explicit --redis: the demo writes keys, so it never runs on $REDIS_URL by surprise.
		t, err := conn.target(conn.url)
		if err != nil {
			return err
		}
		if t.single == nil {
			// Its simulated replicas are clients of one server.
			return usagef("--redis: the demo runs on one server (redis://, rediss:// or unix://), not on %s", t.where)
		}
		rdb, _, err := conn.connect(ctx, env)
		if err != nil {
			return err
		}
		cfg.Redis = t.single
		_ = rdb.Close()
	}
	ok, err := demo.Run(ctx, cfg)
	switch {
	case ctx.Err() != nil:
		return exitWith(130, fmt.Errorf("interrupted"))
	case err != nil:
		return exitWith(ExitUnavailable, err)
	case !ok:
		return exitWith(ExitSoftware, nil)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// isTerminal reports whether w is a terminal, where progress lines can be redrawn in place.
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
