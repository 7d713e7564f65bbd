package lock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/keyspace"
	"github.com/keyward/keyward/lock"
)

// The lock on the deployments users run in production, through their failovers: a Sentinel group (one master,
// one replica, three sentinels) and a Cluster (three masters with a replica each), reached with go-redis
// failover and cluster clients at their default options. One deployment per test function, shared by its
// subtests: each failover leaves it settled for the next.

func TestSentinelFailovers(t *testing.T) {
	g := redistest.StartSentinel(t)

	t.Run("fences across a lagging failover", func(t *testing.T) {
		// The replica stops following; locks taken on the master meanwhile hand out fences F1 < F2 < F3 that
		// the replica never sees; the master dies and the replica is promoted with the counter as it was.
		fencesAcross(t, g.Client(t), "deploy:fence", func(t *testing.T, ctx context.Context) []int64 {
			var lost []int64
			g.FailoverLagging(t, func(master *redis.Client) {
				old := newClient(t, master)
				for range 3 {
					lost = append(lost, takeAndRelease(t, ctx, old, "deploy:fence"))
				}
			})
			return lost
		})
	})

	t.Run("fences across a clean failover", func(t *testing.T) {
		fencesAcross(t, g.Client(t), "deploy:fence", func(t *testing.T, _ context.Context) []int64 {
			g.Failover(t)
			return nil
		})
	})

	t.Run("a waiter through a failover", func(t *testing.T) {
		waiterThrough(t, g.Client(t), g.Client(t), "deploy:wait", func(t *testing.T) { g.Failover(t) })
	})
}

func TestClusterFailovers(t *testing.T) {
	c := redistest.StartCluster(t, redistest.WithNotify("Kgxe"))

	t.Run("fences across a failover", func(t *testing.T) {
		fencesAcross(t, c.Client(t), "deploy:fence", func(t *testing.T, _ context.Context) []int64 {
			c.Failover(t, "deploy:fence")
			return nil
		})
	})

	t.Run("a waiter through a failover", func(t *testing.T) {
		waiterThrough(t, c.Client(t), c.Client(t), "deploy:wait", func(t *testing.T) { c.Failover(t, "deploy:wait") })
	})

	// Keyspace notifications are node-local: the Watcher must listen on every master to hear them all.
	t.Run("waiters on every master woken by a DEL", func(t *testing.T) {
		ctx := withTimeout(t, 30*time.Second)
		rdb := c.Client(t)
		// A key on each master, taken by another tool (a plain SET without expiry): only its deletion's keyspace
		// notification can wake a waiter, there is no ttl for a timer.
		var keys []string
		owners := map[*redistest.Server]bool{}
		for i := 0; len(keys) < 3; i++ {
			k := fmt.Sprintf("deploy:del:%d", i)
			if m := c.MasterOf(k); m != nil && !owners[m] {
				owners[m] = true
				keys = append(keys, k)
				require.NoError(t, rdb.Set(ctx, k, "held by another tool", 0).Err())
			}
		}
		waiterRdb := c.Client(t)
		hook, waiting := waiting(int64(2 * len(keys))) // each waiter: a plain try, then one after subscribing
		waiterRdb.AddHook(hook)
		waiter := newClient(t, waiterRdb)
		closeClient(t, waiter)
		type obtained struct {
			key string
			at  time.Time
			err error
		}
		got := make(chan obtained, len(keys))
		for _, k := range keys {
			go func() {
				l, err := waiter.Obtain(ctx, k, time.Minute)
				at := time.Now()
				if err == nil {
					err = l.Release(context.WithoutCancel(ctx))
				}
				got <- obtained{k, at, err}
			}()
		}
		select {
		case <-waiting:
		case <-ctx.Done():
			t.Fatal("the waiters did not get to wait")
		}
		deleted := time.Now()
		for _, k := range keys {
			require.NoError(t, rdb.Del(ctx, k).Err())
		}
		for range keys {
			o := <-got
			require.NoError(t, o.err, "waiter on %s (master %s)", o.key, c.MasterOf(o.key))
			t.Logf("DEL → waiter on %s (master %s) obtained: %v", o.key, c.MasterOf(o.key), o.at.Sub(deleted))
			assert.Less(t, o.at.Sub(deleted), 5*time.Second, "woken by the keyspace notification of %s", o.key)
		}
	})
}

// fencesAcross takes and releases the lock key three times through rdb, runs failover (which returns the fences
// handed out on the old master in the meantime, if any), then takes the lock once more, on the new master: its
// fence must exceed every fence handed out before.
func fencesAcross(t *testing.T, rdb redis.UniversalClient, key string, failover func(t *testing.T, ctx context.Context) []int64) {
	ctx := withTimeout(t, time.Minute)
	locks := newClient(t, rdb)
	var before []int64
	for range 3 {
		before = append(before, takeAndRelease(t, ctx, locks, key))
	}
	lost := failover(t, ctx)
	after := takeAndRelease(t, ctx, locks, key)
	t.Logf("fences: before the failover %v, taken on the old master and lost %v, after the failover %d", before, lost, after)
	all := slices.Concat(before, lost)
	for i := 1; i < len(all); i++ {
		require.Greater(t, all[i], all[i-1], "fences on one master grow")
	}
	assert.Greater(t, after, slices.Max(all), "the first fence after the failover exceeds every fence before it")
}

// takeAndRelease takes the lock key with TryObtain, releases it and returns its fence. A failover client whose
// pooled connections died with the old master gets an error on its first command: that try is repeated, as an
// application would (the lock is free: nobody else takes it).
func takeAndRelease(t *testing.T, ctx context.Context, locks *lock.Client, key string) int64 {
	t.Helper()
	for {
		l, err := locks.TryObtain(ctx, key, 10*time.Second)
		if err != nil && ctx.Err() == nil && !errors.Is(err, keyward.ErrNotObtained) {
			t.Logf("TryObtain: %v; again", err)
			continue
		}
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx))
		return l.Fence()
	}
}

// waiterThrough has a holder take the lock key for 30 s with auto-refresh and a waiter (a Client of its own, as
// another process would have) wait for it in Obtain; then runs failover, and has the holder release the lock on
// the new master. The waiter must get it by the release's message, not by its timer at the holder's ttl.
// obtainReplicated takes the lock key through holder and returns once a replica acknowledged it (WAIT). Right
// after a failover a client may still write to the old master for a moment, before the sentinels turn it into a
// replica and its data is replaced by the new master's: a lock taken there is lost with it (the write-loss window
// of a Sentinel failover, see the README's Deployments). Such a lock is released and taken again.
func obtainReplicated(t *testing.T, ctx context.Context, holder *lock.Client, rdb redis.UniversalClient, key string,
	ttl time.Duration) *lock.Lock {
	t.Helper()
	for attempt := 1; ; attempt++ {
		held, err := holder.TryObtain(ctx, key, ttl, lock.WithAutoRefresh())
		require.NoError(t, err)
		acked, err := rdb.Do(ctx, "WAIT", 1, 2000).Int()
		require.NoError(t, err)
		if acked >= 1 {
			return held
		}
		_ = held.Release(ctx)
		require.Less(t, attempt, 10, "the lock's key reached no replica in %d tries: the deployment did not settle", attempt)
	}
}

func waiterThrough(t *testing.T, holderRdb, waiterRdb redis.UniversalClient, key string, failover func(t *testing.T)) {
	const ttl = 30 * time.Second
	ctx := withTimeout(t, time.Minute)
	holder := newClient(t, holderRdb)
	closeClient(t, holder)
	held := obtainReplicated(t, ctx, holder, holderRdb, key, ttl)

	hook, waiting := waiting(2)
	waiterRdb.AddHook(hook)
	watcher := keyspace.New(waiterRdb) // on the pub/sub connection the waiter's Client shares
	t.Cleanup(func() { assert.NoError(t, watcher.Close()) })
	waiter := newClient(t, waiterRdb)
	closeClient(t, waiter)
	type obtained struct {
		l  *lock.Lock
		at time.Time
	}
	got, failed := make(chan obtained, 1), make(chan error, 1)
	go func() {
		l, err := waiter.Obtain(ctx, key, ttl)
		if err != nil {
			failed <- err
			return
		}
		got <- obtained{l, time.Now()}
	}()
	select {
	case <-waiting:
	case err := <-failed:
		t.Fatalf("Obtain returned before waiting: %v", err)
	case <-ctx.Done():
		t.Fatal("the waiter did not get to wait")
	}

	// A watch of the test's own on the connection the waiter shares sees what the waiter's watch sees.
	observe, err := watcher.Watch(ctx, key)
	require.NoError(t, err)
	defer observe.Close()
	reconnected := make(chan time.Time, 1)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for {
			e, err := observe.Wait(wctx)
			if err != nil {
				return
			}
			if e == keyspace.Reconnected {
				reconnected <- time.Now()
				return
			}
		}
	}()

	start := time.Now()
	failover(t)
	failedOver := time.Now()
	t.Logf("failover: %v", failedOver.Sub(start).Round(time.Millisecond))
	select {
	case o := <-got:
		t.Fatalf("the waiter obtained the lock (fence %d) while it was held, during the failover", o.l.Fence())
	default:
	}
	select {
	case <-held.Lost():
		t.Logf("the holder's lease was lost in the failover: %v", held.Err())
	default:
	}

	released := time.Now()
	if err := held.Release(ctx); err != nil {
		require.ErrorIs(t, err, keyward.ErrLost, "only a lease lost in the failover may fail to release")
	}
	var o obtained
	select {
	case o = <-got:
	case err := <-failed:
		t.Fatalf("Obtain: %v", err)
	}
	select {
	case at := <-reconnected:
		t.Logf("the waiter's watch reconnected %v after the failover began (%v after it returned)",
			at.Sub(start).Round(time.Millisecond), at.Sub(failedOver).Round(time.Millisecond))
	default:
		t.Logf("the waiter's watch did not reconnect before it obtained the lock")
	}
	wake := o.at.Sub(released)
	t.Logf("release → waiter obtained: %v (fence %d after %d)", wake.Round(time.Microsecond), o.l.Fence(), held.Fence())
	assert.Less(t, wake, ttl/3, "woken by the release, not by its timer at the holder's ttl")
	assert.Greater(t, o.l.Fence(), held.Fence())
	require.NoError(t, o.l.Release(ctx))
}
