package watch_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/watch"
)

func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// A user without permission for the release channel (Redis 7 gives new users no channel at all) gets an error
// from Watch at once, instead of a watcher that reconnects and subscribes again in a loop while Watch waits for
// a confirmation that never comes.
func TestWatchRefused(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.ChannelUser(t, "nochannels")
	w := newWatcher(t, rdb)
	_, err := w.Watch(withTimeout(t, 10*time.Second), "job")
	require.ErrorIs(t, err, keyward.ErrNoPermission)
	assert.Contains(t, err.Error(), keys.For("job").Channel, "the error names the channel")
	var reply redis.Error
	assert.True(t, errors.As(err, &reply), "and wraps the server's error: %v", err)

	_, err = w.Watch(withTimeout(t, 10*time.Second), "job")
	assert.ErrorIs(t, err, keyward.ErrNoPermission, "every time")
}

// A user allowed the release channels but not the keyspace channels watches without keyspace notifications.
func TestKeyspaceChannelRefused(t *testing.T) {
	srv := redistest.Start(t, redistest.WithNotify("Kgx"))
	rdb := srv.ChannelUser(t, "releases", "&*:released", "&keyward:probe:*")
	w := newWatcher(t, rdb)
	wt := mustWatch(t, w, "job")
	assert.False(t, w.KeyEvents(), "refused: as if the server had them off")
	require.NoError(t, wt.Err())

	ctx := context.Background()
	require.NoError(t, srv.Client(t).Publish(ctx, keys.For("job").Channel, "x").Err())
	nextKind(t, wt, watch.Released)
	other := mustWatch(t, w, "other") // no keyspace channel asked for any more
	require.NoError(t, srv.Client(t).Publish(ctx, keys.For("other").Channel, "y").Err())
	nextKind(t, other, watch.Released)
}

// A user allowed the release channels only: the probe's channel is refused with the first subscription (which
// is sent again one channel at a time), the probe is off, and watching works.
func TestProbeChannelRefused(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.ChannelUser(t, "releases", "&*:released")
	w := newWatcher(t, rdb)
	wt := mustWatch(t, w, "job")
	ctx := context.Background()
	assert.Equal(t, []string{keys.For("job").Channel}, srv.Client(t).PubSubChannels(ctx, "*").Val())
	require.NoError(t, srv.Client(t).Publish(ctx, keys.For("job").Channel, "x").Err())
	assert.Equal(t, "x", nextKind(t, wt, watch.Released).Payload)
}

// Permission taken away while watches wait: Redis disconnects the user's subscribed connection, the watcher
// subscribes again, and the channels now refused end their watches with a Failed event (a watch whose channel is
// still allowed is subscribed again as usual). No reconnect loop follows.
func TestPermissionRevokedWhileWatching(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := context.Background()
	rdb := srv.ChannelUser(t, "u", "&*")
	w := newWatcher(t, rdb)
	a := mustWatch(t, w, "a")
	b := mustWatch(t, w, "b")

	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", "u", "resetchannels", "&{a}:released", "&keyward:probe:*").Err())
	nextKind(t, b, watch.Reconnected)
	e := nextKind(t, b, watch.Failed)
	assert.ErrorIs(t, e.Err, keyward.ErrNoPermission)
	assert.Contains(t, e.Err.Error(), keys.For("b").Channel)
	assert.ErrorIs(t, b.Err(), keyward.ErrNoPermission)

	nextKind(t, a, watch.Reconnected)
	nextKind(t, a, watch.Reconnected) // subscribed again
	require.NoError(t, a.Err())
	require.NoError(t, admin.Publish(ctx, keys.For("a").Channel, "x").Err())
	nextKind(t, a, watch.Released)

	connections := func() string {
		return admin.Info(ctx, "stats").Val()
	}
	before := statValue(connections(), "total_connections_received")
	_, err := w.Watch(withTimeout(t, 10*time.Second), "b")
	require.ErrorIs(t, err, keyward.ErrNoPermission, "refused again, on the same connection")
	require.NoError(t, admin.Publish(ctx, keys.For("a").Channel, "y").Err())
	nextKind(t, a, watch.Released)
	assert.Equal(t, before, statValue(connections(), "total_connections_received"), "no reconnect")
}

// statValue returns the value of name in the text of INFO.
func statValue(info, name string) string {
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return v
		}
	}
	return ""
}
