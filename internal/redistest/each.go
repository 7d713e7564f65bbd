package redistest

import (
	"testing"

	"github.com/redis/go-redis/v9"
)

// ForEachServer runs test twice, as subtests: against miniredis ("miniredis") and against a real redis-server
// ("redis-server"), for behaviour that must hold on both and could differ between them (Lua, error texts).
func ForEachServer(t *testing.T, test func(t *testing.T, rdb *redis.Client)) {
	t.Run("miniredis", func(t *testing.T) {
		_, rdb := Miniredis(t)
		test(t, rdb)
	})
	t.Run("redis-server", func(t *testing.T) {
		test(t, Start(t).Client(t))
	})
}
