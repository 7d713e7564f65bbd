package redlock_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/redlock"
)

// The tests in this file run in testing/synctest bubbles: time is fake, a round trip to miniredis takes none of
// it, and a hung node is a connection that never answers, so timings are exact.

func TestLostAtTheValidityDeadlineNotBefore(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		locks := b.client(t)
		defer locks.Close()
		start := time.Now()
		l, err := locks.TryObtain(context.Background(), "job", time.Second)
		require.NoError(t, err)
		assert.Equal(t, start.Add(time.Second-12*time.Millisecond), l.Until(), "ttl − (1 % of ttl + 2 ms)")
		<-l.Lost()
		assert.Equal(t, time.Second-12*time.Millisecond, time.Since(start))
		require.ErrorIs(t, l.Err(), redlock.ErrLost)
		require.ErrorIs(t, l.Release(context.Background()), redlock.ErrLost)
	})
}

func TestAutoRefreshKeepsTheLockForManyTTLs(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		locks := b.client(t)
		defer locks.Close()
		l, err := locks.TryObtain(ctx, "job", time.Second, redlock.WithAutoRefresh())
		require.NoError(t, err)

		time.Sleep(10 * time.Second)
		require.False(t, isClosed(l.Lost()), "lost after 10 ttls: %v", l.Err())
		ttl, err := l.TTL(ctx)
		require.NoError(t, err)
		assert.Greater(t, ttl, time.Second/2)
		assert.Equal(t, 3, holders(b.ms, "job", l.Value()))
		_, err = locks.TryObtain(ctx, "job", time.Second)
		require.ErrorIs(t, err, redlock.ErrNotObtained)

		require.NoError(t, l.Release(ctx))
		synctest.Wait()
		assert.Zero(t, holders(b.ms, "job", l.Value()))
	})
}

func TestHungMinorityDoesNotStall(t *testing.T) {
	for _, tt := range []struct{ nodes, hung int }{{3, 1}, {5, 2}} {
		t.Run("", func(t *testing.T) {
			inBubble(t, tt.nodes, func(t *testing.T, b *bubble) {
				ctx := context.Background()
				for i := range tt.hung {
					b.hang(i)
				}
				locks := b.client(t)
				start := time.Now()
				l, err := locks.TryObtain(ctx, "job", 10*time.Second)
				require.NoError(t, err)
				assert.Zero(t, time.Since(start), "decided by the majority, without waiting for the hung nodes")
				require.NoError(t, l.Refresh(ctx, 20*time.Second))
				require.NoError(t, l.Release(ctx))
				assert.Zero(t, time.Since(start))

				require.NoError(t, locks.Close()) // the hung nodes' operations end at the node timeout
				assert.Equal(t, 100*time.Millisecond, time.Since(start),
					"acquire, then the release that waited for its answer: 50 ms each")
				assert.Zero(t, holders(b.ms, "job", l.Value()))
			})
		})
	}
}

func TestHungMajorityFailsAtTheNodeTimeout(t *testing.T) {
	for _, tt := range []struct {
		name    string
		opts    []redlock.Option
		timeout time.Duration
	}{
		{"default: a hundredth of the ttl, at most 50 ms", nil, 50 * time.Millisecond},
		{"set", []redlock.Option{redlock.WithNodeTimeout(20 * time.Millisecond)}, 20 * time.Millisecond},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inBubble(t, 3, func(t *testing.T, b *bubble) {
				b.hang(1)
				b.hang(2)
				locks := b.client(t, tt.opts...)
				defer locks.Close()
				start := time.Now()
				_, err := locks.TryObtain(context.Background(), "job", 10*time.Second)
				assert.Equal(t, tt.timeout, time.Since(start))
				require.ErrorIs(t, err, redlock.ErrQuorum)
				assert.NotErrorIs(t, err, redlock.ErrNotObtained)
				assert.NotErrorIs(t, err, context.DeadlineExceeded, "the caller's context did not end")
				assert.Contains(t, err.Error(), "1 of 3 nodes (need 2)")
				assert.Contains(t, err.Error(), "node 1 (miniredis): no answer within the node timeout "+tt.timeout.String())
				assert.Contains(t, err.Error(), "node 2 (miniredis): no answer within the node timeout")
				assert.False(t, b.ms[0].Exists("job"), "the node that granted it was released")
			})
		})
	}
}

func TestCallerContextEndsFirst(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		b.hang(1)
		b.hang(2)
		locks := b.client(t, redlock.WithNodeTimeout(time.Second))
		defer locks.Close()
		why := errors.New("shutting down")
		ctx, cancel := context.WithTimeoutCause(context.Background(), 10*time.Millisecond, why)
		defer cancel()
		start := time.Now()
		_, err := locks.TryObtain(ctx, "job", 10*time.Second)
		assert.Equal(t, 10*time.Millisecond, time.Since(start))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, why)
		synctest.Wait()
		assert.False(t, b.ms[0].Exists("job"), "the node that granted it was released")
	})
}

func TestValidityUsedUpFailsAndReleases(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		for i := range b.nodes {
			b.slow(i, 1500*time.Millisecond)
		}
		locks := b.client(t, redlock.WithNodeTimeout(time.Minute), redlock.WithDrift(0.5, 0))
		defer locks.Close()
		warm(t, locks)

		// Validity: 2 s − 50 % drift = 1 s; the nodes take the lock at 1.5 s, with a ttl of 2 s.
		errc := make(chan error, 1)
		var took time.Duration
		go func() {
			start := time.Now()
			_, err := locks.TryObtain(ctx, "job", 2*time.Second)
			took = time.Since(start)
			errc <- err
		}()
		time.Sleep(3100 * time.Millisecond)
		synctest.Wait()
		for i, m := range b.ms {
			assert.False(t, m.Exists("job"), "node %d: released at 3 s, before its ttl ends at 3.5 s", i)
		}
		err := <-errc
		require.ErrorIs(t, err, redlock.ErrQuorum)
		assert.Contains(t, err.Error(), "longer than the validity")
		assert.Equal(t, 3*time.Second, took, "the failed attempt waited for its releases")
	})
}

func TestLateAnswers(t *testing.T) {
	t.Run("a failed attempt releases them", func(t *testing.T) {
		inBubble(t, 3, func(t *testing.T, b *bubble) {
			ctx := context.Background()
			b.slow(2, time.Second)
			locks := b.client(t, redlock.WithNodeTimeout(time.Minute))
			defer locks.Close()
			warm(t, locks)
			b.ms[0].Set("job", "other")
			b.ms[1].Set("job", "other")

			start := time.Now()
			_, err := locks.TryObtain(ctx, "job", time.Minute)
			require.ErrorIs(t, err, redlock.ErrNotObtained)
			assert.Zero(t, time.Since(start), "decided without the slow node")

			time.Sleep(1500 * time.Millisecond)
			assert.NotEmpty(t, value(b.ms[2], "job"), "the slow node took the lock at 1 s")
			time.Sleep(time.Second) // its answer came at 1 s, and the release then reached it at 2 s
			assert.False(t, b.ms[2].Exists("job"))
		})
	})
	t.Run("a lock keeps them", func(t *testing.T) {
		inBubble(t, 3, func(t *testing.T, b *bubble) {
			ctx := context.Background()
			b.slow(2, time.Second)
			locks := b.client(t, redlock.WithNodeTimeout(time.Minute))
			defer locks.Close()
			warm(t, locks)

			start := time.Now()
			l, err := locks.TryObtain(ctx, "job", time.Minute)
			require.NoError(t, err)
			assert.Zero(t, time.Since(start))
			time.Sleep(1500 * time.Millisecond)
			assert.Equal(t, 3, holders(b.ms, "job", l.Value()), "the lock lives on every node that granted it")

			b.ms[0].Del("job") // a node of the first majority loses it: the lock goes on with the late node
			require.NoError(t, l.Refresh(ctx, time.Minute))
			require.NoError(t, l.Release(ctx))
			time.Sleep(2 * time.Second)
			assert.Zero(t, holders(b.ms, "job", l.Value()))
		})
	})
}

// warm opens each node's connection and loads the scripts, and lets a minute pass for slow nodes to finish.
func warm(t *testing.T, locks *redlock.Client) {
	t.Helper()
	l, err := locks.TryObtain(context.Background(), "warm", time.Hour)
	require.NoError(t, err)
	require.NoError(t, l.Release(context.Background()))
	time.Sleep(time.Minute)
	synctest.Wait()
}

func TestAmbiguousAnswerIsReleased(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		locks := b.client(t)
		defer locks.Close()
		warm(t, locks)
		b.ms[0].Set("job", "other")
		b.ms[1].Set("job", "other")
		hook := &redistest.LostReply{}
		b.clients[2].AddHook(hook)
		_, err := locks.TryObtain(ctx, "job", time.Minute)
		require.ErrorIs(t, err, redlock.ErrNotObtained)
		synctest.Wait()
		assert.True(t, hook.Done())
		assert.False(t, b.ms[2].Exists("job"), "the key the node did set, though its answer was lost, is released")
	})
}

func TestObtainIsWokenByTheRelease(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		holder, waiter := b.client(t), b.client(t)
		defer holder.Close()
		defer waiter.Close()
		l, err := holder.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)

		got := make(chan *redlock.Lock, 1)
		go func() {
			w, err := waiter.Obtain(ctx, "job", time.Minute)
			assert.NoError(t, err)
			got <- w
		}()
		time.Sleep(3 * time.Second)
		synctest.Wait() // the waiter is subscribed and waits
		released := time.Now()
		require.NoError(t, l.Release(ctx))
		w := <-got
		// Woken by the first node's release message, the waiter may try before the holder's release reached
		// the other nodes: it then holds a minority, gives it back and pauses for about a try (here, no more
		// than a millisecond of the bubble's clock) before it tries again.
		assert.LessOrEqual(t, time.Since(released), time.Millisecond, "woken by the release, not by the timer at the ttl")
		assert.Greater(t, w.Fence(), l.Fence())
		require.NoError(t, w.Release(ctx))
	})
}

func TestObtainTakesOverFromACrashedHolder(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		for _, m := range b.ms {
			require.NoError(t, m.Set("job", "crashed holder"))
			m.SetTTL("job", 2*time.Second)
		}
		locks := b.client(t)
		defer locks.Close()
		start := time.Now()
		l, err := locks.Obtain(context.Background(), "job", time.Minute)
		require.NoError(t, err)
		took := time.Since(start)
		assert.GreaterOrEqual(t, took, 2*time.Second+time.Millisecond, "at the holder's ttl")
		assert.Less(t, took, 2*time.Second+2*time.Millisecond, "plus a millisecond and a jitter below one")
		require.NoError(t, l.Release(context.Background()))
	})
}

func TestObtainGivesUp(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		locks := b.client(t)
		held, err := locks.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)

		why := errors.New("request cancelled")
		wctx, cancel := context.WithTimeoutCause(ctx, 5*time.Second, why)
		defer cancel()
		start := time.Now()
		_, err = locks.Obtain(wctx, "job", time.Minute)
		assert.Equal(t, 5*time.Second, time.Since(start))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, why)

		// A waiter is woken by Close.
		errc := make(chan error, 1)
		go func() {
			_, err := locks.Obtain(ctx, "job", time.Minute)
			errc <- err
		}()
		synctest.Wait()
		require.NoError(t, locks.Close())
		err = <-errc
		require.ErrorIs(t, err, redlock.ErrClosed)
		assert.NotErrorIs(t, err, redlock.ErrInvalid)
		assert.Equal(t, 5*time.Second, time.Since(start), "at once")
		require.NoError(t, held.Release(ctx), "a lock held at Close stays usable until released")
	})
}

func TestObtainLinesUpGoroutinesOfOneClient(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		locks := b.client(t)
		defer locks.Close()
		var inside, entered atomic.Int64
		done := make(chan struct{})
		for range 5 {
			go func() {
				defer func() { done <- struct{}{} }()
				err := locks.Do(context.Background(), "job", time.Second, func(ctx context.Context) error {
					assert.Equal(t, int64(1), inside.Add(1), "two holders at once")
					time.Sleep(100 * time.Millisecond)
					inside.Add(-1)
					entered.Add(1)
					return nil
				})
				assert.NoError(t, err)
			}()
		}
		start := time.Now()
		for range 5 {
			<-done
		}
		assert.Equal(t, int64(5), entered.Load())
		// Each took over when woken by the release, not at the holder's ttl (1 s); a try that raced with the
		// release on some node backs off for a random time below a millisecond here.
		assert.Less(t, time.Since(start), 505*time.Millisecond)
	})
}

func TestDoCancelsWhenTheLockIsLost(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		locks := b.client(t)
		defer locks.Close()
		err := locks.Do(context.Background(), "job", 3*time.Second, func(ctx context.Context) error {
			synctest.Wait()
			// Two of the three nodes lose the key and another holder takes them.
			b.ms[0].Set("job", "other")
			b.ms[1].Set("job", "other")
			<-ctx.Done() // the next refresh, at a third of the ttl, finds the lock gone
			return context.Cause(ctx)
		})
		require.ErrorIs(t, err, redlock.ErrLost)
		assert.Equal(t, "other", value(b.ms[0], "job"), "the other holder's keys are left alone")
	})
}
