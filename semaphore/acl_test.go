package semaphore_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/acl"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/semaphore"
)

// semaphoreSteps returns the semaphore's main paths for processes of the user on srv (each a Semaphore with
// default go-redis options and the documented prefix).
func semaphoreSteps(t *testing.T, srv *redistest.Server, rule string, opts ...semaphore.Option) []redistest.Step {
	newSem := func(hooks ...redis.Hook) *semaphore.Semaphore {
		s, err := semaphore.New(srv.DocumentedUser(t, rule, hooks...), "pool", 1, append([]semaphore.Option{semaphore.WithPrefix(acl.Prefix)}, opts...)...)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	hookB, subscribedB := waiting(2)
	hookC, subscribedC := waiting(2)
	a, b, c := newSem(), newSem(hookB), newSem(hookC)
	var held *semaphore.Permit
	return []redistest.Step{
		redistest.Call("try acquire", func(ctx context.Context) (err error) {
			held, err = a.TryAcquire(ctx, time.Minute)
			return err
		}),
		redistest.Call("refresh", func(ctx context.Context) error { return held.Refresh(ctx, time.Minute) }),
		redistest.Call("release", func(ctx context.Context) error { return held.Release(ctx) }),
		// The holder's ttl is a minute: only the release's message wakes the waiter within the step's time.
		redistest.Handover(
			func(ctx context.Context) (*semaphore.Permit, error) { return a.TryAcquire(ctx, time.Minute) },
			func(ctx context.Context) (*semaphore.Permit, error) { return b.Acquire(ctx, time.Minute) },
			subscribedB),
		redistest.GiveUp(
			func(ctx context.Context) (*semaphore.Permit, error) { return a.TryAcquire(ctx, time.Minute) },
			func(ctx context.Context) (*semaphore.Permit, error) { return c.Acquire(ctx, time.Minute) },
			subscribedC),
	}
}

// The documented rule is enough for every main path of the semaphore, with go-redis's default options.
func TestLeastPrivilegeSemaphore(t *testing.T) {
	srv := redistest.Start(t)
	step, err := redistest.RunSteps(t, srv, 3*time.Second, semaphoreSteps(t, srv, acl.Semaphore), false)
	require.NoError(t, err, "step %q", step)
}

// With WithFencing, the rule and its addition for fencing are enough.
func TestLeastPrivilegeSemaphoreWithFencing(t *testing.T) {
	srv := redistest.Start(t)
	rule := acl.Semaphore + " " + acl.SemaphoreFencing
	step, err := redistest.RunSteps(t, srv, 3*time.Second, semaphoreSteps(t, srv, rule, semaphore.WithFencing()), false)
	require.NoError(t, err, "step %q", step)
	for _, perm := range acl.Commands(acl.SemaphoreFencing) {
		require.NoError(t, srv.Client(t).FlushAll(context.Background()).Err())
		step, err := redistest.RunSteps(t, srv, 3*time.Second,
			semaphoreSteps(t, srv, acl.Without(rule, perm), semaphore.WithFencing()), false)
		assert.ErrorIs(t, err, keyward.ErrNoPermission, "without %s: step %q", perm, step)
	}
}

// unobservable are the permissions of the rule whose refusal the main paths do not report, each with why it is
// in the rule all the same.
var unobservable = map[string]string{
	"+ping":        "the watcher's health check of a silent pub/sub connection (after 3 s of silence)",
	"+unsubscribe": "the watcher's release of a channel nobody watches any more",
}

// Each command of the rule is needed: a user without it is refused on some main path with an error matching
// ErrNoPermission, and the refused call leaves nothing behind.
func TestLeastPrivilegeSemaphoreEachPermissionIsNeeded(t *testing.T) {
	srv := redistest.Start(t)
	for _, perm := range acl.Commands(acl.Semaphore) {
		if _, ok := unobservable[perm]; ok {
			continue
		}
		t.Run(perm, func(t *testing.T) {
			require.NoError(t, srv.Client(t).FlushAll(context.Background()).Err())
			step, err := redistest.RunSteps(t, srv, 3*time.Second,
				semaphoreSteps(t, srv, acl.Without(acl.Semaphore, perm)), perm == "+zrem")
			require.Error(t, err, "all steps passed without %s", perm)
			if perm == "+publish" {
				// A release that may not be announced still releases: the waiting process is not told, and waits
				// for the holder's expiry, past the step's time.
				assert.ErrorIs(t, err, context.DeadlineExceeded, "step %q", step)
				assert.Equal(t, "wait for another process's release", step)
				return
			}
			assert.ErrorIs(t, err, keyward.ErrNoPermission, "step %q", step)
		})
	}
}
