package semaphore_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/semaphore"
)

// find returns the one event of kind among events.
func find(t *testing.T, events []keyward.Event, kind keyward.EventKind) keyward.Event {
	t.Helper()
	found := observe.Select(events, kind)
	require.Len(t, found, 1, "one %v event among %v", kind, observe.Kinds(events))
	return found[0]
}

// fromPool checks that every event comes from the semaphore "pool".
func fromPool(t *testing.T, events []keyward.Event) {
	t.Helper()
	for _, e := range events {
		assert.Equal(t, "semaphore", e.Source, "%v", e.Kind)
		assert.Equal(t, "pool", e.Key, "%v", e.Kind)
	}
}

func TestObserverHearsAcquireWaitAndRelease(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		rec := &observe.Recorder{}
		sem := bubbleSem(t, rdb, "pool", 1, semaphore.WithFencing(), semaphore.WithObserver(rec))

		held, err := sem.TryAcquire(ctx, time.Minute)
		require.NoError(t, err)
		events := rec.Take()
		fromPool(t, events)
		assert.Equal(t, []keyward.Event{{Kind: keyward.Obtained, Source: "semaphore", Key: "pool",
			Fence: held.Fence(), Wait: 0}, {Kind: keyward.Ended, Source: "semaphore", Op: "try acquire", Key: "pool",
			Fence: held.Fence()}}, events, "TryAcquire does not wait")

		got := make(chan *semaphore.Permit)
		go func() {
			p, err := sem.Acquire(ctx, time.Minute)
			assert.NoError(t, err)
			got <- p
		}()
		synctest.Wait()
		assert.Equal(t, []keyward.EventKind{keyward.WaitStarted}, observe.Kinds(rec.Take()))

		time.Sleep(5 * time.Second)
		require.NoError(t, held.Release(ctx))
		p := <-got
		synctest.Wait()
		events = rec.Take()
		fromPool(t, events)
		assert.ElementsMatch(t, []keyward.EventKind{keyward.Released, keyward.WaitEnded, keyward.Obtained,
			keyward.Ended}, observe.Kinds(events))
		released := find(t, events, keyward.Released)
		assert.Equal(t, 5*time.Second, released.Held)
		assert.Equal(t, held.Fence(), released.Fence)
		assert.NoError(t, released.Err)
		ended := find(t, events, keyward.WaitEnded)
		assert.Equal(t, 5*time.Second, ended.Wait)
		assert.NoError(t, ended.Err)
		obtained := find(t, events, keyward.Obtained)
		assert.Equal(t, 5*time.Second, obtained.Wait)
		assert.Equal(t, p.Fence(), obtained.Fence)
		assert.Greater(t, p.Fence(), held.Fence())
		call := find(t, events, keyward.Ended)
		assert.Equal(t, keyward.Event{Kind: keyward.Ended, Source: "semaphore", Op: "acquire", Key: "pool",
			Fence: p.Fence(), Wait: 5 * time.Second}, call)

		require.NoError(t, held.Release(ctx))
		assert.Empty(t, rec.Take(), "a second Release tells nothing new")

		// A wait that ends without a permit.
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err = sem.Acquire(wctx, time.Minute)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		events = rec.Take()
		fromPool(t, events)
		assert.Equal(t, []keyward.EventKind{keyward.WaitStarted, keyward.WaitEnded, keyward.Ended},
			observe.Kinds(events))
		assert.Equal(t, 2*time.Second, events[1].Wait)
		assert.ErrorIs(t, events[1].Err, context.DeadlineExceeded)
		assert.Equal(t, err, events[1].Err, "the error Acquire returned")
		assert.Equal(t, err, events[2].Err, "the call ended with it")
		assert.Zero(t, events[2].Fence)

		require.NoError(t, p.Release(ctx))
		assert.Equal(t, []keyward.EventKind{keyward.Released}, observe.Kinds(rec.Take()))
	})
}

// The background case: an auto-refresh that keeps failing is told each time, then the loss.
func TestObserverHearsAFailingAutoRefreshThenTheLoss(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		rec := &observe.Recorder{}
		sem := bubbleSem(t, rdb, "pool", 1, semaphore.WithObserver(rec))
		p, err := sem.TryAcquire(ctx, 3*time.Second, semaphore.WithAutoRefresh())
		require.NoError(t, err)
		obtained := time.Now()
		assert.Equal(t, []keyward.EventKind{keyward.Obtained, keyward.Ended}, observe.Kinds(rec.Take()))

		m.SetError("ERR the server is having a bad day")
		<-p.Lost()
		synctest.Wait()
		events := rec.Take()
		fromPool(t, events)
		require.GreaterOrEqual(t, len(events), 2)
		last := events[len(events)-1]
		for _, e := range events[:len(events)-1] {
			assert.Equal(t, keyward.RefreshFailed, e.Kind)
			assert.ErrorContains(t, e.Err, "bad day")
			assert.Contains(t, e.Err.Error(), `"pool"`)
		}
		assert.Equal(t, keyward.Lost, last.Kind, "the loss comes last")
		assert.ErrorIs(t, last.Err, keyward.ErrLost)
		assert.Equal(t, time.Since(obtained), last.Held)
		assert.Equal(t, p.Until().Sub(obtained), last.Held, "lost at the validity deadline")

		m.SetError("")
		err = p.Release(ctx)
		require.ErrorIs(t, err, semaphore.ErrLost)
		released := find(t, rec.Take(), keyward.Released)
		assert.Equal(t, err, released.Err, "the release reports the loss")
	})
}

// A permit removed by an operator is found gone at the next refresh: Lost, with no RefreshFailed before it.
func TestObserverHearsAPermitFoundGone(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		rec := &observe.Recorder{}
		p, err := bubbleSem(t, rdb, "pool", 2, semaphore.WithObserver(rec)).
			TryAcquire(ctx, 3*time.Second, semaphore.WithAutoRefresh())
		require.NoError(t, err)
		_, err = m.ZRem("pool", p.Value())
		require.NoError(t, err)
		<-p.Lost()
		synctest.Wait()
		events := rec.Take()
		assert.Equal(t, []keyward.EventKind{keyward.Obtained, keyward.Ended, keyward.Lost}, observe.Kinds(events))
		assert.Equal(t, time.Second, events[2].Held, "found at the first refresh")
		assert.ErrorIs(t, events[2].Err, semaphore.ErrLost)
	})
}

// An acquire whose answer was lost is undone, and the observer hears of it.
func TestObserverHearsACleanUp(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		rec := &observe.Recorder{}
		sem := bubbleSem(t, rdb, "pool", 1, semaphore.WithObserver(rec))
		warm, err := sem.TryAcquire(ctx, time.Second) // loads the scripts
		require.NoError(t, err)
		require.NoError(t, warm.Release(ctx))
		rec.Take()

		rdb.AddHook(&redistest.LostReply{Name: "evalsha"})
		_, err = sem.TryAcquire(ctx, time.Minute)
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		events := rec.Take()
		fromPool(t, events)
		assert.Equal(t, []keyward.EventKind{keyward.CleanedUp, keyward.Ended}, observe.Kinds(events))
		assert.NoError(t, events[0].Err, "the permit the server added was released")
		assert.Equal(t, err, events[1].Err)
		assert.Empty(t, holders(t, rdb, "pool"))
	})
}

// A permit handed to a waiter that gave up meanwhile is given back: CleanedUp.
func TestObserverHearsAHandedPermitGivenBack(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		rec := &observe.Recorder{}
		sem := bubbleSem(t, rdb, "pool", 1, semaphore.WithObserver(rec))
		held, err := sem.TryAcquire(ctx, time.Minute)
		require.NoError(t, err)
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() {
			_, err := sem.Acquire(wctx, time.Minute)
			done <- err
		}()
		synctest.Wait()
		// The waiter gives up while the release that hands it the permit is on its way.
		rdb.AddHook(hookBefore("evalsha", func() {
			cancel()
			synctest.Wait() // the waiter has left the line, but is still being handed the permit
		}))
		require.NoError(t, held.Release(ctx))
		require.ErrorIs(t, <-done, context.Canceled)
		synctest.Wait()
		events := rec.Take()
		fromPool(t, events)
		assert.Contains(t, observe.Kinds(events), keyward.CleanedUp)
		assert.NoError(t, find(t, events, keyward.CleanedUp).Err)
		assert.NotContains(t, observe.Kinds(events)[1:], keyward.Obtained, "the waiter did not obtain it")
		assert.Empty(t, holders(t, rdb, "pool"), "nobody holds the handed permit")
	})
}

// hookBefore is a go-redis hook that calls fn once, before the first command named name is sent. Commands sent
// while fn runs pass.
func hookBefore(name string, fn func()) redis.Hook {
	var called atomic.Bool
	return beforeHook{name: name, fn: func() {
		if called.CompareAndSwap(false, true) {
			fn()
		}
	}}
}

type beforeHook struct {
	name string
	fn   func()
}

func (h beforeHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h beforeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h beforeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == h.name {
			h.fn()
		}
		return next(ctx, cmd)
	}
}

// Observer calls come with no lock of the Semaphore held: an observer may call the Semaphore back.
func TestObserverMayCallTheSemaphore(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		var sem *semaphore.Semaphore
		var limits []int
		var mu sync.Mutex
		o := keyward.ObserverFunc(func(context.Context, keyward.Event) {
			mu.Lock()
			defer mu.Unlock()
			limits = append(limits, sem.Limit()) // takes the Semaphore's mutex
			_ = sem.Stats()
		})
		sem = bubbleSem(t, rdb, "pool", 1, semaphore.WithObserver(o))
		p, err := sem.TryAcquire(ctx, time.Minute)
		require.NoError(t, err)
		go func() {
			time.Sleep(time.Second)
			assert.NoError(t, p.Release(ctx))
		}()
		q, err := sem.Acquire(ctx, time.Minute)
		require.NoError(t, err)
		require.NoError(t, q.Release(ctx))
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		assert.Len(t, limits, 8, "obtained, ended, wait started, released, wait ended, obtained, ended, released")
	})
}

func TestWithLogger(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		var buf syncBuffer
		rec := &observe.Recorder{}
		sem := bubbleSem(t, rdb, "pool", 1, semaphore.WithObserver(rec),
			semaphore.WithLogger(slogTo(&buf)), semaphore.WithLogger(nil))
		p, err := sem.TryAcquire(context.Background(), time.Minute)
		require.NoError(t, err)
		require.NoError(t, p.Release(context.Background()))
		assert.Len(t, rec.Take(), 3, "the observer still hears everything: obtained, ended, released")
		assert.Contains(t, buf.String(), `msg="keyward: obtained" source=semaphore key=pool`)
		assert.Contains(t, buf.String(), `msg="keyward: released" source=semaphore key=pool`)
	})
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// slogTo returns a logger that writes every level to w as text, without the time.
func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}))
}
