package election_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/redistest"
)

// A Campaign that meets a server that is loading (or down) rides it out until the server is back, and then
// leads; when its ctx ends first, the error matches ctx's error and the server's.
func TestCampaignRidesOutAnOutage(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		a := newCandidate(t, client(), "replica-a")
		m.SetError("LOADING Redis is loading the dataset in memory")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := time.Now()
		_, err := a.Campaign(ctx)
		// When ctx ends, Obtain takes the Client out of the Redis queue, which go-redis tries four times against
		// a LOADING server (its own retries, about 120 ms).
		assert.WithinRange(t, time.Now(), start.Add(3*time.Second), start.Add(3*time.Second+time.Second),
			"returns when ctx ends")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorContains(t, err, "LOADING")

		done := make(chan error, 1)
		go func() {
			lead, err := a.Campaign(context.Background())
			if err == nil {
				err = lead.Resign(context.Background())
			}
			done <- err
		}()
		time.Sleep(5 * time.Second)
		synctest.Wait()
		select {
		case err := <-done:
			t.Fatalf("Campaign returned during the outage: %v", err)
		default:
		}
		m.SetError("")
		back := time.Now()
		require.NoError(t, <-done)
		assert.LessOrEqual(t, time.Since(back), time.Second, "within the capped backoff of the server's return")
	})
}

// With a real redis-server killed and restarted while a candidate campaigns, and a client with go-redis's default
// options, Campaign leads once the server is back instead of returning "connection refused".
func TestCampaignRidesOutARestart(t *testing.T) {
	srv := redistest.Start(t)
	failed := make(chan struct{})
	var failures atomic.Int32
	rdb := redistest.NewClient(t, &redis.Options{Addr: srv.Addr()}) // go-redis's defaults
	rdb.AddHook(&redistest.AfterError{Fn: func() {
		if failures.Add(1) == 1 {
			close(failed)
		}
	}})
	a := newCandidate(t, rdb, "replica-a")
	ctx := withTimeout(t, 20*time.Second)

	srv.Kill(t)
	go func() {
		<-failed // a try failed (go-redis's defaults take about 1.7 s to give up a refused dial)
		srv.Restart(t)
	}()
	lead, err := a.Campaign(ctx)
	require.NoError(t, err)
	l, err := a.Leader(ctx)
	require.NoError(t, err)
	assert.Equal(t, "replica-a", l.Identity)
	require.NoError(t, lead.Resign(ctx))
}

// With go-redis's default options (no ContextTimeoutEnabled) a context's deadline does not bound a command's
// socket read: a renewal sent to a stopped server would block for ReadTimeout (3 s). The leadership ends at its
// lease's deadline all the same, and Resign returns at its ctx's deadline.
func TestStoppedServerWithDefaultOptions(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redistest.NewClient(t, &redis.Options{Addr: srv.Addr()}) // go-redis's defaults
	a := newCandidate(t, rdb, "replica-a", election.WithTTL(600*time.Millisecond))
	lead, err := a.Campaign(context.Background())
	require.NoError(t, err)

	srv.Pause(t)
	t.Cleanup(func() { srv.Resume(t) }) // before the client is closed: what go-redis still waits for is answered
	<-lead.Done()
	assert.ErrorIs(t, lead.Err(), election.ErrLost)
	// go-redis alone would keep the renewal, and the leadership, for its ReadTimeout (3 s).
	assert.Less(t, time.Since(lead.Until()), time.Second, "ended at the lease's deadline")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	assert.Error(t, lead.Resign(ctx))
	assert.Less(t, time.Since(start), time.Second, "Resign returns at its ctx's deadline")
}
