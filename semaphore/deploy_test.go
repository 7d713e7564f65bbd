package semaphore_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/semaphore"
)

// The semaphore on a Sentinel group and on a Cluster, through a failover, with go-redis failover and cluster
// clients at their default options.

func TestSentinelFailover(t *testing.T) {
	g := redistest.StartSentinel(t)
	permitsThroughFailover(t, g.Client(t), g.Client(t), "deploy:sem", func(t *testing.T) { g.Failover(t) })
}

func TestClusterFailover(t *testing.T) {
	c := redistest.StartCluster(t)
	permitsThroughFailover(t, c.Client(t), c.Client(t), "deploy:sem", func(t *testing.T) { c.Failover(t, "deploy:sem") })
}

// permitsThroughFailover fills a semaphore of one permit (held with auto-refresh), has a waiter of another
// process wait for it, runs failover, and releases the permit on the new master: the holder kept it, the waiter
// gets it by the release's message (not by its timer at the holder's ttl), with a larger fence, and the new
// master admits no one else meanwhile.
func permitsThroughFailover(t *testing.T, holderRdb, waiterRdb redis.UniversalClient, name string, failover func(t *testing.T)) {
	const ttl = 30 * time.Second
	ctx := withTimeout(t, time.Minute)
	holder := newSem(t, holderRdb, name, 1, semaphore.WithFencing())
	held, err := holder.Acquire(ctx, ttl, semaphore.WithAutoRefresh())
	require.NoError(t, err)

	hook, subscribed := waiting(2)
	waiterRdb.AddHook(hook)
	waiter := newSem(t, waiterRdb, name, 1, semaphore.WithFencing())
	type acquired struct {
		p   *semaphore.Permit
		at  time.Time
		err error
	}
	got := make(chan acquired, 1)
	go func() {
		p, err := waiter.Acquire(ctx, ttl)
		got <- acquired{p, time.Now(), err}
	}()
	select {
	case <-subscribed:
	case a := <-got:
		t.Fatalf("Acquire returned before waiting: %v", a.err)
	}

	start := time.Now()
	failover(t)
	t.Logf("failover: %v", time.Since(start).Round(time.Millisecond))
	select {
	case <-held.Lost():
		t.Fatalf("the holder's permit was lost in a clean failover: %v", held.Err())
	default:
	}
	// The promoted replica has the permit: no room for anyone else.
	_, err = newSem(t, holderRdb, name, 1).TryAcquire(ctx, ttl)
	require.ErrorIs(t, err, semaphore.ErrNotObtained)

	released := time.Now()
	require.NoError(t, held.Release(ctx), "the holder kept its permit through the failover")
	a := <-got
	require.NoError(t, a.err)
	wake := a.at.Sub(released)
	t.Logf("release → waiter acquired: %v (fence %d after %d)", wake.Round(time.Microsecond), a.p.Fence(), held.Fence())
	assert.Less(t, wake, ttl/3, "woken by the release, not by its timer at the holder's ttl")
	assert.Greater(t, a.p.Fence(), held.Fence())
	require.NoError(t, a.p.Release(ctx))
}
