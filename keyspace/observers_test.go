package keyspace_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/keyspace"
	"github.com/keyward/keyward/lock"
	"github.com/keyward/keyward/redlock"
	"github.com/keyward/keyward/semaphore"
)

// events is an Observer that keeps the events of the shared connection (Source "keyspace") on a channel.
type events chan keyward.Event

func (ev events) Observe(_ context.Context, e keyward.Event) {
	if e.Source != "keyspace" {
		return
	}
	select {
	case ev <- e:
	default:
	}
}

// Every package passes the observer given to its WithObserver to the shared connection of its client: a
// rebuilt connection is told to each, with Source "keyspace", whichever user's watches it carried.
func TestEveryPackagesObserverHearsTheSharedConnection(t *testing.T) {
	srv := redistest.Start(t)
	admin, rdb := srv.Client(t), srv.Client(t)
	ctx := withTimeout(t, 20*time.Second)
	heard := map[string]events{}
	for _, name := range []string{"lock", "redlock", "semaphore", "election", "keyspace"} {
		heard[name] = make(events, 16)
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
	for name, ev := range heard {
		select {
		case e := <-ev:
			assert.Equal(t, keyward.Reconnected, e.Kind, name)
			assert.Error(t, e.Err, name)
		case <-ctx.Done():
			t.Fatalf("%s's observer did not hear the reconnect", name)
		}
	}
}
