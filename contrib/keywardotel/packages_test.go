package keywardotel_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/contrib/keywardotel"
	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
	"github.com/keyward/keyward/ratelimit"
	"github.com/keyward/keyward/redlock"
	"github.com/keyward/keyward/semaphore"
)

// The permits held go up and back to zero, through a wait, a hand-over, a permit found gone and released after its
// loss: with fencing tokens (each permit told apart) and without (permits counted by their events alone).
func TestSemaphorePermits(t *testing.T) {
	for _, fencing := range []bool{true, false} {
		t.Run(fmt.Sprintf("fencing=%v", fencing), func(t *testing.T) {
			inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
				r := newRig(t)
				opts := []semaphore.Option{semaphore.WithObserver(r.obs)}
				if fencing {
					opts = append(opts, semaphore.WithFencing())
				}
				sem, err := semaphore.New(rdb, "pool", 3, opts...)
				require.NoError(t, err)
				defer sem.Close()
				ctx := context.Background()
				held := func() int64 { return r.read(t).value("keyward.held", srcSemaphore, key("pool")) }

				var permits []*semaphore.Permit
				for range 3 {
					p, err := sem.TryAcquire(ctx, 3*time.Second, semaphore.WithAutoRefresh())
					require.NoError(t, err)
					permits = append(permits, p)
				}
				assert.EqualValues(t, 3, held())
				got := make(chan *semaphore.Permit)
				go func() {
					p, err := sem.Acquire(ctx, 3*time.Second, semaphore.WithAutoRefresh())
					assert.NoError(t, err)
					got <- p
				}()
				synctest.Wait()
				assert.EqualValues(t, 1, r.read(t).value("keyward.waiters", srcSemaphore, key("pool")))
				time.Sleep(time.Second)
				require.NoError(t, permits[0].Release(ctx)) // handed to the waiter
				permits[0] = <-got
				synctest.Wait()
				rd := r.read(t)
				assert.Zero(t, rd.value("keyward.waiters", srcSemaphore))
				assert.EqualValues(t, 3, held())

				// A permit removed by an operator is found gone at the next refresh; its release reports the loss.
				_, err = m.ZRem("pool", permits[1].Value())
				require.NoError(t, err)
				<-permits[1].Lost()
				synctest.Wait()
				assert.EqualValues(t, 2, held())
				require.ErrorIs(t, permits[1].Release(ctx), keyward.ErrLost)
				assert.EqualValues(t, 2, held(), "the release after the loss does not count it off again")

				require.NoError(t, permits[0].Release(ctx))
				require.NoError(t, permits[2].Release(ctx))
				require.NoError(t, permits[2].Release(ctx), "a second release tells nothing")
				rd = r.read(t)
				assert.Zero(t, rd.value("keyward.held", srcSemaphore), "back to zero")
				assert.EqualValues(t, 1, rd.value("keyward.lost", srcSemaphore, key("pool"),
					keywardotel.AttrReason.String("taken")))
				n, _ := rd.count("keyward.hold.duration", srcSemaphore, keywardotel.AttrEnd.String("released"))
				assert.EqualValues(t, 3, n)
				n, _ = rd.count("keyward.hold.duration", srcSemaphore, keywardotel.AttrEnd.String("lost"))
				assert.EqualValues(t, 1, n)
				n, sum := rd.count("keyward.acquire.duration", srcSemaphore, key("pool"), op("acquire"), outcome("obtained"))
				assert.EqualValues(t, 1, n)
				assert.Equal(t, 1.0, sum, "the waiter waited a second")
				assert.Len(t, r.ended("keyward.semaphore try acquire"), 3)
				assert.Zero(t, keywardotel.Holdings(r.obs))
			})
		})
	}
}

// The leader gauge is 0 for a candidate, 1 while it leads, 0 again after it resigned or lost; the term follows;
// each change is counted once, also when a resignation reports a loss told before.
func TestElectionLeader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		defer m.Close()
		crash := &redistest.Outage{Err: errors.New("crashed")}
		candidate := func(identity string, o keyward.Observer, hooks ...redis.Hook) *election.Election {
			rdb := redistest.SynctestClient(m)
			for _, h := range hooks {
				rdb.AddHook(h)
			}
			t.Cleanup(func() { _ = rdb.Close() })
			locks, err := lock.New(rdb)
			require.NoError(t, err)
			t.Cleanup(func() { _ = locks.Close() })
			opts := []election.Option{election.WithRedis(rdb), election.WithIdentity(identity),
				election.WithTTL(time.Second)}
			if o != nil {
				opts = append(opts, election.WithObserver(o))
			}
			e, err := election.New(locks.Locker(), "leader", opts...)
			require.NoError(t, err)
			return e
		}
		r := newRig(t)
		a := candidate("a", r.obs, crash)
		b := candidate("b", nil)
		ctx := context.Background()
		name := key("leader")
		leader := func() int64 { return r.read(t).value("keyward.election.leader", name) }
		term := func() int64 { return r.read(t).value("keyward.election.term", name) }
		changes := func(c string) int64 {
			return r.read(t).value("keyward.election.changes", name, keywardotel.AttrChange.String(c))
		}

		other, err := b.Campaign(ctx)
		require.NoError(t, err)
		won := make(chan *election.Leadership)
		go func() {
			lead, err := a.Campaign(ctx)
			assert.NoError(t, err)
			won <- lead
		}()
		synctest.Wait()
		assert.Equal(t, []string{"keyward.key=leader"}, r.read(t).attrSets("keyward.election.leader"),
			"a candidate's gauge is there before it leads")
		assert.Zero(t, leader())
		time.Sleep(2 * time.Second)
		require.NoError(t, other.Resign(ctx))
		lead := <-won
		assert.EqualValues(t, 1, leader())
		assert.Equal(t, lead.Term(), term())
		time.Sleep(5 * time.Second)
		require.NoError(t, lead.Resign(ctx))
		assert.Zero(t, leader())
		assert.Zero(t, term())
		assert.EqualValues(t, 1, changes("obtained"))
		assert.EqualValues(t, 1, changes("released"))
		rd := r.read(t)
		n, sum := rd.count("keyward.acquire.duration", srcElection, name, op("campaign"), outcome("obtained"))
		assert.EqualValues(t, 1, n)
		assert.Equal(t, 2.0, sum, "the campaign waited for the other leader")
		n, sum = rd.count("keyward.hold.duration", srcElection, name)
		assert.EqualValues(t, 1, n)
		assert.Equal(t, 5.0, sum)

		// Lost: Redis can no longer be reached, renewals fail until the lease runs out.
		lead, err = a.Campaign(ctx)
		require.NoError(t, err)
		assert.EqualValues(t, 1, leader())
		crash.On()
		<-lead.Done()
		synctest.Wait()
		crash.Off()
		assert.Zero(t, leader())
		require.ErrorIs(t, lead.Resign(ctx), keyward.ErrLost)
		rd = r.read(t)
		assert.Zero(t, rd.value("keyward.election.leader", name))
		assert.EqualValues(t, 2, rd.value("keyward.election.changes", name, keywardotel.AttrChange.String("obtained")))
		assert.EqualValues(t, 1, rd.value("keyward.election.changes", name, keywardotel.AttrChange.String("lost")))
		assert.EqualValues(t, 1, rd.value("keyward.election.changes", name, keywardotel.AttrChange.String("released")),
			"the resignation that reported the loss is no change of its own")
		assert.Positive(t, rd.value("keyward.refresh.failures", srcElection, name))
		assert.EqualValues(t, 1, rd.value("keyward.lost", srcElection, name, keywardotel.AttrReason.String("expired")))
		require.Len(t, r.ended("keyward.election campaign"), 2, "a's two campaigns")
		assert.Zero(t, keywardotel.Holdings(r.obs))
	})
}

// A redlock lock held on fewer than a majority of its nodes is lost, taken; its calls have spans of their own.
func TestRedlock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var servers []*miniredis.Miniredis
		var nodes []redis.UniversalClient
		for range 3 {
			m := miniredis.NewMiniRedis()
			defer m.Close()
			rdb := redistest.SynctestClient(m)
			defer rdb.Close()
			servers, nodes = append(servers, m), append(nodes, rdb)
		}
		r := newRig(t, keywardotel.WithKeyLabel(keywardotel.KeyAsIs))
		quorum, err := redlock.New(nodes, redlock.WithObserver(r.obs))
		require.NoError(t, err)
		defer quorum.Close()
		ctx := context.Background()
		l, err := quorum.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		assert.EqualValues(t, 1, r.read(t).value("keyward.held", srcRedlock, key("job")))
		synctest.Wait() // the nodes that answered after the majority are settled
		servers[0].Del("job")
		servers[1].Del("job")
		_, err = l.TTL(ctx)
		require.ErrorIs(t, err, keyward.ErrLost)
		require.ErrorIs(t, l.Release(ctx), keyward.ErrLost)
		rd := r.read(t)
		assert.Zero(t, rd.value("keyward.held", srcRedlock))
		assert.EqualValues(t, 1, rd.value("keyward.lost", srcRedlock, key("job"), keywardotel.AttrReason.String("taken")))
		n, _ := rd.count("keyward.acquire.duration", srcRedlock, key("job"), op("try obtain"), outcome("obtained"))
		assert.EqualValues(t, 1, n)
		assert.Len(t, r.ended("keyward.redlock try obtain"), 1)
		assert.Zero(t, keywardotel.Holdings(r.obs))
	})
}

// Events heard out of the usual order, or twice, or without a call (an Observer used as a plain one) leave the
// gauges right: a lock is counted off once, when its release settles or it is lost.
func TestEventSequences(t *testing.T) {
	r := newRig(t, keywardotel.WithKeyLabel(keywardotel.KeyAsIs))
	ctx := context.Background()
	ev := func(kind keyward.EventKind, fence int64, err error) keyward.Event {
		return keyward.Event{Kind: kind, Source: "lock", Key: "k", Fence: fence, Held: time.Second, Err: err}
	}
	held := func() int64 { return r.read(t).value("keyward.held", srcLock, key("k")) }
	netErr := errors.New("i/o timeout")
	notHeld := fmt.Errorf("lock %q: %w: expired or taken by another holder before release", "k", keyward.ErrNotHeld)

	r.obs.Observe(ctx, ev(keyward.Obtained, 1, nil))
	r.obs.Observe(ctx, ev(keyward.Obtained, 1, nil)) // heard twice
	assert.EqualValues(t, 1, held())
	r.obs.Observe(ctx, ev(keyward.Released, 1, netErr)) // outcome unknown: still held
	assert.EqualValues(t, 1, held())
	assert.EqualValues(t, 1, r.read(t).value("keyward.errors", keywardotel.AttrDuring.String("release")))
	r.obs.Observe(ctx, ev(keyward.Lost, 1, fmt.Errorf("lock %q: %w: validity deadline passed before a refresh succeeded", "k", keyward.ErrLeaseExpired)))
	assert.Zero(t, held())
	r.obs.Observe(ctx, ev(keyward.Released, 1, nil)) // the key was still there: deleted after the loss
	assert.Zero(t, held())

	r.obs.Observe(ctx, ev(keyward.Obtained, 2, nil))
	r.obs.Observe(ctx, ev(keyward.Released, 2, notHeld)) // found expired at the release: settled
	assert.Zero(t, held())
	r.obs.Observe(ctx, ev(keyward.Released, 3, nil)) // a lock obtained before the Observer was plugged in
	r.obs.Observe(ctx, ev(keyward.WaitStarted, 0, nil))
	r.obs.Observe(ctx, ev(keyward.WaitEnded, 0, nil))
	rd := r.read(t)
	assert.Zero(t, rd.value("keyward.held", srcLock))
	assert.Zero(t, rd.value("keyward.waiters", srcLock))
	n, _ := rd.count("keyward.hold.duration")
	assert.EqualValues(t, 2, n)
	assert.Zero(t, keywardotel.Holdings(r.obs))

	r.obs.Observe(ctx, keyward.Event{Kind: keyward.Reconnected, Source: "keyspace", Err: netErr})
	r.obs.Observe(ctx, keyward.Event{Kind: keyward.Error, Source: "lock", Key: "k", Err: netErr})
	r.obs.Observe(ctx, keyward.Event{Kind: keyward.CleanedUp, Source: "lock", Key: "k"})
	r.obs.Observe(ctx, keyward.Event{Kind: keyward.CleanedUp, Source: "lock", Key: "k", Err: netErr})
	r.obs.Observe(ctx, keyward.Event{Kind: keyward.Lost, Source: "lock", Key: "k", Fence: 9, Err: keyward.ErrLost})
	r.obs.Observe(nil, keyward.Event{Kind: keyward.Ended, Source: "lock", Op: "obtain", Key: "k"}) // a nil ctx is taken as Background
	rd = r.read(t)
	assert.EqualValues(t, 1, rd.value("keyward.watch.reconnects", keywardotel.AttrSource.String("keyspace")))
	assert.EqualValues(t, 1, rd.value("keyward.errors", keywardotel.AttrDuring.String("background")))
	assert.EqualValues(t, 1, rd.value("keyward.errors", keywardotel.AttrDuring.String("cleanup")))
	assert.EqualValues(t, 1, rd.value("keyward.lost", keywardotel.AttrReason.String("unknown")))
	n, _ = rd.count("keyward.acquire.duration", outcome("obtained"))
	assert.EqualValues(t, 1, n)
	assert.Empty(t, r.spans.Ended(), "no span without a call")
}

// A rate limiter's calls are counted by outcome like the locks' (a refused Allow as not_obtained), a Wait that
// sleeps is a waiter until its turn and its span lasts as long as the call, and a limiter's name, which may be
// per user, is left off the metrics by default.
func TestRateLimiter(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		r := newRig(t)
		lim, err := ratelimit.New(rdb, "signups:203.0.113.7", ratelimit.Every(time.Second, 1),
			ratelimit.WithObserver(r.obs))
		require.NoError(t, err)
		ctx := context.Background()
		src := keywardotel.AttrSource.String("ratelimit")

		res, err := lim.Allow(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, res.Allowed)
		res, err = lim.Allow(ctx)
		require.NoError(t, err)
		require.Zero(t, res.Allowed)
		done := make(chan error)
		go func() { done <- lim.Wait(ctx) }()
		synctest.Wait()
		assert.EqualValues(t, 1, r.read(t).value("keyward.waiters", src))
		require.NoError(t, <-done)
		_, err = lim.AllowN(ctx, 2)
		require.ErrorIs(t, err, ratelimit.ErrExceedsBurst)

		rd := r.read(t)
		assert.Zero(t, rd.value("keyward.waiters", src))
		n, _ := rd.count("keyward.acquire.duration", src, op("allow"), outcome("obtained"))
		assert.EqualValues(t, 1, n)
		n, _ = rd.count("keyward.acquire.duration", src, op("allow"), outcome("not_obtained"))
		assert.EqualValues(t, 1, n)
		n, _ = rd.count("keyward.acquire.duration", src, op("allow"), outcome("error"),
			keywardotel.AttrErrorType.String("invalid"))
		assert.EqualValues(t, 1, n)
		n, sum := rd.count("keyward.acquire.duration", src, op("wait"), outcome("obtained"))
		assert.EqualValues(t, 1, n)
		assert.InDelta(t, 1.001, sum, 1e-9, "the Wait slept until the next token, stretched 0.1 % for the clocks")
		for _, set := range rd.attrSets("keyward.acquire.duration") {
			assert.NotContains(t, set, "203.0.113.7", "a limiter's name is not a metric label by default")
		}

		waits := r.ended("keyward.ratelimit wait")
		require.Len(t, waits, 1)
		assert.Equal(t, time.Second+time.Millisecond, waits[0].EndTime().Sub(waits[0].StartTime()))
		assert.Len(t, r.ended("keyward.ratelimit allow"), 3)
	})
}
