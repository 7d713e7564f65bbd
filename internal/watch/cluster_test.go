package watch_test

import (
	"context"
	"net"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/assert"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/watch"
)

// fakeCluster is a cluster client over miniredis servers in a synctest bubble, with a slot map the test sets.
// miniredis does not broadcast PUBLISH between servers, so a message published on one is heard only by
// subscribers of that one: like a keyspace notification, which is local to the node that holds the key.
type fakeCluster struct {
	addrs []string
	ms    map[string]*miniredis.Miniredis
	cc    *redis.ClusterClient

	mu    sync.Mutex
	owner [16384]int // by slot, the index of its master in addrs; the last master serves what is not given
}

func newFakeCluster(t *testing.T, n int) *fakeCluster {
	f := &fakeCluster{ms: map[string]*miniredis.Miniredis{}}
	for s := range f.owner {
		f.owner[s] = n - 1
	}
	for i := range n {
		// Not a loopback address: go-redis replaces the host of those by the host it asked (none here).
		addr := net.JoinHostPort("10.0.0."+strconv.Itoa(i+1), "7000")
		m := miniredis.NewMiniRedis()
		m.ClockTTL(true)
		f.addrs = append(f.addrs, addr)
		f.ms[addr] = m
	}
	f.cc = redis.NewClusterClient(&redis.ClusterOptions{
		ClusterSlots: f.slots,
		Dialer: func(_ context.Context, _, addr string) (net.Conn, error) {
			return redistest.Dial(f.ms[addr]) // a bare pipe can deadlock a pub/sub connection
		},
		ConnMaxIdleTime: -1,
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled, EndpointType: maintnotifications.EndpointTypeNone,
		},
	})
	t.Cleanup(func() {
		_ = f.cc.Close()
		for _, m := range f.ms {
			m.Close()
		}
	})
	return f
}

func (f *fakeCluster) slots(context.Context) ([]redis.ClusterSlot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []redis.ClusterSlot
	for s := 0; s < len(f.owner); {
		e := s
		for e+1 < len(f.owner) && f.owner[e+1] == f.owner[s] {
			e++
		}
		out = append(out, redis.ClusterSlot{Start: s, End: e, Nodes: []redis.ClusterNode{{Addr: f.addrs[f.owner[s]]}}})
		s = e + 1
	}
	return out, nil
}

// give makes master i serve key's slot.
func (f *fakeCluster) give(key string, i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.owner[keys.Slot(key)] = i
}

// node returns master i.
func (f *fakeCluster) node(i int) *miniredis.Miniredis { return f.ms[f.addrs[i]] }

// publish publishes a release message for key on master i, where only subscribers of i hear it.
func (f *fakeCluster) publish(t *testing.T, i int, key, payload string) {
	t.Helper()
	f.node(i).Publish(keys.For(key).Channel, payload)
}

// Each key's channels are subscribed on the connection to the master of its slot: one connection per master.
// When a key's slot moves to another master (a failover, a migration), its channels follow within a probe
// interval, and its watches are told to look again; a connection left on a node that is no longer a master is
// closed.
func TestClusterChannelsFollowTheirSlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeCluster(t, 4)
		f.give("a", 0)
		f.give("b", 1)
		w := newWatcher(t, f.cc)
		a := mustWatch(t, w, "a")
		b := mustWatch(t, w, "b")
		a2 := mustWatch(t, w, "{a}:2") // same slot, same connection
		synctest.Wait()
		assert.Len(t, f.node(0).PubSubChannels("{a}*"), 2, "a's channels on master 0")
		assert.Len(t, f.node(1).PubSubChannels("{b}*"), 1, "b's on master 1")
		assert.Empty(t, f.node(2).PubSubChannels(""), "nothing on master 2")

		f.publish(t, 0, "a", "on 0")
		assert.Equal(t, "on 0", nextKind(t, a, watch.Released).Payload)
		f.publish(t, 1, "b", "on 1")
		assert.Equal(t, "on 1", nextKind(t, b, watch.Released).Payload)

		conns := f.node(0).CurrentConnectionCount()
		f.give("a", 2) // a's slot fails over to master 2, and master 0 serves no slot any more
		start := time.Now()
		nextKind(t, a, watch.Reconnected)
		t.Logf("moved %v after the slot map changed", time.Since(start))
		assert.LessOrEqual(t, time.Since(start), watch.DefaultProbe, "within a probe interval")
		nextKind(t, a, watch.Reconnected) // subscribed on master 2
		nextKind(t, a2, watch.Reconnected)
		nextKind(t, a2, watch.Reconnected)
		f.publish(t, 2, "a", "on 2")
		assert.Equal(t, "on 2", nextKind(t, a, watch.Released).Payload)
		synctest.Wait()
		assert.Empty(t, f.node(0).PubSubChannels(""))
		assert.Equal(t, conns-1, f.node(0).CurrentConnectionCount(), "the pub/sub connection to master 0 closed")
		assert.Zero(t, count(b, watch.Reconnected, time.Minute), "b did not move")
	})
}
