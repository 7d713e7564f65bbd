package watch_test

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/watch"
)

// miniBubble starts n miniredis servers in the current synctest bubble, with a client for each; both are closed
// in t.Cleanup (after what the test registers later, such as its Watchers).
func miniBubble(t *testing.T, n int) ([]*miniredis.Miniredis, []*redis.Client) {
	var ms []*miniredis.Miniredis
	var cs []*redis.Client
	for range n {
		m := miniredis.NewMiniRedis()
		c := redistest.SynctestClient(m)
		t.Cleanup(func() {
			_ = c.Close()
			m.Close()
		})
		ms = append(ms, m)
		cs = append(cs, c)
	}
	return ms, cs
}

// quiet asserts that wt gets no event for d (on the bubble's clock).
func quiet(t *testing.T, wt *watch.Watch, d time.Duration) {
	t.Helper()
	select {
	case <-wt.Ready():
		t.Fatalf("unexpected events: %v", wt.Events())
	case <-time.After(d):
	}
}

// count returns how many events of kind k wt gets within d (on the bubble's clock).
func count(wt *watch.Watch, k watch.Kind, d time.Duration) int {
	n := 0
	if ev, ok := leftover.LoadAndDelete(wt); ok {
		for _, e := range ev.([]watch.Event) {
			if e.Kind == k {
				n++
			}
		}
	}
	deadline := time.After(d)
	for {
		select {
		case <-wt.Ready():
			for _, e := range wt.Events() {
				if e.Kind == k {
					n++
				}
			}
		case <-deadline:
			return n
		}
	}
}

func isProbe(cmd redis.Cmder) bool {
	args := cmd.Args()
	return cmd.Name() == "publish" && len(args) > 1 && strings.HasPrefix(args[1].(string), "keyward:probe:")
}

// failover is a go-redis hook that models the client's side of a Sentinel failover, or of a DNS or proxy switch
// to a new primary: once switched, commands go to the new server and new connections are dialled to it, while
// a pub/sub connection made before stays on the old one (which keeps answering PINGs).
type failover struct {
	to       *miniredis.Miniredis
	via      *redis.Client // a client of to
	switched atomic.Bool
}

func (f *failover) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if f.switched.Load() {
			return redistest.Dial(f.to)
		}
		return next(ctx, network, addr)
	}
}

func (f *failover) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.switched.Load() {
			return f.via.Process(ctx, cmd)
		}
		return next(ctx, cmd)
	}
}

func (f *failover) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// A subscription left on the old primary hears nothing that is published on the new one, while the old server
// answers every health check. The probe finds it within a probe interval of the switch, and the rebuilt
// connection hears releases on the new primary. Without the probe, the waiter would hear nothing at all.
func TestProbeFindsASubscriptionLeftOnTheOldPrimary(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms, cs := miniBubble(t, 2)
		rdb, newPrimary := cs[0], cs[1]
		f := &failover{to: ms[1], via: newPrimary}
		rdb.AddHook(f)
		w := newWatcher(t, rdb)
		wt := mustWatch(t, w, "job")
		quiet(t, wt, time.Minute+time.Millisecond) // the probe finds nothing wrong while nothing is; then it just ran

		f.switched.Store(true)
		start := time.Now()
		nextKind(t, wt, watch.Reconnected)
		found := time.Since(start)
		assert.LessOrEqual(t, found, watch.DefaultProbe, "found at the first probe after the switch")
		nextKind(t, wt, watch.Reconnected) // subscribed on the new primary
		t.Logf("deaf connection found %v after the switch", found)

		require.NoError(t, newPrimary.Publish(context.Background(), keys.For("job").Channel, "after").Err())
		assert.Equal(t, "after", nextKind(t, wt, watch.Released).Payload)
		assert.Zero(t, count(wt, watch.Reconnected, time.Minute), "and it stays there")
	})
}

func TestWithoutProbeTheOldPrimaryKeepsTheWaiterDeaf(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms, cs := miniBubble(t, 2)
		rdb, newPrimary := cs[0], cs[1]
		f := &failover{to: ms[1], via: newPrimary}
		rdb.AddHook(f)
		w := newWatcher(t, rdb, watch.WithProbe(-1))
		wt := mustWatch(t, w, "job")
		f.switched.Store(true)
		require.NoError(t, newPrimary.Publish(context.Background(), keys.For("job").Channel, "after").Err())
		quiet(t, wt, time.Minute) // what the probe is for
	})
}

// probeHook rewrites the answers to the Watcher's probes.
type probeHook struct {
	answer func(next redis.ProcessHook, ctx context.Context, cmd redis.Cmder) error
	sent   atomic.Int64
}

func (h *probeHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *probeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *probeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !isProbe(cmd) {
			return next(ctx, cmd)
		}
		h.sent.Add(1)
		return h.answer(next, ctx, cmd)
	}
}

// The probe publishes only while the connection has subscriptions, and its channel exists only then.
func TestProbeOnlyWhileSubscribed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ms, cs := miniBubble(t, 1)
		rdb := cs[0]
		h := &probeHook{answer: func(next redis.ProcessHook, ctx context.Context, cmd redis.Cmder) error {
			return next(ctx, cmd)
		}}
		rdb.AddHook(h)
		w := newWatcher(t, rdb)
		wt := mustWatch(t, w, "job")
		time.Sleep(time.Minute)
		sent := h.sent.Load()
		assert.InDelta(t, int64(time.Minute/watch.DefaultProbe), sent, 2, "a probe every interval")
		assert.Len(t, ms[0].PubSubChannels(""), 2, "the key's channel and the probe's")

		wt.Close()
		synctest.Wait() // the UNSUBSCRIBEs are answered
		sent = h.sent.Load()
		time.Sleep(time.Minute)
		assert.Equal(t, sent, h.sent.Load(), "no probe without subscriptions")
		assert.Empty(t, ms[0].PubSubChannels(""), "nor a probe channel")
	})
}

// A probe the server says it delivered, but that never comes, shows a connection that loses messages: it is
// rebuilt. A connection on which no probe is ever heard, three times in a row, shows that the probe cannot
// tell anything here: it is turned off rather than rebuilding connections in a loop.
func TestProbeNeverHeard(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, cs := miniBubble(t, 1)
		rdb := cs[0]
		rdb.AddHook(&probeHook{answer: func(_ redis.ProcessHook, _ context.Context, cmd redis.Cmder) error {
			cmd.(*redis.IntCmd).SetVal(1) // "delivered", and not published
			return nil
		}})
		w := newWatcher(t, rdb)
		wt := mustWatch(t, w, "job")
		start := time.Now()
		nextKind(t, wt, watch.Reconnected)
		assert.LessOrEqual(t, time.Since(start), 2*time.Second+2*watch.DefaultProbe, "within the probe deadline")
		assert.Equal(t, 5, count(wt, watch.Reconnected, 10*time.Minute), "three rebuilds, two events each")
		require.NoError(t, rdb.Publish(context.Background(), keys.For("job").Channel, "still").Err())
		assert.Equal(t, "still", nextKind(t, wt, watch.Released).Payload)
	})
}

// A server (or a proxy) whose PUBLISH count says 0 while the probe is heard all the same costs one rebuild: the
// second connection in a row that gets the same answer at its first probe stops the Watcher trusting counts.
func TestProbeCountThatLies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, cs := miniBubble(t, 1)
		rdb := cs[0]
		rdb.AddHook(&probeHook{answer: func(next redis.ProcessHook, ctx context.Context, cmd redis.Cmder) error {
			err := next(ctx, cmd)
			cmd.(*redis.IntCmd).SetVal(0)
			return err
		}})
		w := newWatcher(t, rdb)
		wt := mustWatch(t, w, "job")
		assert.Equal(t, 2, count(wt, watch.Reconnected, 10*time.Minute), "one rebuild")
		require.NoError(t, rdb.Publish(context.Background(), keys.For("job").Channel, "still").Err())
		assert.Equal(t, "still", nextKind(t, wt, watch.Released).Payload)
	})
}

// noPerm is an error reply like the one Redis gives an ACL user without permission for a channel.
type noPerm struct{}

func (noPerm) Error() string {
	return "NOPERM this user has no permissions to access one of the channels"
}
func (noPerm) RedisError() {}

// A probe the server refuses turns the probe off; watching goes on, and nobody is woken for it.
func TestProbeRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, cs := miniBubble(t, 1)
		rdb := cs[0]
		h := &probeHook{answer: func(_ redis.ProcessHook, _ context.Context, cmd redis.Cmder) error {
			cmd.SetErr(noPerm{})
			return noPerm{}
		}}
		rdb.AddHook(h)
		w := newWatcher(t, rdb)
		wt := mustWatch(t, w, "job")
		quiet(t, wt, time.Minute)
		assert.Equal(t, int64(1), h.sent.Load(), "one probe, refused")
		require.NoError(t, rdb.Publish(context.Background(), keys.For("job").Channel, "still").Err())
		assert.Equal(t, "still", nextKind(t, wt, watch.Released).Payload)
	})
}
