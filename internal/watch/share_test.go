package watch_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/watch"
)

// next waits (at most 10 s) for an event of kind k, and returns the first rec heard.
func next(t *testing.T, rec *observe.Recorder, k keyward.EventKind) keyward.Event {
	t.Helper()
	e, err := rec.Wait(withTimeout(t, 10*time.Second), k)
	require.NoError(t, err)
	return e
}

func attach(t *testing.T, rdb redis.UniversalClient, o keyward.Observer, opts ...watch.Option) *watch.Handle {
	h := watch.Attach(rdb, o, opts...)
	t.Cleanup(func() { assert.NoError(t, h.Close()) })
	return h
}

func handleWatch(t *testing.T, h *watch.Handle, key string) *watch.Watch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wt, err := h.Watch(ctx, key)
	require.NoError(t, err)
	t.Cleanup(wt.Close)
	return wt
}

// pubsubConnections counts the server's pub/sub connections (CLIENT LIST TYPE pubsub).
func pubsubConnections(t *testing.T, admin *redis.Client) int {
	t.Helper()
	list, err := admin.Do(context.Background(), "CLIENT", "LIST", "TYPE", "pubsub").Text()
	require.NoError(t, err)
	return strings.Count(list, "id=")
}

// Every user of one client shares one Watcher, hence one pub/sub connection; users of another client, even to the
// same server, have their own.
func TestUsersOfOneClientShareOneConnection(t *testing.T) {
	srv := redistest.Start(t)
	admin, rdb, other := srv.Client(t), srv.Client(t), srv.Client(t)
	a, b := attach(t, rdb, nil), attach(t, rdb, nil)
	require.Same(t, a.Watcher(), b.Watcher())
	require.Same(t, a.Watcher(), watch.Shared(rdb))
	handleWatch(t, a, "job")
	handleWatch(t, b, "job")
	handleWatch(t, b, "other")
	assert.Equal(t, 1, pubsubConnections(t, admin))
	ctx := context.Background()
	ch := keys.For("job").Channel
	assert.Equal(t, map[string]int64{ch: 1}, admin.PubSubNumSub(ctx, ch).Val(), "one subscription for both users")

	c := attach(t, other, nil)
	assert.NotSame(t, a.Watcher(), c.Watcher())
	handleWatch(t, c, "job")
	assert.Equal(t, 2, pubsubConnections(t, admin))
}

// Closing one user ends its watches (they hear Closed, with an error matching keyward.ErrClosed) and only those:
// the other user's watch of the same key keeps its subscription and hears the next release.
func TestClosingOneUserLeavesTheOthers(t *testing.T) {
	srv := redistest.Start(t)
	admin, rdb := srv.Client(t), srv.Client(t)
	ctx := context.Background()
	a := watch.Attach(rdb, nil)
	b := attach(t, rdb, nil)
	wa := handleWatch(t, a, "job")
	wb := handleWatch(t, b, "job")

	require.NoError(t, a.Close())
	nextKind(t, wa, watch.Closed)
	assert.ErrorIs(t, wa.Err(), keyward.ErrClosed)
	assert.Contains(t, wa.Err().Error(), `"job"`, "the error names the key")
	_, err := a.Watch(ctx, "job")
	assert.ErrorIs(t, err, keyward.ErrClosed, "no watch after Close")
	require.NoError(t, a.Close(), "a second Close is a no-op")

	handleWatch(t, b, "sync") // confirmed after anything the Close sent on the connection
	ch := keys.For("job").Channel
	assert.Equal(t, map[string]int64{ch: 1}, admin.PubSubNumSub(ctx, ch).Val(), "b still watches")
	require.NoError(t, admin.Publish(ctx, ch, "x").Err())
	assert.Equal(t, "x", nextKind(t, wb, watch.Released).Payload)
	require.NoError(t, wb.Err())
}

// The last user's Close closes the Watcher (goleak checks that no goroutine survives); the next user gets a new
// one, which works.
func TestLastCloseClosesTheWatcher(t *testing.T) {
	srv := redistest.Start(t)
	admin, rdb := srv.Client(t), srv.Client(t)
	a, b := watch.Attach(rdb, nil), watch.Attach(rdb, nil)
	first := a.Watcher()
	handleWatch(t, a, "job")
	require.NoError(t, a.Close())
	assert.Same(t, first, watch.Shared(rdb), "b still uses it")
	require.NoError(t, b.Close())
	assert.Nil(t, watch.Shared(rdb))

	c := attach(t, rdb, nil)
	assert.NotSame(t, first, c.Watcher())
	wt := handleWatch(t, c, "job")
	require.NoError(t, admin.Publish(context.Background(), keys.For("job").Channel, "y").Err())
	nextKind(t, wt, watch.Released)
}

// A Close of a user while its Watch waits for the confirmation makes that Watch return an ErrClosed error.
func TestCloseDuringWatch(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	other := attach(t, rdb, nil)
	handleWatch(t, other, "warm") // connected
	h := watch.Attach(rdb, nil)
	srv.Pause(t) // the SUBSCRIBE will not be confirmed
	errc := make(chan error, 1)
	go func() {
		_, err := h.Watch(context.Background(), "job")
		errc <- err
	}()
	require.NoError(t, h.Close())
	select {
	case err := <-errc:
		assert.ErrorIs(t, err, keyward.ErrClosed)
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after Close")
	}
	srv.Resume(t)
}

// Each open user's observer hears the connection rebuilt, with Source "keyspace" and why; a closed user's hears
// nothing.
func TestObserversHearReconnected(t *testing.T) {
	srv := redistest.Start(t)
	admin, rdb := srv.Client(t), srv.Client(t)
	ra, rb, rc := &observe.Recorder{}, &observe.Recorder{}, &observe.Recorder{}
	a, b := attach(t, rdb, ra), attach(t, rdb, rb)
	attach(t, rdb, nil) // a user without an observer
	c := watch.Attach(rdb, rc)
	wt := handleWatch(t, a, "job")
	handleWatch(t, b, "other")
	require.NoError(t, c.Close())

	require.NoError(t, admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err())
	for _, r := range []*observe.Recorder{ra, rb} {
		e := next(t, r, keyward.Reconnected)
		assert.Equal(t, watch.Source, e.Source)
		assert.Empty(t, e.Key)
		assert.Error(t, e.Err, "why the connection was rebuilt")
		assert.Contains(t, e.Err.Error(), srv.Addr(), "names the server")
	}
	nextKind(t, wt, watch.Reconnected)
	nextKind(t, wt, watch.Reconnected) // subscribed again
	assert.Empty(t, rc.Of(keyward.Reconnected), "a closed user's observer hears nothing")
}

// The background problems a Watcher used to drop reach the observers as Error events: notifications asked for on
// a server that refuses CONFIG, and a probe refused for lack of permission.
func TestObserversHearBackgroundErrors(t *testing.T) {
	t.Run("notifications refused", func(t *testing.T) {
		_, mini := redistest.Miniredis(t) // no CONFIG command at all
		r := &observe.Recorder{}
		h := attach(t, mini, r, watch.WithNotifications())
		handleWatch(t, h, "job")
		e := next(t, r, keyward.Error)
		assert.Equal(t, watch.Source, e.Source)
		assert.ErrorContains(t, e.Err, "notify-keyspace-events")
	})
	t.Run("probe refused", func(t *testing.T) {
		srv := redistest.Start(t)
		rdb := srv.ChannelUser(t, "releases", "&*:released")
		r := &observe.Recorder{}
		h := attach(t, rdb, r)
		handleWatch(t, h, "job")
		e := next(t, r, keyward.Error)
		assert.ErrorIs(t, e.Err, keyward.ErrNoPermission)
		assert.ErrorContains(t, e.Err, "probe")
	})
}

// A user that asks for notifications while the connection is open turns them on for every user of the client;
// when it closes, its preference no longer counts (the server's setting stays: it is the server's).
func TestPreferencesOfALaterUser(t *testing.T) {
	srv := redistest.Start(t) // notify-keyspace-events ""
	admin, rdb := srv.Client(t), srv.Client(t)
	ctx := context.Background()
	a := attach(t, rdb, nil)
	handleWatch(t, a, "warm")
	assert.False(t, a.KeyEvents())

	b := watch.Attach(rdb, nil, watch.WithNotifications(), watch.WithHealthCheck(time.Second))
	on, hc, _ := a.Watcher().Settings()
	assert.True(t, on)
	assert.Equal(t, time.Second, hc)
	// The connection already open learns of the notifications it now has, before the next watch begins.
	wt := handleWatch(t, a, "job")
	assert.True(t, a.KeyEvents())
	require.NoError(t, admin.Set(ctx, "job", "x", 0).Err())
	require.NoError(t, admin.Del(ctx, "job").Err())
	nextKind(t, wt, watch.Deleted)

	require.NoError(t, b.Close())
	on, hc, _ = a.Watcher().Settings()
	assert.False(t, on)
	assert.Equal(t, watch.DefaultHealthCheck, hc)
}

// A client that cannot be a map key gets a Watcher of its own instead of a panic; a nil one, an ErrInvalid error.
func TestAttachUnsharableClients(t *testing.T) {
	_, mini := redistest.Miniredis(t)
	u := uncomparable{Client: mini}
	h := attach(t, u, nil)
	assert.Nil(t, watch.Shared(u.Client))
	wt := handleWatch(t, h, "job")
	require.NoError(t, mini.Publish(context.Background(), keys.For("job").Channel, "z").Err())
	nextKind(t, wt, watch.Released)

	// A comparable type that holds a slice in an interface field: hashing it would panic.
	v := holder{Client: mini, extra: []int{1}}
	hv := attach(t, v, nil)
	wv := handleWatch(t, hv, "job")
	require.NoError(t, mini.Publish(context.Background(), keys.For("job").Channel, "v").Err())
	nextKind(t, wv, watch.Released)

	for _, rdb := range []redis.UniversalClient{nil, (*redis.Client)(nil)} {
		h := watch.Attach(rdb, nil)
		_, err := h.Watch(context.Background(), "job")
		assert.ErrorIs(t, err, keyward.ErrInvalid)
		assert.NoError(t, h.Close())
	}
}

// holder is a user's own UniversalClient of a comparable type whose value may not be (extra holds a slice).
type holder struct {
	*redis.Client
	extra any
}

// uncomparable is a user's own UniversalClient that cannot be compared (it holds a slice).
type uncomparable struct {
	*redis.Client
	_ []int
}

// An observer that several users of the client gave hears each event once; observers that cannot be compared
// (funcs, or values that hold one) are called once per user, without a panic.
func TestAnObserverGivenTwiceHearsOnce(t *testing.T) {
	srv := redistest.Start(t)
	admin, rdb := srv.Client(t), srv.Client(t)
	r := &observe.Recorder{}
	a := attach(t, rdb, r)
	attach(t, rdb, r)
	calls := make(chan struct{}, 8)
	f := keyward.ObserverFunc(func(context.Context, keyward.Event) { calls <- struct{}{} })
	attach(t, rdb, f)
	attach(t, rdb, wrapped{f})
	handleWatch(t, a, "job")

	require.NoError(t, admin.Do(context.Background(), "CLIENT", "KILL", "TYPE", "pubsub").Err())
	next(t, r, keyward.Reconnected)
	for range 2 {
		select {
		case <-calls:
		case <-time.After(10 * time.Second):
			t.Fatal("an observer that cannot be compared was not called")
		}
	}
	handleWatch(t, a, "sync") // the reconnect is over: its events were sent before the new subscription
	assert.Len(t, r.Of(keyward.Reconnected), 1, "heard once")
}

// wrapped is a comparable type that holds a func: it cannot be a map key.
type wrapped struct{ keyward.Observer }
