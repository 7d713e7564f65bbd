package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/redlock"
)

// openQuorum connects to the --nodes quorum: independent servers, of which a majority must answer.
func (f *lockFlags) openQuorum(ctx context.Context, env Env, autoRefresh bool) (*backend, error) {
	if f.conn.url != "" {
		return nil, usagef("--nodes and --redis exclude each other: --nodes lists every server of the quorum")
	}
	urls := splitNodes(f.nodes)
	if len(urls) == 0 {
		return nil, usagef("--nodes: no URL (want --nodes redis://a:6379,redis://b:6379,redis://c:6379)")
	}
	// A node may be any deployment a URL names: one server, or the master of a Sentinel group (a quorum of
	// groups keeps its majority through failovers), or even a Cluster.
	clients := make([]redis.UniversalClient, len(urls))
	targets := make([]*target, len(urls))
	closeAll := func() {
		for _, c := range clients {
			if c != nil {
				_ = c.Close()
			}
		}
	}
	for i, u := range urls {
		t, err := f.conn.target(u)
		if err != nil {
			closeAll()
			return nil, err
		}
		targets[i], clients[i] = t, t.client()
	}
	// A minority may be down: that is what a quorum is for. Refused credentials are a mistake to report.
	errs := make([]error, len(urls))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { errs[i] = ping(ctx, c, targets[i], f.conn.timeout) })
	}
	wg.Wait()
	up := 0
	var down []string
	for i, err := range errs {
		var exit *exitError
		switch {
		case err == nil:
			up++
		case errors.As(err, &exit) && (exit.code == ExitNoPermission || exit.code == ExitUsage):
			closeAll()
			return nil, err
		default:
			down = append(down, fmt.Sprintf("node %d: %v", i+1, err))
		}
	}
	if quorum := len(urls)/2 + 1; up < quorum {
		closeAll()
		return nil, exitWith(ExitUnavailable, fmt.Errorf("only %d of %d nodes answer, a quorum needs %d:\n  %s",
			up, len(urls), quorum, strings.Join(down, "\n  ")))
	}
	for _, d := range down {
		fmt.Fprintf(env.Stderr, "keyward: %s; going on with a majority\n", d)
	}
	locks, err := redlock.New(clients, redlock.WithPrefix(f.conn.prefix))
	if err != nil {
		closeAll()
		return nil, err
	}
	var opts []redlock.ObtainOption
	if autoRefresh {
		opts = append(opts, redlock.WithAutoRefresh())
	}
	return &backend{
		locker: locks.Locker(opts...),
		prefix: f.conn.prefix,
		close: func() {
			_ = locks.Close()
			closeAll()
		},
	}, nil
}
