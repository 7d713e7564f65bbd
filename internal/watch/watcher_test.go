package watch_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/watch"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newWatcher(t *testing.T, rdb redis.UniversalClient, opts ...watch.Option) *watch.Watcher {
	w := watch.New(rdb, opts...)
	t.Cleanup(func() { assert.NoError(t, w.Close()) })
	return w
}

func mustWatch(t *testing.T, w *watch.Watcher, key string) *watch.Watch {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wt, err := w.Watch(ctx, key)
	require.NoError(t, err)
	t.Cleanup(wt.Close)
	return wt
}

// leftover keeps, by watch, the events that awaitKind took but did not return: a batch can hold several events
// the test waits for one by one (the drop and the resubscription of a reconnect, say).
var leftover sync.Map

// awaitKind waits until an event of kind k arrives on wt, skipping others, or deadline fires (ok is false); the
// events after it in its batch are kept for the next call. It may run on another goroutine than the test's, but
// only one goroutine may wait on wt at a time.
func awaitKind(wt *watch.Watch, k watch.Kind, deadline <-chan time.Time) (e watch.Event, ok bool) {
	for {
		var ev []watch.Event
		if rest, ok := leftover.LoadAndDelete(wt); ok {
			ev = rest.([]watch.Event)
		} else {
			select {
			case <-wt.Ready():
				ev = wt.Events()
			case <-deadline:
				return watch.Event{}, false
			}
		}
		for i, e := range ev {
			if e.Kind == k {
				if rest := ev[i+1:]; len(rest) > 0 {
					leftover.Store(wt, rest)
				}
				return e, true
			}
		}
	}
}

// nextKind waits (at most 10 s, so a missing wake-up fails instead of hanging) until an event of kind k arrives,
// skipping others; the events after it are kept for the next call.
func nextKind(t *testing.T, wt *watch.Watch, k watch.Kind) watch.Event {
	t.Helper()
	e, ok := awaitKind(wt, k, time.After(10*time.Second))
	if !ok {
		t.Fatalf("no %v event on the watch of %q within 10s", k, wt.Key())
	}
	return e
}

func TestReleaseMessagesWake(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		w := newWatcher(t, rdb)
		wt := mustWatch(t, w, "job")
		// The subscription is confirmed when Watch returns: a message published right now is delivered.
		require.NoError(t, rdb.Publish(context.Background(), keys.For("job").Channel, "hello").Err())
		e := nextKind(t, wt, watch.Released)
		assert.Equal(t, "hello", e.Payload)
	})
}

func TestSubscriptionsAreSharedAndCounted(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	w := newWatcher(t, rdb)
	a := mustWatch(t, w, "job")
	b := mustWatch(t, w, "job")
	ch := keys.For("job").Channel
	assert.Equal(t, map[string]int64{ch: 1}, rdb.PubSubNumSub(ctx, ch).Val(), "one subscription for two watches")

	require.NoError(t, rdb.Publish(ctx, ch, "x").Err())
	nextKind(t, a, watch.Released)
	nextKind(t, b, watch.Released)

	a.Close()
	_ = mustWatch(t, w, "sync-1") // confirmed after anything sent before it on the same connection
	assert.Equal(t, map[string]int64{ch: 1}, rdb.PubSubNumSub(ctx, ch).Val(), "b still watches")

	b.Close()
	_ = mustWatch(t, w, "sync-2")
	assert.Equal(t, map[string]int64{ch: 0}, rdb.PubSubNumSub(ctx, ch).Val(), "unsubscribed after the last")

	c := mustWatch(t, w, "job") // subscribe again after an unsubscribe
	require.NoError(t, rdb.Publish(ctx, ch, "y").Err())
	nextKind(t, c, watch.Released)
}

func TestWatchWhileUnsubscribeInFlight(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	w := newWatcher(t, rdb)
	ch := keys.For("job").Channel
	for i := range 50 {
		a := mustWatch(t, w, "job")
		a.Close() // UNSUBSCRIBE sent
		b := mustWatch(t, w, "job")
		// b returned: it must really be subscribed, not fooled by the reply to an earlier SUBSCRIBE.
		require.NoError(t, rdb.Publish(context.Background(), ch, fmt.Sprint(i)).Err())
		assert.Equal(t, fmt.Sprint(i), nextKind(t, b, watch.Released).Payload)
		b.Close()
	}
}

func TestKeyspaceNotifications(t *testing.T) {
	rdb := redistest.Start(t, redistest.WithNotify("Kgx")).Client(t)
	ctx := context.Background()
	w := newWatcher(t, rdb)
	wt := mustWatch(t, w, "job")
	require.True(t, w.KeyEvents())

	require.NoError(t, rdb.Set(ctx, "job", "someone", 0).Err())
	require.NoError(t, rdb.Del(ctx, "job").Err()) // another tool deletes the key
	nextKind(t, wt, watch.Deleted)

	require.NoError(t, rdb.Set(ctx, "job", "someone", 20*time.Millisecond).Err())
	nextKind(t, wt, watch.Expired)
}

func TestNotificationsOffAndRefusedConfig(t *testing.T) {
	rdb := redistest.Start(t).Client(t) // notify-keyspace-events ""
	w := newWatcher(t, rdb)
	mustWatch(t, w, "job")
	assert.False(t, w.KeyEvents())

	_, mini := redistest.Miniredis(t) // no CONFIG command at all
	m := newWatcher(t, mini, watch.WithNotifications())
	wt := mustWatch(t, m, "job")
	assert.False(t, m.KeyEvents(), "a refused CONFIG counts as off")
	require.NoError(t, mini.Publish(context.Background(), keys.For("job").Channel, "").Err())
	nextKind(t, wt, watch.Released)
}

func TestWithNotificationsMergesFlags(t *testing.T) {
	rdb := redistest.Start(t, redistest.WithNotify("El")).Client(t)
	w := newWatcher(t, rdb, watch.WithNotifications())
	mustWatch(t, w, "job")
	assert.True(t, w.KeyEvents())
	flags := rdb.ConfigGet(context.Background(), "notify-keyspace-events").Val()["notify-keyspace-events"]
	for _, f := range "ElKgxe" {
		assert.Contains(t, flags, string(f), "flags %q keep the old ones and add the needed ones", flags)
	}
}

func TestPubSubConnectionKilled(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	w := newWatcher(t, rdb)
	wt := mustWatch(t, w, "job")

	require.NoError(t, rdb.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err())
	nextKind(t, wt, watch.Reconnected) // the drop: messages may have been lost
	nextKind(t, wt, watch.Reconnected) // subscribed again on the new connection: look again

	require.NoError(t, rdb.Publish(ctx, keys.For("job").Channel, "after").Err())
	assert.Equal(t, "after", nextKind(t, wt, watch.Released).Payload)
}

func TestPausedServerIsDetectedByTheHealthCheck(t *testing.T) {
	srv := redistest.Start(t)
	w := newWatcher(t, srv.Client(t), watch.WithHealthCheck(50*time.Millisecond))
	wt := mustWatch(t, w, "job")
	srv.Pause(t)
	nextKind(t, wt, watch.Reconnected)
	srv.Resume(t)
	nextKind(t, wt, watch.Reconnected)
	require.NoError(t, srv.Client(t).Publish(context.Background(), keys.For("job").Channel, "back").Err())
	assert.Equal(t, "back", nextKind(t, wt, watch.Released).Payload)
}

func TestCloseWakesEveryWatch(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	w := watch.New(rdb)
	a, err := w.Watch(context.Background(), "a")
	require.NoError(t, err)
	b, err := w.Watch(context.Background(), "b")
	require.NoError(t, err)
	require.NoError(t, w.Close())
	assert.Equal(t, watch.Closed, nextKind(t, a, watch.Closed).Kind)
	assert.Equal(t, watch.Closed, nextKind(t, b, watch.Closed).Kind)
	_, err = w.Watch(context.Background(), "c")
	assert.ErrorIs(t, err, keyward.ErrClosed)
	a.Close()
	b.Close()
}

func TestCancelledWatch(t *testing.T) {
	srv := redistest.Start(t)
	w := newWatcher(t, srv.Client(t))
	mustWatch(t, w, "warm") // connected
	srv.Pause(t)            // the SUBSCRIBE will not be confirmed
	ctx, cancel := context.WithCancel(context.Background())
	go cancel()
	_, err := w.Watch(ctx, "job")
	assert.ErrorIs(t, err, context.Canceled)
	srv.Resume(t)
}

func TestManyWaitersOneConnection(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	w := newWatcher(t, rdb)
	const waiters, keyCount = 10000, 1000
	watches := make([]*watch.Watch, waiters)
	var wg sync.WaitGroup
	for i := range waiters {
		wg.Go(func() {
			wt, err := w.Watch(ctx, fmt.Sprintf("key-%d", i%keyCount))
			if assert.NoError(t, err) {
				watches[i] = wt
			}
		})
	}
	wg.Wait()
	clients := rdb.ClientList(ctx).Val()
	assert.Equal(t, 1, strings.Count(clients, "flags=P"), "one pub/sub connection:\n%s", clients)
	assert.Len(t, rdb.PubSubChannels(ctx, "{key-*").Val(), keyCount) // and the probe channel

	require.NoError(t, rdb.Publish(ctx, keys.For("key-7").Channel, "go").Err())
	for i := 7; i < waiters; i += keyCount {
		nextKind(t, watches[i], watch.Released)
	}
	for _, wt := range watches {
		wt.Close()
	}
}
