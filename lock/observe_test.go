package lock_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
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

// wait returns the first event of kind rec heard, waiting for it for up to 10 s (of the bubble's clock in a
// synctest bubble).
func wait(t *testing.T, rec *observe.Recorder, kind keyward.EventKind) keyward.Event {
	t.Helper()
	e, err := rec.Wait(withTimeout(t, 10*time.Second), kind)
	require.NoError(t, err)
	return e
}

// observed runs test in a synctest bubble with a miniredis and a Client with prefix "p:" that reports to a
// recorder.
func observed(t *testing.T, test func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client, rec *observe.Recorder)) {
	synctest.Test(t, func(t *testing.T) {
		rec := &observe.Recorder{} // waited on in the bubble: durably blocking
		m := miniredis.NewMiniRedis()
		defer m.Close()
		rdb := redistest.SynctestClient(m)
		defer rdb.Close()
		locks := newClient(t, rdb, lock.WithPrefix("p:"), lock.WithObserver(rec))
		defer func() { assert.NoError(t, locks.Close()) }()
		test(t, m, locks, rec)
	})
}

func TestObserverHearsObtainedAndReleased(t *testing.T) {
	observed(t, func(t *testing.T, _ *miniredis.Miniredis, locks *lock.Client, rec *observe.Recorder) {
		ctx := context.Background()
		l, err := locks.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		time.Sleep(3 * time.Second)
		require.NoError(t, l.Release(ctx))
		require.NoError(t, l.Release(ctx), "a second release makes no round trip, and no event")

		l, err = locks.Obtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx))

		events := rec.All()
		require.Len(t, events, 6, "no wait events: nobody waited")
		obtained, ended, released := events[0], events[1], events[2]
		assert.Equal(t, keyward.Obtained, obtained.Kind)
		assert.Equal(t, "lock", obtained.Source)
		assert.Equal(t, "p:job", obtained.Key, "the key with the Client's prefix")
		assert.Positive(t, obtained.Fence)
		assert.Zero(t, obtained.Wait, "no time passes in the bubble while it runs")
		assert.Equal(t, keyward.Event{Kind: keyward.Ended, Source: "lock", Op: "try obtain", Key: "p:job",
			Fence: obtained.Fence}, ended, "the call ended with the lock")
		assert.Equal(t, keyward.Released, released.Kind)
		assert.Equal(t, "p:job", released.Key)
		assert.Equal(t, obtained.Fence, released.Fence)
		assert.Equal(t, 3*time.Second, released.Held)
		assert.NoError(t, released.Err)
		assert.Equal(t, []keyward.EventKind{keyward.Obtained, keyward.Ended, keyward.Released}, rec.Kinds()[3:])
		assert.Equal(t, l.Fence(), events[3].Fence)
		assert.Equal(t, "obtain", events[4].Op)
		assert.Equal(t, l.Fence(), events[4].Fence)
	})
}

func TestObserverHearsAWait(t *testing.T) {
	observed(t, func(t *testing.T, _ *miniredis.Miniredis, locks *lock.Client, rec *observe.Recorder) {
		ctx := context.Background()
		held, err := locks.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		got := make(chan *lock.Lock)
		go func() {
			time.Sleep(time.Second)
			l, err := locks.Obtain(ctx, "job", time.Minute) // waits in the Client's own line
			assert.NoError(t, err)
			got <- l
		}()
		wait(t, rec, keyward.WaitStarted)
		time.Sleep(2 * time.Second)
		require.NoError(t, held.Release(ctx)) // handed over in the release's round trip
		l := <-got
		require.NoError(t, l.Release(ctx))

		// The holder's Released and the waiter's WaitEnded come from two goroutines, in either order.
		kinds := rec.Kinds()
		require.Len(t, kinds, 8)
		assert.Equal(t, []keyward.EventKind{keyward.Obtained, keyward.Ended, keyward.WaitStarted}, kinds[:3])
		assert.ElementsMatch(t, []keyward.EventKind{keyward.Released, keyward.WaitEnded}, kinds[3:5])
		assert.Equal(t, []keyward.EventKind{keyward.Obtained, keyward.Ended, keyward.Released}, kinds[5:])
		waited := rec.Of(keyward.Ended)[1]
		assert.Equal(t, "obtain", waited.Op)
		assert.Equal(t, 2*time.Second, waited.Wait, "the whole call")
		assert.NoError(t, waited.Err)
		started, ended, obtained := rec.Of(keyward.WaitStarted)[0], rec.Of(keyward.WaitEnded)[0], rec.Of(keyward.Obtained)[1]
		assert.Equal(t, "p:job", started.Key)
		assert.Equal(t, "lock", started.Source)
		assert.Equal(t, 2*time.Second, ended.Wait)
		assert.NoError(t, ended.Err)
		assert.Equal(t, 2*time.Second, obtained.Wait, "since the call began")
		assert.Equal(t, l.Fence(), obtained.Fence)
		assert.Equal(t, int64(1), locks.Stats().HandOffs)
	})
}

func TestObserverHearsAWaitThatEndsWithoutTheLock(t *testing.T) {
	observed(t, func(t *testing.T, _ *miniredis.Miniredis, locks *lock.Client, rec *observe.Recorder) {
		ctx := context.Background()
		held, err := locks.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		cause := errors.New("shutting down")
		wctx, cancel := context.WithCancelCause(ctx)
		done := make(chan error)
		go func() {
			_, err := locks.Obtain(wctx, "job", time.Minute)
			done <- err
		}()
		wait(t, rec, keyward.WaitStarted)
		time.Sleep(time.Second)
		cancel(cause)
		err = <-done
		require.ErrorIs(t, err, cause)
		ended := wait(t, rec, keyward.WaitEnded)
		assert.Equal(t, time.Second, ended.Wait)
		assert.ErrorIs(t, ended.Err, cause)
		assert.ErrorIs(t, ended.Err, context.Canceled)
		assert.Len(t, rec.Of(keyward.Obtained), 1, "only the holder's")
		require.NoError(t, held.Release(ctx))
	})
}

// The background case: an auto-refresh that fails is reported each time it fails, and then the loss.
func TestObserverHearsFailingRefreshesThenTheLoss(t *testing.T) {
	observed(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client, rec *observe.Recorder) {
		ctx := context.Background()
		l, err := locks.TryObtain(ctx, "job", time.Second, lock.WithAutoRefresh())
		require.NoError(t, err)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		assert.Empty(t, rec.Of(keyward.RefreshFailed), "refreshes work")

		m.SetError("LOADING Redis is loading the dataset in memory")
		<-l.Lost()
		synctest.Wait()
		m.SetError("")
		time.Sleep(time.Second) // the key expires on the server too
		failed, lost := rec.Of(keyward.RefreshFailed), rec.Of(keyward.Lost)
		require.NotEmpty(t, failed)
		for _, e := range failed {
			assert.Equal(t, "p:job", e.Key)
			assert.Equal(t, "lock", e.Source)
			assert.Equal(t, l.Fence(), e.Fence)
			assert.ErrorContains(t, e.Err, "LOADING")
			assert.Contains(t, e.Err.Error(), `"job"`)
		}
		require.Len(t, lost, 1)
		assert.ErrorIs(t, lost[0].Err, lock.ErrLost)
		assert.Equal(t, l.Fence(), lost[0].Fence)
		assert.Positive(t, lost[0].Held)
		kinds := rec.Kinds()
		assert.Equal(t, keyward.Lost, kinds[len(kinds)-1], "the loss comes after the failed refreshes")

		assert.ErrorIs(t, l.Release(ctx), lock.ErrLost)
		released := wait(t, rec, keyward.Released)
		assert.ErrorIs(t, released.Err, lock.ErrNotHeld, "the key had expired")
	})
}

// A lock found gone by TTL (or Refresh, or Guard) is lost: the observer hears it once.
func TestObserverHearsALossFoundByACall(t *testing.T) {
	observed(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client, rec *observe.Recorder) {
		ctx := context.Background()
		l, err := locks.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		time.Sleep(time.Second)
		m.Del("p:job")
		_, err = l.TTL(ctx)
		require.ErrorIs(t, err, lock.ErrLost)
		require.ErrorIs(t, l.Refresh(ctx, time.Minute), lock.ErrLost)
		lost := rec.Of(keyward.Lost)
		require.Len(t, lost, 1)
		assert.Equal(t, time.Second, lost[0].Held)
		assert.ErrorIs(t, lost[0].Err, lock.ErrLost)
	})
}

// failEvalsha is a go-redis hook under which every script call fails as if its reply had been lost, without
// reaching the server.
type failEvalsha struct{}

func (failEvalsha) DialHook(next redis.DialHook) redis.DialHook { return next }

func (failEvalsha) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (failEvalsha) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "evalsha" || cmd.Name() == "eval" {
			err := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

// An acquire whose reply was lost is undone: CleanedUp, with the clean-up's error when it failed too.
func TestObserverHearsCleanUps(t *testing.T) {
	t.Run("clean-up worked", func(t *testing.T) {
		_, rdb := redistest.Miniredis(t)
		rec := &observe.Recorder{}
		locks := newClient(t, rdb, lock.WithObserver(rec))
		closeClient(t, locks)
		rdb.AddHook(&redistest.LostReply{Name: "evalsha"})
		_, err := locks.TryObtain(context.Background(), "upload", 10*time.Second)
		require.Error(t, err)
		assert.Equal(t, []keyward.EventKind{keyward.CleanedUp, keyward.Ended}, rec.Kinds())
		assert.Equal(t, err, rec.All()[1].Err, "the call ended with its error")
		e := rec.All()[0]
		assert.Equal(t, "upload", e.Key)
		assert.Equal(t, "lock", e.Source)
		assert.NoError(t, e.Err)
	})
	t.Run("clean-up failed", func(t *testing.T) {
		_, rdb := redistest.Miniredis(t)
		rec := &observe.Recorder{}
		locks := newClient(t, rdb, lock.WithObserver(rec))
		closeClient(t, locks)
		rdb.AddHook(failEvalsha{})
		_, err := locks.TryObtain(context.Background(), "upload", 10*time.Second)
		require.Error(t, err)
		assert.Equal(t, []keyward.EventKind{keyward.CleanedUp, keyward.Ended}, rec.Kinds())
		e := rec.All()[0]
		assert.ErrorIs(t, e.Err, os.ErrDeadlineExceeded)
		assert.Contains(t, e.Err.Error(), `"upload"`)
	})
}

// A waiter that gives up leaves the Redis queue; when the server refuses that, the observer hears an Error (it
// used to be dropped).
func TestObserverHearsABackgroundError(t *testing.T) {
	srv := redistest.Start(t)
	ctx := withTimeout(t, 10*time.Second)
	holder := newClient(t, srv.Client(t), lock.WithPrefix(acl.Prefix))
	held, err := holder.TryObtain(ctx, "job", time.Minute)
	require.NoError(t, err)

	hook, subscribed := waiting(2)
	rec := &observe.Recorder{}
	waiter := newClient(t, srv.DocumentedUser(t, acl.Without(acl.Lock, "+zrem"), hook), lock.WithPrefix(acl.Prefix),
		lock.WithObserver(rec))
	closeClient(t, waiter)
	wctx, cancel := context.WithCancel(ctx)
	go func() {
		<-subscribed // in the Redis queue
		cancel()
	}()
	_, err = waiter.Obtain(wctx, "job", time.Minute)
	require.ErrorIs(t, err, context.Canceled)
	e := wait(t, rec, keyward.Error)
	assert.Equal(t, acl.Prefix+"job", e.Key)
	assert.Equal(t, "lock", e.Source)
	assert.ErrorIs(t, e.Err, lock.ErrNoPermission)
	require.NoError(t, held.Release(ctx))
}

// The observer is never called with the Client's mutex held: one that takes and releases another lock of the same
// Client from inside Observe does not deadlock, through waits, hand-overs and releases.
func TestObserverMayCallTheClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		defer m.Close()
		rdb := redistest.SynctestClient(m)
		defer rdb.Close()
		var locks *lock.Client
		var calls int
		var mu sync.Mutex
		observer := keyward.ObserverFunc(func(ctx context.Context, e keyward.Event) {
			if e.Key == "reentrant" {
				return
			}
			l, err := locks.Obtain(ctx, "reentrant", time.Minute)
			if assert.NoError(t, err) {
				assert.NoError(t, l.Release(ctx))
			}
			mu.Lock()
			calls++
			mu.Unlock()
		})
		locks = newClient(t, rdb, lock.WithObserver(observer))
		defer func() { assert.NoError(t, locks.Close()) }()
		ctx := context.Background()
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 3 {
					l, err := locks.Obtain(ctx, "job", time.Minute)
					if assert.NoError(t, err) {
						time.Sleep(time.Millisecond)
						assert.NoError(t, l.Release(ctx))
					}
				}
			})
		}
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		assert.GreaterOrEqual(t, calls, 24, "an Obtained and a Released for each of the 12 locks")
		assert.Positive(t, locks.Stats().HandOffs)
	})
}

func TestWithLogger(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rec := &observe.Recorder{}
	locks := newClient(t, rdb, lock.WithLogger(logger), lock.WithObserver(rec), lock.WithLogger(nil),
		lock.WithObserver(nil))
	closeClient(t, locks)
	ctx := context.Background()
	l, err := locks.TryObtain(ctx, "job", time.Minute)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2)
	assert.Contains(t, lines[0], `msg="keyward: obtained" source=lock key=job`)
	assert.Contains(t, lines[1], `msg="keyward: released" source=lock key=job`)
	assert.Equal(t, []keyward.EventKind{keyward.Obtained, keyward.Ended, keyward.Released}, rec.Kinds(),
		"the logger and the observer both hear every event (the logger skips a call's end without an error)")
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func TestStats(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, locks *lock.Client) {
		defer func() { assert.NoError(t, locks.Close()) }()
		ctx := context.Background()
		assert.Equal(t, keyward.Stats{}, locks.Stats())
		l, err := locks.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		_, err = locks.TryObtain(ctx, "job", time.Minute)
		require.ErrorIs(t, err, lock.ErrNotObtained)
		got := make(chan *lock.Lock)
		go func() {
			l, err := locks.Obtain(ctx, "job", time.Minute)
			assert.NoError(t, err)
			got <- l
		}()
		synctest.Wait() // a plain try and one as a waiter, both failed (TryObtain's lock is not in the Client's line)
		require.NoError(t, l.Release(ctx))
		require.NoError(t, (<-got).Release(ctx))
		assert.Equal(t, keyward.Stats{Tries: 4, FailedTries: 3, HandOffs: 1}, locks.Stats())
	})
}
