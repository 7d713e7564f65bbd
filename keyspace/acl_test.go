package keyspace_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
	"github.com/keyward/keyward/semaphore"
)

// aclUser creates the ACL user name on srv with every command and key and the given channel rules, and returns a
// client for it built with go-redis's default options.
func aclUser(t *testing.T, srv *redistest.Server, name string, channels ...string) *redis.Client {
	t.Helper()
	args := []any{"ACL", "SETUSER", name, "on", ">pw", "~*", "+@all", "resetchannels"}
	for _, c := range channels {
		args = append(args, c)
	}
	require.NoError(t, srv.Client(t).Do(context.Background(), args...).Err())
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: name, Password: "pw"})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// What users saw: Obtain and Acquire hung until their context ended (forever without a deadline), although the
// lock was free after 150 ms. They return the permission error now.
func TestObtainAndAcquireWithoutChannelPermission(t *testing.T) {
	srv := redistest.Start(t)
	ctx := withTimeout(t, 10*time.Second)
	admin, err := lock.New(srv.Client(t))
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close() })
	_, err = admin.TryObtain(ctx, "job", 150*time.Millisecond)
	require.NoError(t, err)

	rdb := aclUser(t, srv, "nochannels")
	locks, err := lock.New(rdb)
	require.NoError(t, err)
	t.Cleanup(func() { _ = locks.Close() })
	_, err = locks.Obtain(ctx, "job", time.Second)
	assert.ErrorIs(t, err, keyward.ErrNoPermission)

	held, err := semaphore.New(srv.Client(t), "pool", 1)
	require.NoError(t, err)
	t.Cleanup(func() { _ = held.Close() })
	_, err = held.TryAcquire(ctx, 150*time.Millisecond)
	require.NoError(t, err)
	sem, err := semaphore.New(rdb, "pool", 1)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sem.Close() })
	_, err = sem.Acquire(ctx, time.Second)
	assert.ErrorIs(t, err, keyward.ErrNoPermission)
}

// A Watcher of a user without permission for the release channel gets an ErrNoPermission error from Watch,
// naming the channel.
func TestWatchWithoutChannelPermission(t *testing.T) {
	srv := redistest.Start(t)
	w := newWatcher(t, aclUser(t, srv, "nochannels"))
	_, err := w.Watch(withTimeout(t, 10*time.Second), "job")
	require.ErrorIs(t, err, keyward.ErrNoPermission)
	assert.Contains(t, err.Error(), keys.For("job").Channel)
}
