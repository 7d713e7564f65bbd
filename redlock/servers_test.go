package redlock_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/redlock"
)

// The tests in this file run against real redis-server processes, which they kill, stop and restart.

func TestMutualExclusionUnderContention(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(fmt.Sprintf("%d nodes", n), func(t *testing.T) {
			_, clients := realNodes(t, n)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var inside, entered atomic.Int64
			var wg sync.WaitGroup
			for range 3 { // processes, each with its own Client
				locks := newClient(t, universal(clients))
				for range 2 {
					wg.Go(func() {
						for range 5 {
							err := locks.Do(ctx, "shared", 10*time.Second, func(context.Context) error {
								assert.Equal(t, int64(1), inside.Add(1), "two holders at once")
								time.Sleep(time.Millisecond) // work under the lock
								inside.Add(-1)
								entered.Add(1)
								return nil
							})
							if !assert.NoError(t, err) {
								return
							}
						}
					})
				}
			}
			wg.Wait()
			assert.Equal(t, int64(30), entered.Load(), "every Do got its turn")
		})
	}
}

func TestMinorityDownStillObtains(t *testing.T) {
	for _, tt := range []struct{ nodes, down int }{{3, 1}, {5, 2}} {
		t.Run(fmt.Sprintf("%d of %d down", tt.down, tt.nodes), func(t *testing.T) {
			servers, clients := realNodes(t, tt.nodes)
			for _, s := range servers[:tt.down] {
				s.Kill(t)
			}
			ctx := context.Background()
			locks := newClient(t, universal(clients))
			l, err := locks.TryObtain(ctx, "job", 10*time.Second)
			require.NoError(t, err)
			require.NoError(t, l.Refresh(ctx, 20*time.Second))
			ttl, err := l.TTL(ctx)
			require.NoError(t, err)
			assert.Greater(t, ttl, 10*time.Second)
			_, err = newClient(t, universal(clients)).TryObtain(ctx, "job", 10*time.Second)
			require.ErrorIs(t, err, redlock.ErrNotObtained)
			require.NoError(t, l.Release(ctx))
		})
	}
}

func TestMajorityDownFailsFast(t *testing.T) {
	for _, tt := range []struct{ nodes, down int }{{3, 2}, {5, 3}} {
		t.Run(fmt.Sprintf("%d of %d down", tt.down, tt.nodes), func(t *testing.T) {
			servers, clients := realNodes(t, tt.nodes)
			ctx := context.Background()
			locks := newClient(t, universal(clients))
			warm, err := locks.TryObtain(ctx, "warm", 10*time.Second) // connections open, scripts loaded
			require.NoError(t, err)
			require.NoError(t, warm.Release(ctx))
			// A Client on the same (warm) node clients, with a short node timeout.
			fast := newClient(t, universal(clients), redlock.WithNodeTimeout(50*time.Millisecond))
			for _, s := range servers[:tt.down] {
				s.Kill(t)
			}
			start := time.Now()
			_, err = fast.TryObtain(ctx, "job", 10*time.Second)
			took := time.Since(start)
			require.ErrorIs(t, err, redlock.ErrQuorum)
			assert.NotErrorIs(t, err, redlock.ErrNotObtained)
			assert.Contains(t, err.Error(), fmt.Sprintf("of %d nodes (need %d)", tt.nodes, tt.nodes/2+1))
			assert.Contains(t, err.Error(), servers[0].Addr(), "the causes name the nodes")
			var ne *keyward.NodeError
			require.ErrorAs(t, err, &ne)
			assert.Equal(t, 0, ne.Node)
			assert.Equal(t, servers[0].Addr(), ne.Addr)
			// Bounded by the node timeout (50 ms) and the live nodes' clean-up; the benchmark has the exact cost.
			assert.Less(t, took, 2*time.Second)

			// Obtain rides the outage out until its ctx ends, and then says what went wrong last.
			octx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			defer cancel()
			_, err = fast.Obtain(octx, "another", 10*time.Second)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.ErrorIs(t, err, redlock.ErrQuorum)
			assert.Contains(t, err.Error(), `redlock "another": obtain:`)
		})
	}
}

func TestObtainWithANodeDown(t *testing.T) {
	servers, clients := realNodes(t, 3)
	servers[2].Kill(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	holder, waiter := newClient(t, universal(clients)), newClient(t, universal(clients))
	l, err := holder.TryObtain(ctx, "job", time.Minute)
	require.NoError(t, err)

	got := make(chan error, 1)
	go func() {
		w, err := waiter.Obtain(ctx, "job", time.Minute)
		if err == nil {
			err = w.Release(ctx)
		}
		got <- err
	}()
	_, err = newClient(t, universal(clients)).TryObtain(ctx, "job", time.Minute)
	require.ErrorIs(t, err, redlock.ErrNotObtained)
	require.NoError(t, l.Release(ctx))
	// ctx (30 s) ends before the holder's ttl (1 min) would: only a release message can wake the waiter in time.
	require.NoError(t, <-got, "woken by the live nodes' release messages")
}

func TestStoppedNodeDoesNotStallTheLock(t *testing.T) {
	servers, clients := realNodes(t, 3)
	ctx := context.Background()
	locks := newClient(t, universal(clients)) // node timeout 2 s
	servers[0].Pause(t)
	t.Cleanup(func() { servers[0].Resume(t) }) // before the Client's Close (last in, first out), which waits for it
	start := time.Now()
	l, err := locks.TryObtain(ctx, "job", 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Refresh(ctx, 10*time.Second))
	require.NoError(t, l.Release(ctx))
	assert.Less(t, time.Since(start), time.Second, "decided by the live majority, not at the stopped node's timeout")
}

// The restart rule: a node that lost its data (restarted without persistence) must stay away until every lock
// it may have granted has expired. Followed, the lock stays exclusive and fences keep growing, even when the next
// majority is made of nodes that all lost their data. Broken, two holders can hold the lock at once; fences still
// grow (they follow the clock of the acquiring clients, a second ahead), so storage that checks them refuses the
// older holder.
func TestRestartedNode(t *testing.T) {
	ctx := context.Background()
	t.Run("rule followed", func(t *testing.T) {
		servers, clients := realNodes(t, 3)
		locks := newClient(t, universal(clients))
		servers[1].Kill(t)
		first, err := locks.TryObtain(ctx, "job", time.Second) // on nodes 0 and 2
		require.NoError(t, err)

		servers[2].Kill(t) // crashes, and loses the lock and its counter
		servers[1].Restart(t)
		_, err = locks.TryObtain(ctx, "job", time.Second)
		require.Error(t, err, "node 0 still holds the first lock: no majority")

		<-first.Lost() // the first lock's validity is over: node 2 may come back
		servers[2].Restart(t)
		servers[0].Kill(t) // the last node that remembers the first fence
		// On nodes 1 and 2, both restarted empty. Obtain, not TryObtain: the failed try above may have taken
		// node 1, and its clean-up, sent in the background, may not be done yet.
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		second, err := locks.Obtain(octx, "job", time.Second)
		require.NoError(t, err)
		assert.Greater(t, second.Fence(), first.Fence())
		require.NoError(t, second.Release(ctx))
	})
	t.Run("restarted at once", func(t *testing.T) {
		servers, clients := realNodes(t, 3)
		locks := newClient(t, universal(clients))
		servers[1].Kill(t)
		first, err := locks.TryObtain(ctx, "job", 10*time.Second) // on nodes 0 and 2
		require.NoError(t, err)
		// The try's acquire on node 1 goes on after it returned (go-redis retries the dial, within the node
		// timeout): Close waits for it, so that it cannot land on node 1 once restarted.
		require.NoError(t, locks.Close())
		locks = newClient(t, universal(clients))

		servers[2].Restart(t) // crashes and comes back at once, empty
		servers[1].Restart(t)
		second, err := locks.TryObtain(ctx, "job", 10*time.Second) // on nodes 1 and 2
		require.NoError(t, err, "the rule was broken: a second holder gets the lock")
		assert.True(t, time.Now().Before(first.Until()), "while the first holder still trusts its lock")
		assert.Greater(t, second.Fence(), first.Fence(), "fences still grow: storage refuses the first holder")
		require.NoError(t, second.Release(ctx))
	})
}
