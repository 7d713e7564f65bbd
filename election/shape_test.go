package election_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/acl"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// The tests of this file are the election's rows of the table that compares lock, redlock, semaphore and
// election: the same situation (ctx cancelled with a cause, deadline, after the lock client's Close, quorum lost,
// no permission) gives the same error shape in every package. The Locker's own errors pass through, wrapped with
// the election's name.

// errShutdown is the cause a caller gives its context.
var errShutdown = errors.New("shutting down")

// assertCtxErr checks the shape of the error of a call stopped by its ctx (redistest.AssertCtxErr): it names the
// election "report".
func assertCtxErr(t *testing.T, err, ctxErr, cause error) {
	t.Helper()
	redistest.AssertCtxErr(t, err, "report", ctxErr, cause)
}

// calls are the election's calls that take a ctx, each returning its error (a leadership it won is resigned).
var calls = map[string]func(ctx context.Context, e *election.Election) error{
	"Campaign": func(ctx context.Context, e *election.Election) error {
		lead, err := e.Campaign(ctx)
		if err == nil {
			err = lead.Resign(context.Background())
		}
		return err
	},
	"Run": func(ctx context.Context, e *election.Election) error {
		return e.Run(ctx, func(context.Context) error { return errors.New("led") })
	},
	"Leader": func(ctx context.Context, e *election.Election) error {
		_, err := e.Leader(ctx)
		return err
	},
	"Observe": func(ctx context.Context, e *election.Election) error {
		octx, cancel := context.WithCancel(ctx)
		defer cancel()
		_, err := e.Observe(octx)
		return err
	},
}

// waits are the calls that wait while another candidate leads.
var waits = []string{"Campaign", "Run"}

func TestShapeCtxCancelledWithACause(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		a := newCandidate(t, client(), "replica-a")
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(errShutdown)
		for name, call := range calls {
			err := call(ctx, a)
			assertCtxErr(t, err, context.Canceled, errShutdown)
			assert.NotContains(t, err.Error(), "last attempt", "%s: nothing was tried", name)
		}

		// While another candidate leads.
		lead, err := newCandidate(t, client(), "replica-b").Campaign(context.Background())
		require.NoError(t, err)
		for _, name := range waits {
			ctx, cancel := context.WithCancelCause(context.Background())
			done := make(chan error)
			go func() { done <- calls[name](ctx, a) }()
			synctest.Wait()
			cancel(errShutdown)
			assertCtxErr(t, <-done, context.Canceled, errShutdown)
		}
		require.NoError(t, lead.Resign(context.Background()))

		// While leading: Run resigns and returns ctx's error.
		ctx, cancel = context.WithCancelCause(context.Background())
		err = a.Run(ctx, func(leaderCtx context.Context) error {
			cancel(errShutdown)
			<-leaderCtx.Done()
			return nil
		})
		assertCtxErr(t, err, context.Canceled, errShutdown)
		assert.Equal(t, `election "report": run: context canceled: shutting down`, err.Error())
	})
}

func TestShapeCtxDeadline(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		a := newCandidate(t, client(), "replica-a")
		ctx, cancel := context.WithTimeoutCause(context.Background(), -time.Second, errShutdown)
		defer cancel()
		for _, call := range calls {
			assertCtxErr(t, call(ctx, a), context.DeadlineExceeded, errShutdown)
		}

		lead, err := newCandidate(t, client(), "replica-b").Campaign(context.Background())
		require.NoError(t, err)
		for _, name := range waits {
			ctx, cancel := context.WithTimeoutCause(context.Background(), 5*time.Second, errShutdown)
			start := time.Now()
			assertCtxErr(t, calls[name](ctx, a), context.DeadlineExceeded, errShutdown)
			assert.Equal(t, 5*time.Second, time.Since(start), "%s returned at the deadline", name)
			cancel()

			ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
			assertCtxErr(t, calls[name](ctx, a), context.DeadlineExceeded, nil)
			cancel()
		}
		require.NoError(t, lead.Resign(context.Background()))
	})
}

// stubLocker is a keyward.Locker whose every call fails with what obtain returns.
type stubLocker struct {
	obtain func(ctx context.Context, key string) error
}

func (s stubLocker) TryObtain(ctx context.Context, key string, _ time.Duration) (keyward.Lock, error) {
	return nil, s.obtain(ctx, key)
}

func (s stubLocker) Obtain(ctx context.Context, key string, _ time.Duration) (keyward.Lock, error) {
	return nil, s.obtain(ctx, key)
}

func (s stubLocker) Do(ctx context.Context, key string, _ time.Duration, _ func(context.Context) error) error {
	return s.obtain(ctx, key)
}

// stubElection returns the election "report" on a stubLocker.
func stubElection(t *testing.T, obtain func(ctx context.Context, key string) error, opts ...election.Option) *election.Election {
	t.Helper()
	e, err := election.New(stubLocker{obtain: obtain}, name, opts...)
	require.NoError(t, err)
	return e
}

// passesThrough checks that err, the error of an election's call, is the Locker's error want wrapped with the
// election's name, and that it came at once (a Locker error that will not pass is not ridden out).
func passesThrough(t *testing.T, call func() error, want ...error) error {
	t.Helper()
	start := time.Now()
	err := call()
	require.Error(t, err)
	for _, w := range want {
		assert.ErrorIs(t, err, w)
	}
	assert.Contains(t, err.Error(), `election "report"`)
	assert.Zero(t, time.Since(start), "at once")
	return err
}

func TestShapeAfterTheLockClientsClose(t *testing.T) {
	t.Run("stub", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := stubElection(t, func(_ context.Context, key string) error {
				return fmt.Errorf("%w: obtain %q", keyward.ErrClosed, key) // errs.Closed, as lock and redlock return it
			})
			for _, name := range waits {
				err := passesThrough(t, func() error { return calls[name](context.Background(), e) }, keyward.ErrClosed)
				assert.NotErrorIs(t, err, keyward.ErrInvalid)
				assert.False(t, errs.IsContext(err))
			}
		})
	})
	t.Run("lock", func(t *testing.T) {
		inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
			rdb := client()
			locks, err := lock.New(rdb)
			require.NoError(t, err)
			require.NoError(t, locks.Close())
			if _, err := locks.TryObtain(context.Background(), "probe", time.Second); !errors.Is(err, keyward.ErrClosed) {
				t.Skip("this lock package still takes locks after Close; the row needs lock's ErrClosed")
			}
			e, err := election.New(locks.Locker(), name, election.WithRedis(rdb))
			require.NoError(t, err)
			for _, name := range waits {
				err := passesThrough(t, func() error { return calls[name](context.Background(), e) }, keyward.ErrClosed)
				assert.NotErrorIs(t, err, keyward.ErrInvalid)
			}
		})
	})
}

func TestShapeQuorumLost(t *testing.T) {
	quorumErr := func(cause error) error {
		return fmt.Errorf("%w: %w", keyward.ErrQuorum, errors.Join(
			&keyward.NodeError{Node: 1, Addr: "10.0.0.2:6379", Err: cause},
			&keyward.NodeError{Node: 2, Addr: "10.0.0.3:6379", Err: cause}))
	}
	assertNodes := func(t *testing.T, err error, cause error) {
		t.Helper()
		assert.ErrorIs(t, err, keyward.ErrQuorum)
		assert.ErrorIs(t, err, cause)
		var ne *keyward.NodeError
		require.ErrorAs(t, err, &ne)
		assert.Equal(t, 1, ne.Node)
	}
	down := errors.New("connection refused")

	t.Run("ridden out by the Locker until ctx ends", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			// What redlock's Obtain returns: ctx's error, with the quorum its last attempt failed to get.
			e := stubElection(t, func(ctx context.Context, key string) error {
				<-ctx.Done()
				return fmt.Errorf("%w (the last attempt failed: %w)", errs.Context(ctx, "election", "obtain", key), quorumErr(down))
			})
			for _, name := range waits {
				ctx, cancel := context.WithTimeoutCause(context.Background(), time.Second, errShutdown)
				err := calls[name](ctx, e)
				cancel()
				assertCtxErr(t, err, context.DeadlineExceeded, errShutdown)
				assertNodes(t, err, down)
			}
		})
	})
	t.Run("ridden out by the election until ctx ends", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rec := &observe.Recorder{}
			e := stubElection(t, func(context.Context, string) error { return quorumErr(down) },
				election.WithObserver(rec))
			for _, name := range waits {
				ctx, cancel := context.WithTimeoutCause(context.Background(), time.Second, errShutdown)
				err := calls[name](ctx, e)
				cancel()
				assertCtxErr(t, err, context.DeadlineExceeded, errShutdown)
				assertNodes(t, err, down)
				events := take(t, rec)
				require.Greater(t, len(events), 1, "%v", observe.Kinds(events))
				last := events[len(events)-1]
				assert.Equal(t, keyward.Ended, last.Kind, "the campaign ends, with the error it returned")
				assertCtxErr(t, last.Err, context.DeadlineExceeded, errShutdown)
				for _, ev := range events[:len(events)-1] {
					assert.Equal(t, keyward.Error, ev.Kind)
					assertNodes(t, ev.Err, down)
				}
			}
		})
	})
	t.Run("refused", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := stubElection(t, func(context.Context, string) error { return quorumErr(keyward.ErrNoPermission) })
			for _, name := range waits {
				err := passesThrough(t, func() error { return calls[name](context.Background(), e) },
					keyward.ErrQuorum, keyward.ErrNoPermission)
				assertNodes(t, err, keyward.ErrNoPermission)
				assert.False(t, errs.IsContext(err))
			}
		})
	})
}

func TestShapeNoPermission(t *testing.T) {
	srv := redistest.Start(t)
	// The documented user may use keys and channels under "app:" only; these locks have no prefix.
	rdb := srv.DocumentedUser(t, acl.Election)
	locks, err := lock.New(rdb)
	require.NoError(t, err)
	t.Cleanup(func() { _ = locks.Close() })
	e, err := election.New(locks.Locker(), name, election.WithRedis(rdb))
	require.NoError(t, err)
	ctx := withTimeout(t, 10*time.Second)
	for name, call := range calls {
		start := time.Now()
		err := call(ctx, e)
		require.Error(t, err, name)
		assert.ErrorIs(t, err, keyward.ErrNoPermission, name)
		assert.NotErrorIs(t, err, keyward.ErrInvalid, name)
		assert.False(t, errs.IsContext(err), name)
		assert.Contains(t, err.Error(), `"report"`, name)
		assert.Less(t, time.Since(start), time.Second, "%s: at once, a refusal will not pass", name)
	}
}
