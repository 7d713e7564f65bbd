package watch_test

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/watch"
)

// New takes the client without returning an error; a nil client, or an interface holding a nil one, used to
// panic in New (typed nil *redis.Client) or at the first Watch. Every Watch returns an ErrInvalid error now.
func TestWatchWithNilClient(t *testing.T) {
	for name, rdb := range map[string]redis.UniversalClient{
		"nil":               nil,
		"typed nil client":  (*redis.Client)(nil),
		"typed nil cluster": (*redis.ClusterClient)(nil),
		"typed nil ring":    (*redis.Ring)(nil),
	} {
		t.Run(name, func(t *testing.T) {
			w := watch.New(rdb)
			for range 2 {
				wt, err := w.Watch(context.Background(), "job")
				require.ErrorIs(t, err, keyward.ErrInvalid)
				assert.Nil(t, wt)
			}
			assert.False(t, w.KeyEvents())
			assert.NoError(t, w.Close())
		})
	}
}
