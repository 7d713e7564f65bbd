package keyspace_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/keyspace"
	"github.com/keyward/keyward/lock"
	"github.com/keyward/keyward/redlock"
	"github.com/keyward/keyward/semaphore"
)

// Every package passes the observer given to its WithObserver to the shared connection of its client: a
// rebuilt connection is told to each, with Source "keyspace", whichever user's watches it carried.
func TestEveryPackagesObserverHearsTheSharedConnection(t *testing.T) {
	srv := redistest.Start(t)
	admin, rdb := srv.Client(t), srv.Client(t)
	ctx := withTimeout(t, 20*time.Second)
	heard := map[string]*observe.Recorder{}
	for _, name := range []string{"lock", "redlock", "semaphore", "election", "keyspace"} {
		heard[name] = &observe.Recorder{}
	}

	locks, err := lock.New(rdb, lock.WithObserver(heard["lock"]))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, locks.Close()) })
	quorum, err := redlock.New([]redis.UniversalClient{rdb}, redlock.WithObserver(heard["redlock"]))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, quorum.Close()) })
	sem, err := semaphore.New(rdb, "pool", 1, semaphore.WithObserver(heard["semaphore"]))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, sem.Close()) })
	el, err := election.New(locks.Locker(), "report", election.WithRedis(rdb),
		election.WithObserver(heard["election"]))
	require.NoError(t, err)
	newWatcher(t, rdb, keyspace.WithObserver(heard["keyspace"]))

	octx, stop := context.WithCancel(ctx)
	changes, err := el.Observe(octx) // opens the shared connection; an Observe call is a user while it runs
	require.NoError(t, err)
	t.Cleanup(func() {
		stop()
		for range changes { // the observer goroutine is done
		}
	})
	select {
	case <-changes:
	case <-ctx.Done():
		t.Fatal("no first state from Observe")
	}

	require.NoError(t, admin.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err())
	for name, rec := range heard {
		_, err := rec.Wait(ctx, keyward.Reconnected)
		require.NoError(t, err, "%s's observer did not hear the reconnect", name)
		shared := slices.DeleteFunc(rec.All(), func(e keyward.Event) bool { return e.Source != "keyspace" })
		assert.Equal(t, keyward.Reconnected, shared[0].Kind, "%s: the shared connection's first event", name)
		assert.Error(t, shared[0].Err, name)
	}
}
