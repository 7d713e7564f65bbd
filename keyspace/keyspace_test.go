package keyspace_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/keyspace"
	"github.com/keyward/keyward/lock"
	"github.com/keyward/keyward/semaphore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func newWatcher(t *testing.T, rdb redis.UniversalClient, opts ...keyspace.Option) *keyspace.Watcher {
	w := keyspace.New(rdb, opts...)
	t.Cleanup(func() { assert.NoError(t, w.Close()) })
	return w
}

func watch(t *testing.T, w *keyspace.Watcher, key string) *keyspace.Watch {
	t.Helper()
	wt, err := w.Watch(withTimeout(t, 10*time.Second), key)
	require.NoError(t, err)
	t.Cleanup(wt.Close)
	return wt
}

// next waits (at most 10 s) for an event of kind e, skipping others.
func next(t *testing.T, wt *keyspace.Watch, e keyspace.Event) {
	t.Helper()
	ctx := withTimeout(t, 10*time.Second)
	for {
		got, err := wt.Wait(ctx)
		require.NoError(t, err, "waiting for %v", e)
		if got == e {
			return
		}
	}
}

// pubsubConnections counts the server's pub/sub connections (CLIENT LIST TYPE pubsub).
func pubsubConnections(t *testing.T, admin *redis.Client) int {
	t.Helper()
	list, err := admin.Do(context.Background(), "CLIENT", "LIST", "TYPE", "pubsub").Text()
	require.NoError(t, err)
	return strings.Count(list, "id=")
}

// failedTries returns a hook that closes the returned channel after n failed tries of locks and semaphores (the
// plain try, and the try after the subscription: after a waiter's second one, it is subscribed and waits).
func failedTries(n int64) (*redistest.AfterReply, chan struct{}) {
	ch := make(chan struct{})
	return &redistest.AfterReply{N: n, Fn: func() { close(ch) },
		Match:         func(r []any) bool { return len(r) >= 2 && r[0] == int64(0) },
		MatchPipeline: redistest.FastTriesFailed}, ch
}

// Two lock.Clients and a semaphore on one Redis client wait through one pub/sub connection; closing one of them
// ends its own waiter (ErrClosed) and leaves the others waiting: the releases wake them, long before their
// holders' one-minute ttl.
func TestOneConnectionPerClientAndClosingOneUserLeavesTheOthers(t *testing.T) {
	srv := redistest.Start(t)
	admin, rdb := srv.Client(t), srv.Client(t)
	ctx := withTimeout(t, 20*time.Second)
	holder, err := lock.New(admin)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, holder.Close()) })
	var held []*lock.Lock
	for _, key := range []string{"a", "b"} {
		l, err := holder.TryObtain(ctx, key, time.Minute)
		require.NoError(t, err)
		held = append(held, l)
	}
	semHolder, err := semaphore.New(admin, "pool", 1)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, semHolder.Close()) })
	permit, err := semHolder.TryAcquire(ctx, time.Minute)
	require.NoError(t, err)

	hook, waiting := failedTries(6) // two for each waiter
	rdb.AddHook(hook)
	a, err := lock.New(rdb)
	require.NoError(t, err)
	b, err := lock.New(rdb)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, b.Close()) })
	sem, err := semaphore.New(rdb, "pool", 1)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, sem.Close()) })

	type result struct {
		who string
		err error
	}
	done := make(chan result, 3)
	go func() {
		l, err := a.Obtain(ctx, "a", time.Minute)
		if err == nil {
			_ = l.Release(ctx)
		}
		done <- result{"a", err}
	}()
	go func() {
		l, err := b.Obtain(ctx, "b", time.Minute)
		if err == nil {
			err = l.Release(ctx)
		}
		done <- result{"b", err}
	}()
	go func() {
		p, err := sem.Acquire(ctx, time.Minute)
		if err == nil {
			err = p.Release(ctx)
		}
		done <- result{"sem", err}
	}()
	select {
	case <-waiting:
	case r := <-done:
		t.Fatalf("%s returned before waiting: %v", r.who, r.err)
	case <-ctx.Done():
		t.Fatal("the waiters did not get to wait")
	}
	assert.Equal(t, 1, pubsubConnections(t, admin), "one pub/sub connection for every user of the client")

	require.NoError(t, a.Close())
	r := <-done
	require.Equal(t, "a", r.who)
	assert.ErrorIs(t, r.err, keyward.ErrClosed)

	require.NoError(t, held[1].Release(ctx))
	require.NoError(t, permit.Release(ctx))
	for range 2 {
		r := <-done
		assert.NoError(t, r.err, "%s was woken by the release", r.who)
	}
	require.NoError(t, held[0].Release(ctx))
}

// A Watcher hears a keyward lock's release on its key, and a deletion by another tool when the server sends
// keyspace notifications (here turned on by WithNotifications).
func TestWatchHearsReleasesAndNotifications(t *testing.T) {
	srv := redistest.Start(t)
	admin, rdb := srv.Client(t), srv.Client(t)
	ctx := withTimeout(t, 10*time.Second)
	w := newWatcher(t, rdb, keyspace.WithNotifications())
	wt := watch(t, w, "job")
	locks, err := lock.New(admin)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, locks.Close()) })
	l, err := locks.TryObtain(ctx, "job", time.Minute)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))
	next(t, wt, keyspace.Released)

	cache := watch(t, w, "cache:report")
	require.NoError(t, admin.Set(ctx, "cache:report", "x", 0).Err())
	require.NoError(t, admin.Del(ctx, "cache:report").Err())
	next(t, cache, keyspace.Deleted)
	require.NoError(t, admin.Set(ctx, "cache:report", "x", 20*time.Millisecond).Err())
	next(t, cache, keyspace.Expired)
}

// Wait returns the error shapes of the library: ctx's error and cause, ErrClosed after Close of the watch or the
// Watcher, with the key; Watch returns ErrInvalid for an empty key or a nil client.
func TestWaitErrors(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	w := keyspace.New(rdb)
	wt := watch(t, w, "job")

	errStop := errors.New("stop")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errStop)
	_, err := wt.Wait(ctx)
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, errStop)
	assert.Contains(t, err.Error(), `"job"`)

	require.NoError(t, w.Close())
	_, err = wt.Wait(context.Background())
	assert.ErrorIs(t, err, keyward.ErrClosed)
	assert.Contains(t, err.Error(), `"job"`)
	_, err = w.Watch(context.Background(), "other")
	assert.ErrorIs(t, err, keyward.ErrClosed)
	require.NoError(t, w.Close(), "a second Close is a no-op")

	other := newWatcher(t, rdb)
	own := watch(t, other, "job")
	own.Close()
	_, err = own.Wait(context.Background())
	assert.ErrorIs(t, err, keyward.ErrClosed)
	own.Close()

	_, err = other.Watch(context.Background(), "")
	assert.ErrorIs(t, err, keyward.ErrInvalid)
	_, err = newWatcher(t, (*redis.Client)(nil)).Watch(context.Background(), "job")
	assert.ErrorIs(t, err, keyward.ErrInvalid)
}

// A Wait blocked when its watch is closed returns at once.
func TestCloseWakesAWait(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	w := newWatcher(t, rdb)
	wt, err := w.Watch(withTimeout(t, 10*time.Second), "job")
	require.NoError(t, err)
	errc := make(chan error, 1)
	go func() {
		_, err := wt.Wait(context.Background())
		errc <- err
	}()
	wt.Close()
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, keyward.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after Close")
	}
}

// Events wait until taken, in order, and several goroutines share them, each event going to one of them.
func TestEventsAreKeptAndShared(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	w := newWatcher(t, rdb)
	wt := watch(t, w, "job")
	ch := keys.For("job").Channel
	ctx := withTimeout(t, 10*time.Second)
	for range 3 {
		require.NoError(t, rdb.Publish(ctx, ch, "").Err())
	}
	got := make(chan keyspace.Event, 3)
	for range 3 {
		go func() {
			e, err := wt.Wait(ctx)
			assert.NoError(t, err)
			got <- e
		}()
	}
	for range 3 {
		select {
		case e := <-got:
			assert.Equal(t, keyspace.Released, e)
		case <-ctx.Done():
			t.Fatal("an event was not taken")
		}
	}
}

// The observer given to a Watcher hears the shared connection rebuilt, whoever's watches it carries.
func TestObserverHearsReconnected(t *testing.T) {
	srv := redistest.Start(t)
	admin, rdb := srv.Client(t), srv.Client(t)
	rec := &observe.Recorder{}
	w := newWatcher(t, rdb, keyspace.WithObserver(rec))
	watch(t, w, "warm")
	locks, err := lock.New(rdb) // another user of the client
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, locks.Close()) })

	require.NoError(t, admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err())
	_, err = rec.Wait(withTimeout(t, 10*time.Second), keyward.Reconnected)
	require.NoError(t, err, "the observer did not hear the reconnect")
	e := rec.All()[0]
	assert.Equal(t, keyward.Reconnected, e.Kind, "the first event")
	assert.Equal(t, "keyspace", e.Source)
	assert.Error(t, e.Err)
}

func TestEventNames(t *testing.T) {
	for e, name := range map[keyspace.Event]string{
		keyspace.Released: "released", keyspace.Deleted: "deleted", keyspace.Expired: "expired",
		keyspace.Evicted: "evicted", keyspace.Reconnected: "reconnected", 0: "Event(0)",
	} {
		assert.Equal(t, name, e.String())
	}
}
