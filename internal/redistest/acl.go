package redistest

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// User creates (or resets) the ACL user name on s with rule, the arguments of ACL SETUSER after the name, through
// an admin client, and returns a client for it built with go-redis's default options and password, closed when
// the test ends.
func (s *Server) User(t testing.TB, name, password string, rule []string) *redis.Client {
	t.Helper()
	args := []any{"ACL", "SETUSER", name}
	for _, a := range rule {
		args = append(args, a)
	}
	require.NoError(t, s.Client(t).Do(context.Background(), args...).Err())
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr(), Username: name, Password: password})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// Snapshot returns every key of database 0 with its serialized value (DUMP, without its ttl), read through an
// admin client: tests compare two snapshots to show that a refused call left nothing behind.
func (s *Server) Snapshot(t testing.TB) map[string]string {
	t.Helper()
	ctx := context.Background()
	admin := s.Client(t)
	names, err := admin.Keys(ctx, "*").Result()
	require.NoError(t, err)
	out := make(map[string]string, len(names))
	for _, k := range names {
		v, err := admin.Dump(ctx, k).Result()
		if err == redis.Nil {
			continue // expired meanwhile
		}
		require.NoError(t, err)
		out[k] = v
	}
	return out
}
