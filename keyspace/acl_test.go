package keyspace_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
	"github.com/keyward/keyward/semaphore"
)

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

	rdb := srv.ChannelUser(t, "nochannels")
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
	w := newWatcher(t, srv.ChannelUser(t, "nochannels"))
	_, err := w.Watch(withTimeout(t, 10*time.Second), "job")
	require.ErrorIs(t, err, keyward.ErrNoPermission)
	assert.Contains(t, err.Error(), keys.For("job").Channel)
}
