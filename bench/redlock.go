package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/redlock"
)

// redlockRows is keyward's Redlock on three servers.
func redlockRows() []library {
	return []library{{
		Name: "keyward redlock", Keyward: true, Nodes: 3,
		Setup: "`redlock.New([]redis.UniversalClient{a, b, c})`, `Obtain(ctx, key, 8s)`: defaults",
		Open:  openRedlock,
	}}
}

type redlockLocker struct {
	rdbs      []*redis.Client
	c         *redlock.Client
	tries     *acquireCount
	obtained  atomic.Int64
	startDiff int64
}

func openRedlock(addrs []string) (locker, error) {
	rdbs := goredisClients(addrs)
	tries := &acquireCount{}
	var nodes []redis.UniversalClient
	for _, r := range rdbs {
		r.AddHook(tries)
		nodes = append(nodes, r)
	}
	c, err := redlock.New(nodes)
	if err != nil {
		return nil, errors.Join(err, closeAll(rdbs))
	}
	return &redlockLocker{rdbs: rdbs, c: c, tries: tries}, nil
}

func (r *redlockLocker) Obtain(ctx context.Context, key string) (func(context.Context) error, error) {
	l, err := r.c.Obtain(ctx, key, ttl)
	if err != nil {
		return nil, err
	}
	r.obtained.Add(1)
	return l.Release, nil
}

func (r *redlockLocker) Try(ctx context.Context, key string, ttl time.Duration) (func(context.Context) error, error) {
	l, err := r.c.TryObtain(ctx, key, ttl)
	if err != nil {
		return nil, err
	}
	return l.Release, nil
}

// FailedTries counts the tries that did not end with the lock. Each try sends every node one acquire script.
func (r *redlockLocker) FailedTries() (int64, bool) {
	return r.tries.n.Load()/int64(len(r.rdbs)) - r.obtained.Load() - r.startDiff, true
}

func (r *redlockLocker) resetCounts() {
	r.startDiff = r.tries.n.Load()/int64(len(r.rdbs)) - r.obtained.Load()
}

func (r *redlockLocker) GaveUp() int64 { return 0 }

func (r *redlockLocker) Close() error { return errors.Join(r.c.Close(), closeAll(r.rdbs)) }

// acquireCount is a go-redis hook that counts keyward's acquire scripts: the scripts with three keys (lock,
// fencing counter, queue; the release script has four, refresh and pttl one). A NOSCRIPT answer and the EVAL
// that follows count once.
type acquireCount struct{ n atomic.Int64 }

func (p *acquireCount) DialHook(next redis.DialHook) redis.DialHook { return next }
func (p *acquireCount) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		name, args := cmd.Name(), cmd.Args()
		sent := name == "eval" || name == "evalsha" && !isNoScript(err) // a NOSCRIPT is sent again as EVAL
		if sent && len(args) > 2 && fmt.Sprint(args[2]) == "3" {
			p.n.Add(1)
		}
		return err
	}
}
func (p *acquireCount) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func isNoScript(err error) bool { return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") }
