package redlock_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/acl"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/redlock"
)

// redlockSteps returns redlock's main paths for two processes of the user, each a Client on the three servers
// with default go-redis options and the documented prefix.
func redlockSteps(t *testing.T, servers []*redistest.Server, rule string) []redistest.Step {
	newClient := func(hooks ...redis.Hook) *redlock.Client {
		var nodes []redis.UniversalClient
		for i, s := range servers {
			if i == 0 {
				nodes = append(nodes, s.DocumentedUser(t, rule, hooks...))
			} else {
				nodes = append(nodes, s.DocumentedUser(t, rule))
			}
		}
		c, err := redlock.New(nodes, redlock.WithPrefix(acl.Prefix), redlock.WithNodeTimeout(2*time.Second))
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	// The second try of b's that finds the lock taken on the first server comes after its subscriptions.
	subscribed := make(chan struct{})
	hook := &redistest.AfterReply{N: 2, Fn: func() { close(subscribed) },
		Match: func(r []any) bool { return len(r) == 2 && r[0] == int64(0) }}
	// a's acquire has taken the lock on the first server, the one whose keys the steps compare.
	landed := make(chan struct{})
	acquired := &redistest.AfterReply{N: 1, Fn: func() { close(landed) },
		Match: func(r []any) bool { return len(r) == 2 && r[0] == int64(1) }}
	a, b := newClient(acquired), newClient(hook)
	var held *redlock.Lock
	return []redistest.Step{
		redistest.Call("try obtain", func(ctx context.Context) (err error) {
			if held, err = a.TryObtain(ctx, "job", time.Minute); err != nil {
				return err
			}
			// TryObtain returns once a majority answered: the acquire on the first server may land later, in
			// the next step, which would then seem to have left the lock behind.
			select {
			case <-landed:
				return nil
			case <-ctx.Done():
				return fmt.Errorf("the acquire on the first server did not answer: %w", ctx.Err())
			}
		}),
		redistest.Call("refresh", func(ctx context.Context) error { return held.Refresh(ctx, time.Minute) }),
		redistest.Call("ttl", func(ctx context.Context) error { _, err := held.TTL(ctx); return err }),
		redistest.Call("release", func(ctx context.Context) error { return held.Release(ctx) }),
		redistest.Handover(
			func(ctx context.Context) (*redlock.Lock, error) { return a.TryObtain(ctx, "handed", time.Minute) },
			func(ctx context.Context) (*redlock.Lock, error) { return b.Obtain(ctx, "handed", time.Minute) },
			subscribed),
	}
}

// The documented rule, on every server, is enough for redlock's main paths with go-redis's default options.
func TestLeastPrivilegeRedlock(t *testing.T) {
	servers := redistest.StartN(t, 3)
	step, err := runOnAll(t, servers, redlockSteps(t, servers, acl.Redlock), false)
	require.NoError(t, err, "step %q", step)
}

// Each command of the rule is needed: a user without it on every server is refused on some main path with an
// error matching ErrNoPermission.
func TestLeastPrivilegeRedlockEachPermissionIsNeeded(t *testing.T) {
	unobservable := map[string]string{
		"+ping":        "the watcher's health check of a silent pub/sub connection (after 3 s of silence)",
		"+unsubscribe": "the watcher's release of a channel nobody watches any more",
	}
	servers := redistest.StartN(t, 3)
	for _, perm := range acl.Commands(acl.Redlock) {
		if _, ok := unobservable[perm]; ok {
			continue
		}
		t.Run(perm, func(t *testing.T) {
			for _, s := range servers {
				require.NoError(t, s.Client(t).FlushAll(context.Background()).Err())
			}
			step, err := runOnAll(t, servers, redlockSteps(t, servers, acl.Without(acl.Redlock, perm)), perm == "+zrem")
			if err == nil && waitingPath[perm] {
				t.Logf("without %s: the waiter got the lock in time on this run", perm)
				return
			}
			require.Error(t, err, "all steps passed without %s", perm)
			if perm == "+publish" || perm == "+subscribe" {
				// Not told (a release that may not be announced still releases), or not listening (redlock's
				// waiters watch each server on a best-effort basis, and fall back on their timers): the waiter
				// waits for the holder's ttl, past the step's time.
				assert.ErrorIs(t, err, context.DeadlineExceeded, "step %q", step)
				assert.Equal(t, "wait for another process's release", step)
				return
			}
			assert.ErrorIs(t, err, keyward.ErrNoPermission, "step %q", step)
		})
	}
}

// waitingPath are the permissions only the hand-over between processes needs (release to a queued process,
// claim, announcement). Without one of them, whether the waiter still gets the lock within the step depends on
// the order in which its tries and subscriptions reach each server: a release refused on the servers where the
// waiter had queued still frees a majority when it had not queued on them yet, and a subscription confirmed
// after the release wakes the waiter for one more try. The lock's tests (one server) show each is needed.
var waitingPath = map[string]bool{"+publish": true, "+zrem": true, "+zpopmin": true, "+zscore": true, "+zcard": true}

// runOnAll runs steps, checking what a refused step leaves on the first server (the others are alike).
func runOnAll(t *testing.T, servers []*redistest.Server, steps []redistest.Step, inLine bool) (string, error) {
	return redistest.RunSteps(t, servers[0], 3*time.Second, steps, inLine)
}
