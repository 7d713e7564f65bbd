package ratelimit_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/ratelimit"
)

// The rate limiter on a Sentinel group and on a Cluster, with go-redis failover and cluster clients at their
// default options: its state goes to the new master with a clean failover, and a failover that lost it lets
// through at most one more burst, never under this process's own limiter.

// hourly is one event an hour: a limiter of it answers Allow with a clear yes or no for the length of a test.
var hourly = ratelimit.Every(time.Hour, 1)

func deployCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// allowed reports whether lim lets one event through now.
func allowed(t *testing.T, ctx context.Context, lim *ratelimit.Limiter) bool {
	t.Helper()
	res, err := lim.Allow(ctx)
	require.NoError(t, err)
	return res.Allowed == 1
}

func TestSentinelFailover(t *testing.T) {
	g := redistest.StartSentinel(t)
	ctx := deployCtx(t)
	lim := newLimiter(t, g.Client(t), "deploy:clean", hourly)
	require.True(t, allowed(t, ctx, lim))
	g.Failover(t)
	other := newLimiter(t, g.Client(t), "deploy:clean", hourly) // another process: it knows only the server
	assert.False(t, allowed(t, ctx, other), "the promoted replica has the limiter's state")
	assert.False(t, allowed(t, ctx, lim))
}

// A failover to a replica that missed the last decision is a server that lost its state: a process that did
// not see that decision gets one more burst, the documented bound, while the Limiter that made it keeps its pace.
func TestSentinelFailoverThatLostTheState(t *testing.T) {
	g := redistest.StartSentinel(t)
	ctx := deployCtx(t)
	lim := newLimiter(t, g.Client(t), "deploy:lagging", hourly)
	g.FailoverLagging(t, func(*redis.Client) {
		require.True(t, allowed(t, ctx, lim), "on the master the replica no longer hears")
	})
	exists, err := g.Client(t).Exists(ctx, "deploy:lagging").Result()
	require.NoError(t, err)
	require.Zero(t, exists, "the promoted replica never saw the decision")

	assert.False(t, allowed(t, ctx, lim), "the Limiter remembers the turn it was given, and starts no new burst")
	other := newLimiter(t, g.Client(t), "deploy:lagging", hourly)
	assert.True(t, allowed(t, ctx, other), "a process that did not see it gets one more burst (the bound)")
	assert.False(t, allowed(t, ctx, other), "and no more")
	assert.False(t, allowed(t, ctx, lim))
}

// Limiters whose keys live on every master of a Cluster, through a cluster client: each keeps its own limit,
// Wait works, and a clean failover of one master keeps its limiters' state.
func TestCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	ctx := deployCtx(t)
	rdb := c.Client(t)
	var names []string
	owners := map[*redistest.Server]bool{}
	for i := 0; len(names) < len(c.Masters()); i++ {
		name := fmt.Sprintf("deploy:cluster:%d", i)
		if m := c.MasterOf(name); m != nil && !owners[m] {
			owners[m] = true
			names = append(names, name)
		}
	}
	for _, name := range names {
		lim := newLimiter(t, rdb, name, hourly)
		require.True(t, allowed(t, ctx, lim), name)
		require.False(t, allowed(t, ctx, lim), name)
	}

	// Wait through the cluster client: 20 ms apart, in line.
	fast := newLimiter(t, rdb, "deploy:cluster:wait", ratelimit.Every(20*time.Millisecond, 1))
	start := time.Now()
	for range 3 {
		require.NoError(t, fast.Wait(ctx))
	}
	assert.GreaterOrEqual(t, time.Since(start), 40*time.Millisecond, "the second and third waited their turns")

	c.Failover(t, names[0])
	other := newLimiter(t, c.Client(t), names[0], hourly)
	assert.False(t, allowed(t, ctx, other), "the promoted replica has the limiter's state")
}
