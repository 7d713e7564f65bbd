package lock_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/redistest"
)

// A waiter blocked in Obtain whose user loses the permission for the release channel hears nothing more: it
// used to fall back on its timer and wait out the holder's ttl (here a minute), subscribing in vain. It returns
// the permission error now, at once, and leaves the line.
func TestObtainReturnsWhenChannelPermissionIsRevoked(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := withTimeout(t, time.Minute)
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", "u", "on", ">pw", "~*", "+@all", "resetchannels", "&*").Err())
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "u", Password: "pw"})
	t.Cleanup(func() { _ = rdb.Close() })
	hook, subscribed := waiting(2)
	rdb.AddHook(hook)

	holder := newClient(t, admin)
	closeClient(t, holder)
	held, err := holder.TryObtain(ctx, "job", time.Minute)
	require.NoError(t, err)

	locks := newClient(t, rdb)
	closeClient(t, locks)
	done := make(chan error, 1)
	go func() {
		l, err := locks.Obtain(ctx, "job", time.Second)
		if l != nil {
			_ = l.Release(context.Background())
		}
		done <- err
	}()
	<-subscribed
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", "u", "resetchannels", "&keyward:probe:*").Err())

	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Obtain still waits after its channel was refused")
	}
	require.ErrorIs(t, err, keyward.ErrNoPermission)
	assert.Contains(t, err.Error(), `lock "job"`)

	// Obtain again subscribes again: refused at once.
	_, err = locks.Obtain(ctx, "job", time.Second)
	require.ErrorIs(t, err, keyward.ErrNoPermission)

	// With the permission back, the next Obtain waits and gets the lock when it is released.
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", "u", "&*").Err())
	go func() {
		l, err := locks.Obtain(ctx, "job", time.Second)
		if l != nil {
			_ = l.Release(context.Background())
		}
		done <- err
	}()
	require.NoError(t, held.Release(ctx))
	require.NoError(t, <-done)
}
