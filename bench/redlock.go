package main

import (
	"context"
	"errors"
	"sync/atomic"

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
	tries     *pipelineCount
	obtained  atomic.Int64
	startDiff int64
}

func openRedlock(addrs []string) (locker, error) {
	rdbs := goredisClients(addrs)
	tries := &pipelineCount{}
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

// FailedTries counts the tries that did not end with the lock. Each try sends every node one pipeline (the
// fence raise and the acquire script), and nothing else of redlock's is pipelined.
func (r *redlockLocker) FailedTries() (int64, bool) {
	return r.tries.n.Load()/int64(len(r.rdbs)) - r.obtained.Load() - r.startDiff, true
}

func (r *redlockLocker) resetCounts() {
	r.startDiff = r.tries.n.Load()/int64(len(r.rdbs)) - r.obtained.Load()
}

func (r *redlockLocker) GaveUp() int64 { return 0 }

func (r *redlockLocker) Close() error { return errors.Join(r.c.Close(), closeAll(r.rdbs)) }

// pipelineCount is a go-redis hook that counts pipelines.
type pipelineCount struct{ n atomic.Int64 }

func (p *pipelineCount) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (p *pipelineCount) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (p *pipelineCount) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		p.n.Add(1)
		return next(ctx, cmds)
	}
}
