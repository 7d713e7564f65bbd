package lock_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
)

// A server reached over a unix socket, with a client built with go-redis's defaults, as the README's deployment
// matrix says: locks are taken, waited for (woken by the release message) and released.
func TestOverAUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "redis.sock")
	redistest.Start(t, redistest.WithArgs("--unixsocket", sock, "--unixsocketperm", "700"))
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: sock})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	locks, waiters := newClient(t, rdb), newClient(t, rdb)
	t.Cleanup(func() { _ = locks.Close(); _ = waiters.Close() }) // before the client: cleanups run last first
	holder, err := locks.TryObtain(ctx, "socket", time.Minute)
	require.NoError(t, err)

	got := make(chan error, 1)
	go func() {
		l, err := waiters.Obtain(ctx, "socket", time.Minute)
		if err == nil {
			assert.Greater(t, l.Fence(), holder.Fence())
			err = l.Release(ctx)
		}
		got <- err
	}()
	// The holder's ttl is a minute: the waiter can only get the lock in time by the release message.
	require.Eventually(t, func() bool { return rdb.Exists(ctx, "{socket}:queue").Val() == 1 }, 10*time.Second, time.Millisecond,
		"the waiter queued")
	require.NoError(t, holder.Release(ctx))
	require.NoError(t, <-got)
}
