package semaphore_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/redistest"
)

// A waiter blocked in Acquire whose user loses the permission for the semaphore's channels hears nothing more:
// it used to fall back on its timer and wait for the holder's permit to expire (here a minute). It returns the
// permission error now, at once; a later Acquire subscribes again and is refused at once too.
func TestAcquireReturnsWhenChannelPermissionIsRevoked(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	rdb := srv.OpenUser(t, "u", "pw")
	hook, subscribed := waiting(2)
	rdb.AddHook(hook)

	held, err := newSem(t, admin, "pool", 1).TryAcquire(ctx, time.Minute)
	require.NoError(t, err)

	sem := newSem(t, rdb, "pool", 1)
	done := make(chan error, 1)
	go func() {
		p, err := sem.Acquire(ctx, time.Second)
		if p != nil {
			_ = p.Release(context.Background())
		}
		done <- err
	}()
	<-subscribed
	srv.RevokeChannels(t, "u")

	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Acquire still waits after its channels were refused")
	}
	require.ErrorIs(t, err, keyward.ErrNoPermission)
	assert.Contains(t, err.Error(), `semaphore "pool"`)

	_, err = sem.Acquire(ctx, time.Second)
	require.ErrorIs(t, err, keyward.ErrNoPermission, "subscribing again is refused at once")

	srv.GrantChannels(t, "u")
	go func() {
		p, err := sem.Acquire(ctx, time.Second)
		if p != nil {
			_ = p.Release(context.Background())
		}
		done <- err
	}()
	require.NoError(t, held.Release(ctx))
	require.NoError(t, <-done, "with the permission back, Acquire works")
}
