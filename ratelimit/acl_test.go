package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/acl"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/ratelimit"
)

// rateSteps returns the limiter's main paths for a user of rule on srv (Limiters with go-redis's default options
// and the documented prefix).
func rateSteps(t *testing.T, srv *redistest.Server, rule string) []redistest.Step {
	rdb := srv.DocumentedUser(t, rule)
	slow := newLimiter(t, rdb, "api", ratelimit.Every(time.Minute, 1), ratelimit.WithPrefix(acl.Prefix))
	fast := newLimiter(t, rdb, "jobs", ratelimit.Every(20*time.Millisecond, 1), ratelimit.WithPrefix(acl.Prefix))
	var r *ratelimit.Reservation
	return []redistest.Step{
		redistest.Call("allow", func(ctx context.Context) error {
			res, err := slow.Allow(ctx)
			if err == nil && res.Allowed != 1 {
				t.Errorf("allow: %+v", res)
			}
			return err
		}),
		redistest.Call("reserve", func(ctx context.Context) (err error) {
			r, err = slow.Reserve(ctx, 1)
			return err
		}),
		redistest.Call("cancel", func(ctx context.Context) error {
			ok, err := r.Cancel(ctx)
			if err == nil && !ok {
				t.Error("cancel: the tokens were not given back")
			}
			return err
		}),
		redistest.Scene("wait twice", func(ctx context.Context) error {
			if err := fast.Wait(ctx); err != nil {
				return err
			}
			return fast.Wait(ctx)
		}),
	}
}

// The documented rule is enough for every path of the limiter, with go-redis's default options.
func TestLeastPrivilegeRateLimit(t *testing.T) {
	srv := redistest.Start(t)
	step, err := redistest.RunSteps(t, srv, 3*time.Second, rateSteps(t, srv, acl.RateLimit), false)
	require.NoError(t, err, "step %q", step)
}

// Each command of the rule is needed: a user without it is refused on some path with an error matching
// ErrNoPermission, and the refused call leaves the key as it was.
func TestLeastPrivilegeRateLimitEachPermissionIsNeeded(t *testing.T) {
	srv := redistest.Start(t)
	for _, perm := range acl.Commands(acl.RateLimit) {
		t.Run(perm, func(t *testing.T) {
			admin := srv.Client(t)
			require.NoError(t, admin.FlushAll(context.Background()).Err())
			require.NoError(t, admin.ScriptFlush(context.Background()).Err(), "the first call loads the script (EVAL)")
			step, err := redistest.RunSteps(t, srv, 3*time.Second, rateSteps(t, srv, acl.Without(acl.RateLimit, perm)), false)
			require.Error(t, err, "all steps passed without %s", perm)
			assert.ErrorIs(t, err, keyward.ErrNoPermission, "step %q", step)
			assert.Equal(t, "allow", step, "the first call needs every command")
		})
	}
}
