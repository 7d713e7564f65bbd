package redlock_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/redlock"
)

// With go-redis's default options (no ContextTimeoutEnabled) a context's deadline does not bound a command's
// socket read: a command to a stopped node blocks for ReadTimeout (3 s) for each try. The node timeout holds all
// the same: the lock is decided by the live majority, and Close, which waits for what the Client does in the
// background, returns within the node timeout and a margin, not after go-redis's timeouts.
func TestStoppedNodeWithDefaultOptions(t *testing.T) {
	servers := redistest.StartN(t, 3)
	var nodes []redis.UniversalClient
	for _, s := range servers {
		nodes = append(nodes, redistest.NewClient(t, &redis.Options{Addr: s.Addr()})) // go-redis's defaults
	}
	const nodeTimeout = 50 * time.Millisecond
	locks, err := redlock.New(nodes, redlock.WithNodeTimeout(nodeTimeout))
	require.NoError(t, err)
	ctx := context.Background()
	warm, err := locks.TryObtain(ctx, "warm", 10*time.Second) // connections open, scripts loaded
	require.NoError(t, err)
	require.NoError(t, warm.Release(ctx))

	servers[0].Pause(t)
	t.Cleanup(func() { servers[0].Resume(t) }) // before the clients are closed: go-redis's waits are answered
	l, err := locks.TryObtain(ctx, "job", 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Refresh(ctx, 10*time.Second))
	ttl, err := l.TTL(ctx)
	require.NoError(t, err)
	assert.Greater(t, ttl, time.Duration(0))
	require.NoError(t, l.Release(ctx))

	start := time.Now()
	require.NoError(t, locks.Close())
	t.Logf("Close took %v", time.Since(start))
	// Close waited for the release to the stopped node (its acquire's answer first): a node timeout each.
	assert.Less(t, time.Since(start), 4*nodeTimeout+200*time.Millisecond, "Close is bounded by the node timeout")
}
