package lock_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// With go-redis's default options (no ContextTimeoutEnabled) a context's deadline does not bound a command's
// socket read, so a command to a stopped server blocks for ReadTimeout (3 s). Keyward's calls return when their
// ctx ends all the same: a refresh cannot keep a lock "held" past its deadline, and Refresh and Release return at
// their ctx's deadline.
func TestStoppedServerWithDefaultOptions(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redistest.NewClient(t, &redis.Options{Addr: srv.Addr()}) // go-redis's defaults
	locks := newClient(t, rdb)
	closeClient(t, locks)
	ctx := context.Background()
	l, err := locks.Obtain(ctx, "job", 600*time.Millisecond, lock.WithAutoRefresh())
	require.NoError(t, err)

	srv.Pause(t)
	t.Cleanup(func() { srv.Resume(t) }) // before the client is closed: what go-redis still waits for is answered

	bounded := func(what string, call func(ctx context.Context) error) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := call(cctx)
		assert.Error(t, err, what) // go-redis's i/o timeout, or ctx's error
		// go-redis alone would take its ReadTimeout, 3 s.
		assert.Less(t, time.Since(start), time.Second, "%s returns at its ctx's deadline", what)
	}
	bounded("Refresh", func(ctx context.Context) error { return l.Refresh(ctx, 600*time.Millisecond) })

	<-l.Lost() // the auto-refresh's renewals went unanswered
	assert.ErrorIs(t, l.Err(), lock.ErrLost)
	assert.False(t, time.Now().Before(l.Until()), "not lost before its deadline")
	bounded("Release", l.Release) // also after the auto-refresh was stuck in a renewal
}
