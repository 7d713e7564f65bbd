package semaphore_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/acl"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/semaphore"
)

// The tests of this file are the semaphore's rows of the table that compares lock, redlock, semaphore and
// election: the same situation (ctx cancelled with a cause, deadline, after Close, no permission) gives the same
// error shape in every package.

// errShutdown is the cause a caller gives its context.
var errShutdown = errors.New("shutting down")

// assertCtxErr checks the shape of the error of a call stopped by its ctx (redistest.AssertCtxErr): it names the
// semaphore "pool".
func assertCtxErr(t *testing.T, err, ctxErr, cause error) {
	t.Helper()
	redistest.AssertCtxErr(t, err, "pool", ctxErr, cause)
}

// calls are the semaphore's calls that take a permit, each returning its error (a permit it took is released).
var calls = map[string]func(ctx context.Context, s *semaphore.Semaphore) error{
	"TryAcquire": func(ctx context.Context, s *semaphore.Semaphore) error {
		p, err := s.TryAcquire(ctx, time.Minute)
		if err == nil {
			err = p.Release(context.Background())
		}
		return err
	},
	"Acquire": func(ctx context.Context, s *semaphore.Semaphore) error {
		p, err := s.Acquire(ctx, time.Minute)
		if err == nil {
			err = p.Release(context.Background())
		}
		return err
	},
	"Do": func(ctx context.Context, s *semaphore.Semaphore) error {
		return s.Do(ctx, time.Minute, func(context.Context) error { return nil })
	},
}

func TestShapeCtxCancelledWithACause(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		sem := bubbleSem(t, rdb, "pool", 1)
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(errShutdown)
		for _, call := range calls {
			assertCtxErr(t, call(ctx, sem), context.Canceled, errShutdown)
		}

		// While waiting.
		held, err := sem.TryAcquire(context.Background(), time.Minute)
		require.NoError(t, err)
		for name, call := range calls {
			if name == "TryAcquire" {
				continue
			}
			ctx, cancel := context.WithCancelCause(context.Background())
			done := make(chan error)
			go func() { done <- call(ctx, sem) }()
			synctest.Wait()
			cancel(errShutdown)
			assertCtxErr(t, <-done, context.Canceled, errShutdown)
		}

		// A refresh stopped by its ctx.
		ctx, cancel = context.WithCancelCause(context.Background())
		cancel(errShutdown)
		assertCtxErr(t, held.Refresh(ctx, time.Minute), context.Canceled, errShutdown)
		require.NoError(t, held.Release(context.Background()))
	})
}

func TestShapeCtxDeadline(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		sem := bubbleSem(t, rdb, "pool", 1)
		held, err := sem.TryAcquire(context.Background(), time.Minute)
		require.NoError(t, err)
		for name, call := range calls {
			if name == "TryAcquire" {
				continue
			}
			ctx, cancel := context.WithTimeoutCause(context.Background(), time.Second, errShutdown)
			start := time.Now()
			assertCtxErr(t, call(ctx, sem), context.DeadlineExceeded, errShutdown)
			assert.Equal(t, time.Second, time.Since(start), "%s returned at the deadline", name)
			cancel()

			ctx, cancel = context.WithTimeout(context.Background(), time.Second)
			assertCtxErr(t, call(ctx, sem), context.DeadlineExceeded, nil)
			cancel()
		}
		ctx, cancel := context.WithTimeoutCause(context.Background(), -time.Second, errShutdown)
		defer cancel()
		assertCtxErr(t, calls["TryAcquire"](ctx, sem), context.DeadlineExceeded, errShutdown)
		require.NoError(t, held.Release(context.Background()))
	})
}

func TestShapeAfterClose(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		sem, err := semaphore.New(rdb, "pool", 2)
		require.NoError(t, err)
		held, err := sem.TryAcquire(ctx, 3*time.Second, semaphore.WithAutoRefresh())
		require.NoError(t, err)
		blocker, err := sem.TryAcquire(ctx, time.Minute)
		require.NoError(t, err)

		// A call waiting when Close runs.
		waiting := make(chan error)
		go func() {
			_, err := sem.Acquire(ctx, time.Minute)
			waiting <- err
		}()
		synctest.Wait()
		require.NoError(t, sem.Close())
		closedErr := func(err error) {
			t.Helper()
			require.Error(t, err)
			assert.ErrorIs(t, err, keyward.ErrClosed)
			assert.ErrorIs(t, err, semaphore.ErrClosed)
			assert.NotErrorIs(t, err, keyward.ErrInvalid)
			assert.False(t, errs.IsContext(err))
			assert.Contains(t, err.Error(), `"pool"`)
		}
		closedErr(<-waiting)
		require.NoError(t, blocker.Release(ctx))
		for _, call := range calls {
			closedErr(call(ctx, sem)) // there is room: only the Close refuses
		}
		assert.NoError(t, sem.Close(), "a second Close")

		// The permit held across Close stays usable: auto-refresh, Refresh, Release.
		time.Sleep(10 * time.Second)
		assert.NoError(t, held.Err(), "auto-refreshed after Close")
		require.NoError(t, held.Refresh(ctx, 3*time.Second))
		require.NoError(t, held.Release(ctx))
		assert.Empty(t, holders(t, rdb, "pool"))
	})
}

func TestShapeNoPermission(t *testing.T) {
	srv := redistest.Start(t)
	// The documented user may use keys under "app:" only; this semaphore has no prefix.
	sem := newSem(t, srv.DocumentedUser(t, acl.Semaphore), "pool", 1)
	ctx := withTimeout(t, 10*time.Second)
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			err := call(ctx, sem)
			require.Error(t, err)
			assert.ErrorIs(t, err, keyward.ErrNoPermission)
			assert.NotErrorIs(t, err, keyward.ErrInvalid)
			assert.False(t, errs.IsContext(err))
			assert.Contains(t, err.Error(), `"pool"`)
			assert.Less(t, time.Since(start), time.Second, "at once: a refusal will not pass")
		})
	}
}
