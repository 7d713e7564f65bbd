package redlock_test

import (
	"context"
	"math"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/redlock"
)

func TestObtainAndRelease(t *testing.T) {
	ms, clients := miniNodes(t, 3)
	ctx := context.Background()
	locks := newClient(t, universal(clients), redlock.WithPrefix("locks:"))
	assert.Equal(t, 3, locks.Nodes())
	assert.Equal(t, 2, locks.Quorum())

	start := time.Now()
	l, err := locks.TryObtain(ctx, "report", 10*time.Second)
	require.NoError(t, err)
	assert.Equal(t, "report", l.Key())
	assert.Contains(t, l.Value(), "pid="+strconv.Itoa(os.Getpid()), "the token carries the holder's pid")
	assert.GreaterOrEqual(t, holders(ms, "locks:report", l.Value()), 2, "a majority holds the token")
	assert.Positive(t, l.Fence())
	assert.False(t, l.Until().Before(start.Add(10*time.Second-102*time.Millisecond)), "ttl − drift, from before the acquire")
	assert.True(t, l.Until().Before(time.Now().Add(10*time.Second)))

	_, err = locks.TryObtain(ctx, "report", 10*time.Second)
	require.ErrorIs(t, err, redlock.ErrNotObtained)
	assert.NotErrorIs(t, err, redlock.ErrQuorum)
	assert.Contains(t, err.Error(), `"report"`)

	ttl, err := l.TTL(ctx)
	require.NoError(t, err)
	assert.InDelta(t, 10*time.Second, ttl, float64(time.Second))

	require.NoError(t, l.Refresh(ctx, time.Minute))
	ttl, err = l.TTL(ctx)
	require.NoError(t, err)
	assert.InDelta(t, time.Minute, ttl, float64(time.Second))

	require.NoError(t, l.Release(ctx))
	assert.NoError(t, l.Err(), "a clean release is not a loss")
	assert.False(t, isClosed(l.Lost()), "Release does not close Lost")
	assert.NoError(t, l.Release(ctx), "a second release is a no-op")

	next, err := locks.TryObtain(ctx, "report", time.Second)
	require.NoError(t, err)
	assert.Greater(t, next.Fence(), l.Fence(), "the next holder's fence is larger")
	require.NoError(t, next.Release(ctx))

	require.NoError(t, locks.Close()) // waits for the releases of the nodes that answered after a majority
	for i, m := range ms {
		assert.False(t, m.Exists("locks:report"), "node %d", i)
	}
}

func TestBadInput(t *testing.T) {
	ms, clients := miniNodes(t, 3)
	nodes := universal(clients)
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()

	for _, tt := range []struct {
		name  string
		nodes []redis.UniversalClient
		opts  []redlock.Option
	}{
		{"no nodes", nil, nil},
		{"a nil node", []redis.UniversalClient{clients[0], nil, clients[2]}, nil},
		{"a nil *redis.Client", []redis.UniversalClient{clients[0], (*redis.Client)(nil), clients[2]}, nil},
		{"a nil *redis.ClusterClient", []redis.UniversalClient{clients[0], clients[1], (*redis.ClusterClient)(nil)}, nil},
		{"a nil *redis.Ring", []redis.UniversalClient{(*redis.Ring)(nil), clients[1], clients[2]}, nil},
		{"the same node twice", []redis.UniversalClient{clients[0], clients[1], clients[0]}, nil},
		{"zero node timeout", nodes, []redlock.Option{redlock.WithNodeTimeout(0)}},
		{"negative drift", nodes, []redlock.Option{redlock.WithDrift(-1, 0)}},
		{"claim window above MaxTTL", nodes, []redlock.Option{redlock.WithClaimWindow(redlock.MaxTTL + 1)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := redlock.New(tt.nodes, tt.opts...)
			assert.ErrorIs(t, err, redlock.ErrInvalid)
			assert.Nil(t, c)
		})
	}

	locks := newClient(t, nodes)
	for _, tt := range []struct {
		name string
		ctx  context.Context
		key  string
		ttl  time.Duration
		want error
	}{
		{"empty key", ctx, "", time.Second, redlock.ErrInvalid},
		{"zero ttl", ctx, "k", 0, redlock.ErrInvalid},
		{"ttl within the drift margin", ctx, "k", 2 * time.Millisecond, redlock.ErrInvalid},
		{"ttl above MaxTTL", ctx, "k", redlock.MaxTTL + time.Millisecond, redlock.ErrInvalid},
		{"ttl whose doubling overflows", ctx, "k", math.MaxInt64, redlock.ErrInvalid},
		{"cancelled context", cancelled, "k", time.Second, context.Canceled},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l, err := locks.TryObtain(tt.ctx, tt.key, tt.ttl)
			assert.ErrorIs(t, err, tt.want)
			assert.Nil(t, l)
			l, err = locks.Obtain(tt.ctx, tt.key, tt.ttl)
			assert.ErrorIs(t, err, tt.want)
			assert.Nil(t, l)
		})
	}
	for _, m := range ms {
		assert.Empty(t, m.Keys(), "no bad input reached a node")
	}

	l, err := locks.TryObtain(ctx, "k", time.Second)
	require.NoError(t, err)
	assert.ErrorIs(t, l.Refresh(ctx, 0), redlock.ErrInvalid, "PEXPIRE 0 would delete the key")
	assert.ErrorIs(t, l.Refresh(ctx, redlock.MaxTTL+time.Millisecond), redlock.ErrInvalid)

	require.NoError(t, locks.Close())
	_, err = locks.TryObtain(ctx, "other", time.Second)
	assert.ErrorIs(t, err, redlock.ErrClosed)
	assert.NotErrorIs(t, err, redlock.ErrInvalid)
	assert.NoError(t, l.Release(ctx), "a lock held at Close stays usable until released")
	// Release returns once a majority gave the lock back; after Close, the release of the last node runs on and
	// nothing waits for it.
	freed := 0
	for _, m := range ms {
		if !m.Exists("k") {
			freed++
		}
	}
	assert.GreaterOrEqual(t, freed, locks.Quorum(), "released on a majority")
}

func TestWrongTypeOnSomeNodes(t *testing.T) {
	ms, clients := miniNodes(t, 3)
	ctx := context.Background()
	locks := newClient(t, universal(clients))

	// One node of three refuses: the majority still grants the lock.
	_, err := ms[0].Lpush("listy", "x")
	require.NoError(t, err)
	l, err := locks.TryObtain(ctx, "listy", time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))

	// Two refuse: no majority, and the Redis error is in the causes.
	_, err = ms[1].Lpush("listy", "x")
	require.NoError(t, err)
	_, err = locks.TryObtain(ctx, "listy", time.Second)
	require.ErrorIs(t, err, redlock.ErrQuorum)
	assert.ErrorIs(t, err, redlock.ErrWrongType)
	assert.NotErrorIs(t, err, redlock.ErrNotObtained)
	assert.Contains(t, err.Error(), "WRONGTYPE")
	assert.Contains(t, err.Error(), "node 0 (")
	assert.Contains(t, err.Error(), "node 1 (")

	_, err = locks.Obtain(ctx, "listy", time.Second)
	require.ErrorIs(t, err, redlock.ErrWrongType, "Obtain does not wait for a refusal to go away")

	require.NoError(t, locks.Close()) // waits for the releases of late answers
	assert.False(t, ms[2].Exists("listy"), "the node that granted it was released")
}

// commands counts the commands and pipelines a client sends.
type commands struct {
	single, pipelines atomic.Int64
}

func (c *commands) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *commands) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.single.Add(1)
		return next(ctx, cmd)
	}
}
func (c *commands) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.pipelines.Add(1)
		return next(ctx, cmds)
	}
}

func TestFenceIsAgreedInTheAcquireRoundTrip(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		locks := b.client(t)
		defer locks.Close()
		warm, err := locks.TryObtain(ctx, "warm", time.Second) // loads the scripts
		require.NoError(t, err)
		require.NoError(t, warm.Release(ctx))
		synctest.Wait()

		counts := make([]*commands, len(b.clients))
		for i, c := range b.clients {
			counts[i] = &commands{}
			c.AddHook(counts[i])
		}
		before := time.Now().UnixMicro()
		l, err := locks.TryObtain(ctx, "job", time.Second)
		require.NoError(t, err)
		synctest.Wait()
		for i, m := range b.ms {
			assert.Equal(t, strconv.FormatInt(l.Fence(), 10), value(m, keys.For("job").Fence), "node %d remembers the fence", i)
			assert.Equal(t, int64(1), counts[i].single.Load(), "node %d: one round trip", i)
			assert.Zero(t, counts[i].pipelines.Load(), "node %d: no pipeline", i)
		}
		assert.Greater(t, l.Fence(), before, "fences are microsecond timestamps, a little ahead of the clock")
		require.NoError(t, l.Release(ctx))
	})
}

// A node whose counter is far ahead (its clock ran ahead when the counter was seeded, or it served many holders
// while the others were away) makes the nodes disagree: the fence is the largest, and the holders that are behind
// are raised to it before it is handed out. A later majority without that node still hands out a larger fence.
// Without the raise, it would not: the A=1, B=100 case.
func TestFenceRaisedOnTheMajorityThatHoldsTheLock(t *testing.T) {
	ms, clients := miniNodes(t, 3)
	ctx := context.Background()
	locks := newClient(t, universal(clients))
	fence := keys.For("job").Fence
	ahead := time.Now().Add(24 * time.Hour).UnixMicro()
	ms[0].Set(fence, strconv.FormatInt(ahead, 10))
	ms[2].Set("job", "another holder") // the majority is nodes 0 and 1

	first, err := locks.TryObtain(ctx, "job", time.Second)
	require.NoError(t, err)
	assert.Equal(t, ahead+1, first.Fence())
	assert.Equal(t, strconv.FormatInt(ahead+1, 10), value(ms[1], fence), "node 1 was raised to the fence")
	require.NoError(t, first.Release(ctx))
	require.NoError(t, locks.Close()) // every release is done

	ms[2].Del("job")
	ms[0].Set("job", "another holder") // the next majority is nodes 1 and 2
	second, err := newClient(t, universal(clients)).TryObtain(ctx, "job", time.Second)
	require.NoError(t, err)
	assert.Greater(t, second.Fence(), first.Fence())
	require.NoError(t, second.Release(ctx))
}

func TestReleaseAfterTheLockWasTaken(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		locks := b.client(t)
		defer locks.Close()
		l, err := locks.TryObtain(ctx, "job", 10*time.Second)
		require.NoError(t, err)
		synctest.Wait() // the node that answered after the majority has its key too
		require.Equal(t, 3, holders(b.ms, "job", l.Value()), "the late node keeps the lock")

		// The lock expired on two nodes and another holder took them.
		b.ms[0].Set("job", "next holder")
		b.ms[1].Set("job", "next holder")
		_, err = l.TTL(ctx)
		require.ErrorIs(t, err, redlock.ErrLost)
		require.True(t, isClosed(l.Lost()))

		err = l.Release(ctx)
		require.ErrorIs(t, err, redlock.ErrNotHeld)
		require.ErrorIs(t, err, redlock.ErrLost)
		synctest.Wait()
		assert.Equal(t, "next holder", value(b.ms[0], "job"), "the other holder's keys are left alone")
		assert.Equal(t, "next holder", value(b.ms[1], "job"))
		assert.False(t, b.ms[2].Exists("job"), "this holder's own key is released")
	})
}

func TestRefreshOnAMinorityLosesTheLock(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		locks := b.client(t)
		defer locks.Close()
		l, err := locks.TryObtain(ctx, "job", 10*time.Second)
		require.NoError(t, err)
		synctest.Wait()

		b.ms[0].Del("job") // one node lost it: the majority still holds it
		require.NoError(t, l.Refresh(ctx, 20*time.Second))
		ttl, err := l.TTL(ctx)
		require.NoError(t, err)
		assert.Equal(t, 20*time.Second, ttl)

		b.ms[1].Del("job")
		err = l.Refresh(ctx, 20*time.Second)
		require.ErrorIs(t, err, redlock.ErrLost)
		require.True(t, isClosed(l.Lost()))
		assert.ErrorIs(t, l.Err(), keyward.ErrLost)
	})
}
