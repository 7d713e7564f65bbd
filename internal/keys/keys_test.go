package keys_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"pgregory.net/rapid"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDerive(t *testing.T) {
	tests := []struct {
		name, key, want string
	}{
		{"plain key is wrapped", "job", "{job}:fence"},
		{"hash tag is kept", "orders{42}", "orders{42}:fence"},
		{"tag in the middle", "a{b}c", "a{b}c:fence"},
		{"open brace only", "a{b", "{a{b}:fence"},
		{"empty braces are no tag", "x{}y", "{" + tagFor(t, "x{}y") + "}x{}y:fence"},
		{"close before open", "a}b{", "{" + tagFor(t, "a}b{") + "}a}b{:fence"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, keys.Derive(tt.key, "fence"))
		})
	}
}

// tagFor returns the slot tag the third rule uses for key, read back from Derive's answer.
func tagFor(t *testing.T, key string) string {
	d := keys.Derive(key, "fence")
	tag := keys.HashTag(d)
	require.NotEmpty(t, tag)
	require.NotContains(t, tag, "}")
	return tag
}

func TestKeyspaceChannel(t *testing.T) {
	assert.Equal(t, "__keyspace@3__:job", keys.KeyspaceChannel(3, "job"))
}

// keyslots asks a cluster-enabled server for the slot of each key in one round trip.
func keyslots(t *rapid.T, rdb *redis.Client, ks []string) []int64 {
	ctx := context.Background()
	cmds, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range ks {
			p.ClusterKeySlot(ctx, k)
		}
		return nil
	})
	require.NoError(t, err)
	slots := make([]int64, len(cmds))
	for i, c := range cmds {
		slots[i] = c.(*redis.IntCmd).Val()
	}
	return slots
}

// TestDerivedNamesShareTheLockSlot checks, against Redis Cluster's own hashing, that every derived name hashes
// to its lock key's slot, for keys drawn from an alphabet where braces are common.
func TestDerivedNamesShareTheLockSlot(t *testing.T) {
	rdb := redistest.Start(t, redistest.WithCluster()).Client(t)
	rapid.Check(t, func(t *rapid.T) {
		key := rapid.StringOfN(rapid.SampledFrom([]rune("ab{}:_é")), 1, 12, -1).Draw(t, "key")
		n := keys.For(key)
		slots := keyslots(t, rdb, []string{key, n.Fence, n.Channel})
		assert.Equal(t, slots[0], int64(keys.Slot(key)), "Slot agrees with CLUSTER KEYSLOT")
		assert.Equal(t, slots[0], slots[1], "fence %q in the slot of %q", n.Fence, key)
		assert.Equal(t, slots[0], slots[2], "channel %q in the slot of %q", n.Channel, key)
	})
}
