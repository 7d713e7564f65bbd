package semaphore_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/semaphore"
)

// With go-redis's default options (no ContextTimeoutEnabled) a context's deadline does not bound a command's
// socket read, so a command to a stopped server blocks for ReadTimeout (3 s). A permit's refresh cannot keep it
// "held" past its deadline all the same, and Refresh and Release return at their ctx's deadline.
func TestStoppedServerWithDefaultOptions(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redistest.NewClient(t, &redis.Options{Addr: srv.Addr()}) // go-redis's defaults
	sem := newSem(t, rdb, "pool", 1)
	p, err := sem.Acquire(context.Background(), 600*time.Millisecond, semaphore.WithAutoRefresh())
	require.NoError(t, err)

	srv.Pause(t)
	t.Cleanup(func() { srv.Resume(t) }) // before the client is closed: what go-redis still waits for is answered
	bounded := func(what string, call func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		assert.Error(t, call(ctx), what) // go-redis's i/o timeout, or ctx's error
		// go-redis alone would take its ReadTimeout, 3 s.
		assert.Less(t, time.Since(start), time.Second, "%s returns at its ctx's deadline", what)
	}
	bounded("Refresh", func(ctx context.Context) error { return p.Refresh(ctx, 600*time.Millisecond) })
	<-p.Lost()
	assert.Less(t, time.Since(p.Until()), time.Second, "lost at its deadline")
	bounded("Release", p.Release)
}
