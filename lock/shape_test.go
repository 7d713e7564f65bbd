package lock_test

// The error shapes that lock shares with redlock, semaphore and election, one situation at a time: a ctx
// cancelled with a cause, a deadline, calls after Close, a permission refused. Each error matches its keyward
// sentinel (or ctx's error and its cause) with errors.Is and names the key.

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
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// assertShape checks that err matches every one of want and names the key "job".
func assertShape(t *testing.T, err error, want ...error) {
	t.Helper()
	require.Error(t, err)
	for _, w := range want {
		assert.ErrorIs(t, err, w)
	}
	assert.Contains(t, err.Error(), `"job"`, "the error names the key")
	assert.NotErrorIs(t, err, lock.ErrNotObtained)
	assert.NotErrorIs(t, err, lock.ErrInvalid)
}

// shapeBubble runs test in a synctest bubble (inBubble) with a Client, and a second Client (another process) that
// holds "job" for a minute.
func shapeBubble(t *testing.T, test func(t *testing.T, locks *lock.Client)) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client) {
		defer func() { assert.NoError(t, locks.Close()) }()
		rdb := redistest.SynctestClient(m) // another process's connection
		defer rdb.Close()
		other := newClient(t, rdb)
		defer func() { assert.NoError(t, other.Close()) }()
		held, err := other.TryObtain(context.Background(), "job", time.Minute)
		require.NoError(t, err)
		test(t, locks)
		require.NoError(t, held.Release(context.Background()))
	})
}

// heldBubble runs test in a synctest bubble (inBubble) with a Client that holds "job" for a minute, then releases
// the lock: the release works, or finds the lock gone (a Release that test cut short may have reached the server
// all the same).
func heldBubble(t *testing.T, test func(t *testing.T, l *lock.Lock)) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, locks *lock.Client) {
		defer func() { assert.NoError(t, locks.Close()) }()
		l, err := locks.TryObtain(context.Background(), "job", time.Minute)
		require.NoError(t, err)
		test(t, l)
		if err := l.Release(context.Background()); err != nil {
			assert.ErrorIs(t, err, lock.ErrNotHeld)
		}
	})
}

// waitingCalls are the calls that wait for "job" (held by another process in shapeBubble), each returning its error.
var waitingCalls = map[string]func(ctx context.Context, locks *lock.Client) error{
	"Obtain": func(ctx context.Context, locks *lock.Client) error {
		_, err := locks.Obtain(ctx, "job", time.Minute)
		return err
	},
	"Do": func(ctx context.Context, locks *lock.Client) error {
		return locks.Do(ctx, "job", time.Minute, func(context.Context) error { return nil })
	},
	"Locker().Obtain": func(ctx context.Context, locks *lock.Client) error {
		_, err := locks.Locker().Obtain(ctx, "job", time.Minute)
		return err
	},
}

// heldCalls are the calls on a held lock, each returning its error.
var heldCalls = map[string]func(ctx context.Context, l *lock.Lock) error{
	"Refresh": func(ctx context.Context, l *lock.Lock) error { return l.Refresh(ctx, time.Minute) },
	"TTL":     func(ctx context.Context, l *lock.Lock) error { _, err := l.TTL(ctx); return err },
	"Guard": func(ctx context.Context, l *lock.Lock) error {
		return l.Guard(ctx, func(p redis.Pipeliner) error { return p.Set(ctx, "{job}:data", "1", 0).Err() })
	},
	"Release": func(ctx context.Context, l *lock.Lock) error { return l.Release(ctx) },
}

func TestShapeCancelledWithACause(t *testing.T) {
	cause := errors.New("shutting down")
	t.Run("TryObtain", func(t *testing.T) {
		shapeBubble(t, func(t *testing.T, locks *lock.Client) {
			ctx, cancel := context.WithCancelCause(context.Background())
			cancel(cause)
			_, err := locks.TryObtain(ctx, "job", time.Minute)
			assertShape(t, err, context.Canceled, cause)
		})
	})
	for name, call := range waitingCalls {
		t.Run(name+" before the call", func(t *testing.T) {
			shapeBubble(t, func(t *testing.T, locks *lock.Client) {
				ctx, cancel := context.WithCancelCause(context.Background())
				cancel(cause)
				assertShape(t, call(ctx, locks), context.Canceled, cause)
			})
		})
		t.Run(name+" while waiting", func(t *testing.T) {
			shapeBubble(t, func(t *testing.T, locks *lock.Client) {
				ctx, cancel := context.WithCancelCause(context.Background())
				done := make(chan error)
				go func() { done <- call(ctx, locks) }()
				synctest.Wait() // waiting
				cancel(cause)
				assertShape(t, <-done, context.Canceled, cause)
			})
		})
	}
	for name, call := range heldCalls {
		t.Run(name, func(t *testing.T) {
			heldBubble(t, func(t *testing.T, l *lock.Lock) {
				ctx, cancel := context.WithCancelCause(context.Background())
				cancel(cause)
				assertShape(t, call(ctx, l), context.Canceled, cause)
				assert.NoError(t, l.Err(), "an operation cut short by its ctx does not lose the lock")
			})
		})
	}
}

func TestShapeDeadline(t *testing.T) {
	cause := errors.New("request budget spent")
	t.Run("TryObtain", func(t *testing.T) {
		shapeBubble(t, func(t *testing.T, locks *lock.Client) {
			ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
			defer cancel()
			_, err := locks.TryObtain(ctx, "job", time.Minute)
			assertShape(t, err, context.DeadlineExceeded)
		})
	})
	for name, call := range waitingCalls {
		t.Run(name, func(t *testing.T) {
			shapeBubble(t, func(t *testing.T, locks *lock.Client) {
				ctx, cancel := context.WithTimeoutCause(context.Background(), time.Second, cause)
				defer cancel()
				start := time.Now()
				assertShape(t, call(ctx, locks), context.DeadlineExceeded, cause)
				assert.Equal(t, time.Second, time.Since(start), "waited until the deadline, not longer")
			})
		})
	}
	for name, call := range heldCalls {
		t.Run(name, func(t *testing.T) {
			heldBubble(t, func(t *testing.T, l *lock.Lock) {
				ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
				defer cancel()
				assertShape(t, call(ctx, l), context.DeadlineExceeded)
			})
		})
	}
}

func TestShapeAfterClose(t *testing.T) {
	calls := map[string]func(ctx context.Context, locks *lock.Client) error{
		"TryObtain": func(ctx context.Context, locks *lock.Client) error {
			_, err := locks.TryObtain(ctx, "job", time.Minute)
			return err
		},
		"Locker().TryObtain": func(ctx context.Context, locks *lock.Client) error {
			_, err := locks.Locker().TryObtain(ctx, "job", time.Minute)
			return err
		},
	}
	for name, call := range waitingCalls {
		calls[name] = call
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			inBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client) {
				require.NoError(t, locks.Close())
				assertShape(t, call(context.Background(), locks), lock.ErrClosed, keyward.ErrClosed)
				assert.False(t, m.Exists("job"), "nothing was taken")
				assert.NoError(t, locks.Close(), "a second Close returns nil")
			})
		})
	}
	for name, call := range waitingCalls {
		t.Run(name+" woken by Close", func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := miniredis.NewMiniRedis()
				defer m.Close()
				rdb := redistest.SynctestClient(m)
				defer rdb.Close()
				other := newClient(t, rdb)
				defer func() { assert.NoError(t, other.Close()) }()
				held, err := other.TryObtain(context.Background(), "job", time.Minute)
				require.NoError(t, err)
				rec := &observe.Recorder{}
				locks := newClient(t, rdb, lock.WithObserver(rec))
				done := make(chan error)
				go func() { done <- call(context.Background(), locks) }()
				synctest.Wait() // waiting
				require.NoError(t, locks.Close())
				assertShape(t, <-done, lock.ErrClosed)
				assert.ErrorIs(t, wait(t, rec, keyward.WaitEnded).Err, lock.ErrClosed)
				require.NoError(t, held.Release(context.Background()))
			})
		})
	}
	t.Run("held locks stay usable", func(t *testing.T) {
		inBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client) {
			ctx := context.Background()
			kept, err := locks.TryObtain(ctx, "kept", time.Second, lock.WithAutoRefresh())
			require.NoError(t, err)
			l, err := locks.Obtain(ctx, "job", time.Minute)
			require.NoError(t, err)
			waiter := make(chan error)
			go func() {
				_, err := locks.Obtain(ctx, "job", time.Minute) // in the Client's line, behind l
				waiter <- err
			}()
			synctest.Wait()
			require.NoError(t, locks.Close())
			assert.ErrorIs(t, <-waiter, lock.ErrClosed)

			require.NoError(t, l.Refresh(ctx, 2*time.Minute))
			ttl, err := l.TTL(ctx)
			require.NoError(t, err)
			assert.Equal(t, 2*time.Minute, ttl)
			require.NoError(t, l.Guard(ctx, func(p redis.Pipeliner) error { return p.Set(ctx, "{job}:data", "1", 0).Err() }))
			require.NoError(t, l.Release(ctx), "released, and handed to no waiter")
			assert.False(t, m.Exists("job"))
			assert.Equal(t, int64(0), locks.Stats().HandOffs)

			time.Sleep(10 * time.Second)
			assert.NoError(t, kept.Err(), "auto-refresh goes on after Close")
			require.NoError(t, kept.Release(ctx))
		})
	})
}

func TestShapeNoPermission(t *testing.T) {
	srv := redistest.Start(t)
	for name, tc := range map[string]struct {
		rule string
		opts []lock.Option
	}{
		"command refused": {acl.Without(acl.Lock, "+evalsha"), []lock.Option{lock.WithPrefix(acl.Prefix)}},
		"key refused":     {acl.Lock, nil}, // "job" is not under the user's prefix
	} {
		t.Run(name, func(t *testing.T) {
			ctx := withTimeout(t, 10*time.Second)
			locks := newClient(t, srv.DocumentedUser(t, tc.rule), tc.opts...)
			closeClient(t, locks)
			_, err := locks.TryObtain(ctx, "job", time.Minute)
			assertShape(t, err, lock.ErrNoPermission, keyward.ErrNoPermission)
			_, err = locks.Obtain(ctx, "job", time.Minute)
			assertShape(t, err, lock.ErrNoPermission)
			assert.NoError(t, ctx.Err(), "Obtain returned at once: a refusal does not pass")
			assert.Empty(t, srv.Snapshot(t), "nothing was written")
		})
	}
}
