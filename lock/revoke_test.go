package lock_test

import (
	"context"
	"testing"
	"time"

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
	rdb := srv.OpenUser(t, "u", "pw")
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
	srv.RevokeChannels(t, "u")

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
	srv.GrantChannels(t, "u")
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
