package lock_test

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
	"github.com/keyward/keyward/internal/watch"
	"github.com/keyward/keyward/lock"
)

// lockSteps returns the lock's main paths for two processes of the user on srv (each a lock.Client with default
// go-redis options and the documented prefix).
func lockSteps(t *testing.T, srv *redistest.Server, rule string) []redistest.Step {
	newLocks := func(hooks ...redis.Hook) *lock.Client {
		c, err := lock.New(srv.DocumentedUser(t, rule, hooks...), lock.WithPrefix(acl.Prefix))
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	hookB, subscribedB := waiting(2)
	a, b := newLocks(), newLocks(hookB)
	hookC, subscribedC := waiting(2)
	c := newLocks(hookC)
	var held *lock.Lock
	return []redistest.Step{
		redistest.Call("try obtain", func(ctx context.Context) (err error) {
			held, err = a.TryObtain(ctx, "job", time.Minute)
			return err
		}),
		redistest.Call("refresh", func(ctx context.Context) error { return held.Refresh(ctx, time.Minute) }),
		redistest.Call("ttl", func(ctx context.Context) error { _, err := held.TTL(ctx); return err }),
		redistest.Call("guard", func(ctx context.Context) error {
			return held.Guard(ctx, func(p redis.Pipeliner) error { return p.Set(ctx, acl.Prefix+"data", "1", 0).Err() })
		}),
		redistest.Call("release", func(ctx context.Context) error { return held.Release(ctx) }),
		// The holder's ttl is a minute: only the release message wakes the waiter within the step's time.
		redistest.Handover(
			func(ctx context.Context) (*lock.Lock, error) { return a.TryObtain(ctx, "handed", time.Minute) },
			func(ctx context.Context) (*lock.Lock, error) { return b.Obtain(ctx, "handed", time.Minute) },
			subscribedB),
		redistest.GiveUp(
			func(ctx context.Context) (*lock.Lock, error) { return a.TryObtain(ctx, "busy", time.Minute) },
			func(ctx context.Context) (*lock.Lock, error) { return c.Obtain(ctx, "busy", time.Minute) },
			subscribedC),
	}
}

// The documented rule is enough for every main path of the lock, with go-redis's default options.
func TestLeastPrivilegeLock(t *testing.T) {
	srv := redistest.Start(t)
	step, err := redistest.RunSteps(t, srv, 3*time.Second, lockSteps(t, srv, acl.Lock), false)
	require.NoError(t, err, "step %q", step)
}

// unobservable are the permissions of the rules whose refusal the main paths do not report, each with why it is
// in the rule all the same.
var unobservable = map[string]string{
	"+ping":        "the watcher's health check of a silent pub/sub connection (after 3 s of silence)",
	"+unsubscribe": "the watcher's release of a channel nobody watches any more",
	"+unwatch":     "go-redis ends a Guard that returns before EXEC with UNWATCH, and ignores its error",
	"+zrem": "a waiter that gives up leaves the Redis queue (its error goes to the observer, not to the caller; " +
		"refused, its place stays until the queue expires, and releases reserve the lock for it meanwhile)",
}

// Each command of the rule is needed: a user without it is refused on some main path with an error matching
// ErrNoPermission, and the refused call leaves nothing behind.
func TestLeastPrivilegeLockEachPermissionIsNeeded(t *testing.T) {
	srv := redistest.Start(t)
	for _, perm := range acl.Commands(acl.Lock) {
		if _, ok := unobservable[perm]; ok {
			continue
		}
		t.Run(perm, func(t *testing.T) {
			require.NoError(t, srv.Client(t).FlushAll(context.Background()).Err())
			step, err := redistest.RunSteps(t, srv, 3*time.Second, lockSteps(t, srv, acl.Without(acl.Lock, perm)), perm == "+zrem")
			require.Error(t, err, "all steps passed without %s", perm)
			if perm == "+publish" {
				// A release that may not be announced still releases (and says so to the Client's hook): the
				// waiting process is not told, and waits for the holder's expiry, past the step's time.
				assert.ErrorIs(t, err, context.DeadlineExceeded, "step %q", step)
				assert.Equal(t, "wait for another process's release", step)
				return
			}
			assert.ErrorIs(t, err, keyward.ErrNoPermission, "step %q", step)
		})
	}
}

// With the documented addition for keyspace notifications, the watcher of the lock's user learns that the server
// sends them and hears a lock key deleted by another tool; without it, it watches without them.
func TestLeastPrivilegeKeyspaceNotifications(t *testing.T) {
	srv := redistest.Start(t, redistest.WithNotify("Kgx"))
	ctx := withTimeout(t, 10*time.Second)
	for _, tc := range []struct {
		rule   string
		events bool
	}{
		{acl.Lock + " " + acl.KeyspaceNotifications, true},
		{acl.Lock, false},
	} {
		rdb := srv.DocumentedUser(t, tc.rule)
		w := watch.Attach(rdb, nil) // the pub/sub connection a lock.Client of rdb would share
		wt, err := w.Watch(ctx, acl.Prefix+"job")
		require.NoError(t, err)
		assert.Equal(t, tc.events, w.KeyEvents())
		if tc.events {
			require.NoError(t, srv.Client(t).Set(ctx, acl.Prefix+"job", "x", 0).Err())
			require.NoError(t, srv.Client(t).Del(ctx, acl.Prefix+"job").Err())
			select {
			case <-wt.Ready():
				assert.Equal(t, watch.Deleted, wt.Events()[0].Kind)
			case <-ctx.Done():
				t.Fatal("the deletion was not heard")
			}
		}
		wt.Close()
		require.NoError(t, w.Close())
	}
}
