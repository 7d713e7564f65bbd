package watch_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/watch"
)

// pubsubClients returns how many pub/sub connections srv has.
func pubsubClients(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	list, err := srv.Client(t).ClientList(context.Background()).Result()
	require.NoError(t, err)
	return strings.Count(list, "flags=P")
}

// numSub returns how many subscribers channel has on srv.
func numSub(t *testing.T, srv *redistest.Server, channel string) int64 {
	t.Helper()
	n, err := srv.Client(t).PubSubNumSub(context.Background(), channel).Result()
	require.NoError(t, err)
	return n[channel]
}

// After a Sentinel failover the waiter's subscription must not stay on the demoted master: the probe finds it
// there (go-redis has moved its commands to the new master, where the probe's PUBLISH reaches nobody), the
// waiter is told to look again, and it is subscribed on the new master, where a release wakes it by its message.
// The client is the user's: go-redis's defaults. WithNotifications turned keyspace notifications on at the old
// master; the new one gets them when the watcher connects to it (CONFIG SET is not replicated).
func TestSentinelFailover(t *testing.T) {
	g := redistest.StartSentinel(t)
	rdb := g.Client(t)
	ctx := context.Background()
	w := newWatcher(t, rdb, watch.WithNotifications())
	wt := mustWatch(t, w, "job")
	old := g.Master()
	require.Equal(t, int64(1), numSub(t, old, keys.For("job").Channel))

	// When the new master takes writes: a sentinel announces +promoted-slave once the replica it promoted
	// reports itself a master.
	sentinel := redis.NewClient(&redis.Options{Addr: g.SentinelAddrs()[0]})
	t.Cleanup(func() { _ = sentinel.Close() })
	announced := sentinel.Subscribe(ctx, "+promoted-slave")
	t.Cleanup(func() { _ = announced.Close() })
	_, err := announced.Receive(ctx) // the subscription is confirmed
	require.NoError(t, err)
	promotedAt := make(chan time.Time, 1)
	go func() {
		if _, err := announced.ReceiveMessage(ctx); err == nil {
			promotedAt <- time.Now()
		}
	}()
	wokenAt := make(chan time.Time, 2) // the two Reconnected events, or zero times when they do not come
	go func() {
		for range 2 {
			wokenAt <- reconnectedAt(wt, time.Minute)
		}
	}()

	start := time.Now()
	promoted := g.Failover(t)
	returned := time.Now()
	woken, resubscribed := <-wokenAt, <-wokenAt
	require.False(t, woken.IsZero() || resubscribed.IsZero(), "the waiter was told to look again, twice")
	promotion := <-promotedAt
	t.Logf("failover took %v (SENTINEL FAILOVER to the rig's settling); the new master took writes %v after it began; "+
		"the waiter was woken %v after that (Reconnected), and subscribed again %v later",
		returned.Sub(start), promotion.Sub(start), woken.Sub(promotion), resubscribed.Sub(woken))
	// A reconnect made before go-redis's failover client heard +switch-master lands on the old master again;
	// the next probe finds that connection deaf too, and the one after it is on the new master.
	for i := 0; numSub(t, promoted, keys.For("job").Channel) == 0; i++ {
		require.Less(t, i, 10, "subscribed on the new master")
		require.False(t, reconnectedAt(wt, 10*time.Second).IsZero(), "subscribed on the new master")
	}
	assert.Zero(t, numSub(t, old, keys.For("job").Channel), "and no longer on the old one")

	publisher := promoted.Client(t)
	require.NoError(t, publisher.Ping(ctx).Err())
	sent := time.Now()
	require.NoError(t, publisher.Publish(ctx, keys.For("job").Channel, "after").Err())
	e := nextKind(t, wt, watch.Released)
	t.Logf("a release on the new master heard %v after it was published", time.Since(sent))
	assert.Equal(t, "after", e.Payload)

	require.NoError(t, rdb.Set(ctx, "job", "someone", 0).Err())
	require.NoError(t, rdb.Del(ctx, "job").Err()) // another tool deletes the key, on the new master
	nextKind(t, wt, watch.Deleted)
}

// reconnectedAt waits (at most d) for wt's next Reconnected event and returns when it came, or the zero time.
// Unlike nextKind it may run on another goroutine than the test's. Like it, it keeps the events after the one it
// returns: the drop and the resubscription may come in one batch.
func reconnectedAt(wt *watch.Watch, d time.Duration) time.Time {
	if _, ok := awaitKind(wt, watch.Reconnected, time.After(d)); !ok {
		return time.Time{}
	}
	return time.Now()
}

// On a cluster, every master sends its own keyspace notifications: waiters on keys of each master hear a plain
// DEL by another tool, through one pub/sub connection per master. After a failover of one key's master, its
// waiter follows the key to the new master and hears a DEL there. The notifications are on at every node from
// the start, or turned on by WithNotifications: at every master first, and at the promoted replica when the
// watcher connects to it.
func TestClusterNotificationsFromEveryMaster(t *testing.T) {
	for _, tt := range []struct {
		name   string
		server []redistest.Option
		opts   []watch.Option
	}{
		{"notifications on at every node", []redistest.Option{redistest.WithNotify("Kgxe")}, nil},
		{"WithNotifications", nil, []watch.Option{watch.WithNotifications()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := redistest.StartCluster(t, tt.server...)
			cc := c.Client(t)
			ctx := context.Background()
			w := newWatcher(t, cc, tt.opts...)

			masters := c.Masters()
			require.Len(t, masters, 3)
			byMaster := map[string]string{} // a key per master address
			for i := 0; len(byMaster) < len(masters); i++ {
				key := fmt.Sprintf("job-%d", i)
				if m := c.MasterOf(key).Addr(); byMaster[m] == "" {
					byMaster[m] = key
				}
			}
			watches := map[string]*watch.Watch{}
			for _, key := range byMaster {
				watches[key] = mustWatch(t, w, key)
			}
			assert.True(t, w.KeyEvents())
			for _, m := range masters {
				assert.Equal(t, 1, pubsubClients(t, m), "one pub/sub connection to master %s", m)
			}
			for key, wt := range watches {
				require.NoError(t, cc.Set(ctx, key, "someone", 0).Err())
				require.NoError(t, cc.Del(ctx, key).Err()) // another tool deletes the key
				nextKind(t, wt, watch.Deleted)
			}

			key := byMaster[masters[0].Addr()]
			wt := watches[key]
			old := c.MasterOf(key)
			movedAt := make(chan time.Time, 2) // the two Reconnected events, or zero times when they do not come
			go func() {
				for range 2 {
					movedAt <- reconnectedAt(wt, time.Minute)
				}
			}()
			start := time.Now()
			promoted := c.Failover(t, key)
			returned := time.Now()
			moved, resubscribed := <-movedAt, <-movedAt
			require.False(t, moved.IsZero() || resubscribed.IsZero(), "the waiter was told to look again, twice")
			t.Logf("failover took %v (CLUSTER FAILOVER to the rig's settling); the key's channels moved %v after it "+
				"began, subscribed on the new master %v later", returned.Sub(start), moved.Sub(start), resubscribed.Sub(moved))
			require.NoError(t, cc.Set(ctx, key, "someone", 0).Err())
			require.NoError(t, cc.Del(ctx, key).Err())
			nextKind(t, wt, watch.Deleted)
			assert.Equal(t, 1, pubsubClients(t, promoted), "one pub/sub connection to the new master")
			assert.Zero(t, pubsubClients(t, old), "none to the old one, a replica now")
		})
	}
}
