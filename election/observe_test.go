package election_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/keyspace"
)

// next waits for the observer's next value (bounded: a missing wake-up fails instead of hanging).
func next(t *testing.T, ch <-chan election.Leader) election.Leader {
	t.Helper()
	select {
	case l, ok := <-ch:
		require.True(t, ok, "the channel was closed")
		return l
	case <-time.After(10 * time.Second):
		require.FailNow(t, "no change observed")
		return election.Leader{}
	}
}

func TestObserveSeesEveryChangeInOrder(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		ctx, cancel := context.WithCancel(context.Background())
		observer := newCandidate(t, client(), "observer")
		changes, err := observer.Observe(ctx)
		require.NoError(t, err)
		assert.Equal(t, election.Leader{}, next(t, changes), "first, who leads now: nobody")

		a := newCandidate(t, client(), "replica-a")
		la, err := a.Campaign(context.Background())
		require.NoError(t, err)
		got := next(t, changes)
		assert.Equal(t, election.Leader{Identity: "replica-a", Term: la.Term(), TTL: got.TTL}, got)
		assert.Positive(t, got.TTL)

		require.NoError(t, la.Resign(context.Background()))
		assert.Equal(t, election.Leader{Term: la.Term()}, next(t, changes), "a resigned: nobody leads")

		crashed := newCrash()
		b := newCandidate(t, client(crashed), "replica-b")
		lb, err := b.Campaign(context.Background())
		require.NoError(t, err)
		assert.Equal(t, "replica-b", next(t, changes).Identity)
		crashed.On()
		start := time.Now()
		assert.Equal(t, election.Leader{Term: lb.Term()}, next(t, changes), "b died: its lease ran out")
		assert.LessOrEqual(t, time.Since(start), time.Second, "seen when the lease ran out")

		c := newCandidate(t, client(), "replica-c")
		lc, err := c.Campaign(context.Background())
		require.NoError(t, err)
		got = next(t, changes)
		assert.Equal(t, election.Leader{Identity: "replica-c", Term: lc.Term(), TTL: got.TTL}, got)
		assert.Greater(t, lc.Term(), lb.Term())

		time.Sleep(10 * time.Second) // c renews its lease ten times over
		synctest.Wait()
		select {
		case l := <-changes:
			t.Errorf("a renewal was reported as a change: %+v", l)
		default:
		}

		cancel()
		_, open := <-changes
		assert.False(t, open, "closed when ctx ends")
		require.NoError(t, lc.Resign(context.Background()))
		assert.Error(t, lb.Resign(context.Background()))
	})
}

func TestObserveStartsWithTheCurrentLeader(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		a := newCandidate(t, client(), "replica-a")
		la, err := a.Campaign(context.Background())
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		changes, err := a.Observe(ctx)
		require.NoError(t, err)
		got := next(t, changes)
		assert.Equal(t, election.Leader{Identity: "replica-a", Term: la.Term(), TTL: got.TTL}, got)
		require.NoError(t, la.Resign(context.Background()))
		assert.Equal(t, election.Leader{Term: la.Term()}, next(t, changes))
	})
}

func TestObserveWokenByKeyspaceNotifications(t *testing.T) {
	rdb := redistest.Start(t, redistest.WithNotify("Kg")).Client(t)
	ctx := withTimeout(t, 20*time.Second)
	a := newCandidate(t, rdb, "replica-a", election.WithTTL(time.Minute))
	la, err := a.Campaign(ctx)
	require.NoError(t, err)
	changes, err := a.Observe(ctx)
	require.NoError(t, err)
	require.Equal(t, "replica-a", next(t, changes).Identity)

	require.NoError(t, rdb.Del(ctx, recordKey).Err()) // redis-cli DEL: no message, and a lease of a minute
	assert.Equal(t, election.Leader{Term: la.Term()}, next(t, changes), "woken by the keyspace notification")
	require.NoError(t, la.Resign(ctx))
}

func TestObserveLooksAgainAfterAReconnect(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := withTimeout(t, 20*time.Second)
	a := newCandidate(t, rdb, "replica-a", election.WithTTL(time.Minute))
	la, err := a.Campaign(ctx)
	require.NoError(t, err)
	changes, err := a.Observe(ctx)
	require.NoError(t, err)
	require.Equal(t, "replica-a", next(t, changes).Identity)

	require.NoError(t, rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err())
	require.NoError(t, la.Resign(ctx)) // its message may be lost with the connection
	assert.Equal(t, election.Leader{Term: la.Term()}, next(t, changes), "the reconnect made the observer look")
}

// Observers share the pub/sub connection of their client with its other users: closing one of those (a
// keyspace.Watcher here; a lock.Client or a semaphore alike) leaves the observer watching.
func TestObserveSurvivesAnotherUsersClose(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	ctx := withTimeout(t, 20*time.Second)
	w := keyspace.New(rdb)
	wt, err := w.Watch(ctx, "other") // the shared connection is open
	require.NoError(t, err)
	a := newCandidate(t, rdb, "replica-a")
	changes, err := a.Observe(ctx)
	require.NoError(t, err)
	assert.Equal(t, election.Leader{}, next(t, changes))
	la, err := a.Campaign(ctx)
	require.NoError(t, err)
	assert.Equal(t, la.Term(), next(t, changes).Term)

	wt.Close()
	require.NoError(t, w.Close())
	require.NoError(t, la.Resign(ctx))
	assert.Equal(t, election.Leader{Term: la.Term()}, next(t, changes), "the observer still hears the resignation")
}

func TestLeaderRefusesARecordItDidNotWrite(t *testing.T) {
	m, rdb := redistest.Miniredis(t)
	require.NoError(t, m.Set(recordKey, "not a record"))
	a := newCandidate(t, rdb, "replica-a")
	_, err := a.Leader(context.Background())
	assert.ErrorIs(t, err, election.ErrWrongType)
}
