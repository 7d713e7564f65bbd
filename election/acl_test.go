package election_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/acl"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// electionSteps returns the election's main paths for processes of the user on srv (each a lock.Client and an
// Election with default go-redis options and the documented prefix). Leases are a minute: only messages wake a
// waiting candidate or an observer within a step's time.
func electionSteps(t *testing.T, srv *redistest.Server, rule string) []redistest.Step {
	candidate := func(identity string, hooks ...redis.Hook) *election.Election {
		rdb := srv.DocumentedUser(t, rule, hooks...)
		locks, err := lock.New(rdb, lock.WithPrefix(acl.Prefix))
		require.NoError(t, err)
		t.Cleanup(func() { _ = locks.Close() })
		e, err := election.New(locks.Locker(), name, election.WithRedis(rdb), election.WithIdentity(identity),
			election.WithTTL(time.Minute))
		require.NoError(t, err)
		return e
	}
	// The second try of b's Campaign that finds the lock taken comes after its subscription is confirmed.
	subscribed := make(chan struct{})
	hook := &redistest.AfterReply{N: 2, Fn: func() { close(subscribed) },
		Match: func(r []any) bool { return len(r) == 2 && r[0] == int64(0) }}
	a, b, watcher := candidate("a"), candidate("b", hook), candidate("watcher")
	var lead *election.Leadership
	t.Cleanup(func() { // a step that failed after the campaign left the leadership to end
		if lead != nil {
			_ = lead.Resign(context.Background())
		}
	})
	return []redistest.Step{
		// Not one call: the lock is obtained, then the record written; a refused record gives the lock back.
		redistest.Scene("campaign", func(ctx context.Context) (err error) {
			lead, err = a.Campaign(ctx)
			return err
		}),
		redistest.Call("leader", func(ctx context.Context) error {
			l, err := watcher.Leader(ctx)
			if err == nil && l.Identity != "a" {
				err = fmt.Errorf("leader %q, want a", l.Identity)
			}
			return err
		}),
		redistest.Scene("observe a resignation and the next leader", func(ctx context.Context) error {
			octx, stop := context.WithCancel(ctx)
			defer stop()
			changes, err := watcher.Observe(octx)
			if err != nil {
				return err
			}
			bctx, cancelB := context.WithCancel(ctx)
			defer cancelB()
			done := make(chan error, 1)
			go func() {
				next, err := b.Campaign(bctx)
				if err == nil {
					err = next.Resign(ctx)
				}
				done <- err
			}()
			select {
			case <-subscribed:
			case err := <-done:
				return errors.Join(err, lead.Resign(ctx))
			}
			if err := lead.Resign(ctx); err != nil {
				cancelB() // b would wait for a lease of a minute
				return errors.Join(err, <-done)
			}
			for l := range changes {
				if l.Identity == "b" {
					return <-done
				}
			}
			return errors.Join(fmt.Errorf("the observer did not see b elected: %w", context.Cause(ctx)), <-done)
		}),
	}
}

// The documented rule is enough for every main path of an election, with go-redis's default options.
func TestLeastPrivilegeElection(t *testing.T) {
	srv := redistest.Start(t)
	step, err := redistest.RunSteps(t, srv, 3*time.Second, electionSteps(t, srv, acl.Election), false)
	require.NoError(t, err, "step %q", step)
}

// Each command of the rule is needed: a user without it is refused on some main path with an error matching
// ErrNoPermission, and the refused call leaves nothing behind.
func TestLeastPrivilegeElectionEachPermissionIsNeeded(t *testing.T) {
	unobservable := map[string]string{
		"+ping":        "the watcher's health check of a silent pub/sub connection (after 3 s of silence)",
		"+unsubscribe": "the watcher's release of a channel nobody watches any more",
		"+zrem":        "a waiter that gives up leaves the Redis queue (its error is ignored)",
	}
	srv := redistest.Start(t)
	for _, perm := range acl.Commands(acl.Election) {
		if _, ok := unobservable[perm]; ok {
			continue
		}
		t.Run(perm, func(t *testing.T) {
			require.NoError(t, srv.Client(t).FlushAll(context.Background()).Err())
			step, err := redistest.RunSteps(t, srv, 3*time.Second,
				electionSteps(t, srv, acl.Without(acl.Election, perm)), perm == "+zrem")
			require.Error(t, err, "all steps passed without %s", perm)
			assert.ErrorIs(t, err, keyward.ErrNoPermission, "step %q", step)
			if step == "campaign" {
				ctx := context.Background()
				assert.Zero(t, srv.Client(t).Exists(ctx, acl.Prefix+name, "{"+acl.Prefix+name+"}:leader").Val(),
					"a refused campaign holds neither the lock nor the record")
			}
		})
	}
}
