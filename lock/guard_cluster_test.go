package lock_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/redistest"
)

// On a Cluster, Guard's transaction runs on the lock key's node: writes to a key of another slot are refused by
// Redis (CROSSSLOT on the same node, MOVED for another node's slot) and the transaction is discarded with a bare
// EXECABORT. Guard reports the cause, matching ErrInvalid, and nothing is written.
func TestGuardOutsideTheLockSlotOnACluster(t *testing.T) {
	c := redistest.StartCluster(t)
	rdb := c.Client(t)
	ctx := context.Background()
	locks := newClient(t, rdb)

	const key = "stock"
	home := c.MasterOf(key)
	var sameNode, otherNode string
	for i := 0; sameNode == "" || otherNode == ""; i++ {
		k := fmt.Sprintf("other-%d", i)
		switch {
		case c.MasterOf(k) == home && sameNode == "":
			sameNode = k
		case c.MasterOf(k) != home && otherNode == "":
			otherNode = k
		}
	}

	l, err := locks.TryObtain(ctx, key, 10*time.Second)
	require.NoError(t, err)
	defer l.Release(ctx)

	for _, tc := range []struct{ name, key, cause string }{
		{"another slot of the lock's node", sameNode, "CROSSSLOT"},
		{"a slot of another node", otherNode, "MOVED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := l.Guard(ctx, func(p redis.Pipeliner) error {
				p.Set(ctx, "{stock}:count", 1, 0)
				p.Set(ctx, tc.key, 1, 0)
				return nil
			})
			require.ErrorIs(t, err, keyward.ErrInvalid)
			assert.Contains(t, err.Error(), tc.cause)
			assert.Contains(t, err.Error(), "hash tag")
			assert.NotContains(t, err.Error(), "EXECABORT", "the cause, not the bare abort, is reported")
			assert.Equal(t, int64(0), rdb.Exists(ctx, "{stock}:count").Val(), "nothing of the transaction was written")
			assert.NoError(t, l.Err(), "a refused guarded write does not lose the lock")
		})
	}

	require.NoError(t, l.Guard(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "{stock}:count", 7, 0)
		return nil
	}), "writes in the lock's slot commit")
	assert.Equal(t, "7", rdb.Get(ctx, "{stock}:count").Val())
}
