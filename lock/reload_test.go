package lock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
)

// After a forced failover of a master that died, go-redis's ClusterClient keeps sending that master's slots to the
// dead address until an answer tells it otherwise (none comes from a dead node) or its periodic reload, a minute
// later by default. keyward asks for a reload when a script cannot reach its node, so a waiter (and a holder's
// refresh) reaches the new master within a try or two.
func TestClusterMasterDiedAndWasReplaced(t *testing.T) {
	c := redistest.StartCluster(t)
	rdb := c.Client(t) // go-redis defaults
	locks := newClient(t, rdb)
	t.Cleanup(func() { _ = locks.Close() })
	ctx := context.Background()

	const key = "reload"
	l, err := locks.TryObtain(ctx, key, time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx)) // the client now knows the slot's master

	c.MasterOf(key).Kill(t)
	c.Failover(t, key)

	octx, cancel := context.WithTimeout(ctx, 15*time.Second) // well below go-redis's 60 s reload
	defer cancel()
	start := time.Now()
	l, err = locks.Obtain(octx, key, time.Second)
	require.NoError(t, err, "the lock is reachable on the new master")
	t.Logf("obtained on the new master %v after the failover", time.Since(start))
	require.NoError(t, l.Release(ctx))
}
