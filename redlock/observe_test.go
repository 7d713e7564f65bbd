package redlock_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/redlock"
)

// only returns the one event of kind k rec heard, failing the test unless there is exactly one, and checks that
// it comes from redlock.
func only(t *testing.T, rec *observe.Recorder, k keyward.EventKind) keyward.Event {
	t.Helper()
	es := rec.Of(k)
	require.Len(t, es, 1, "one %v event in %v", k, rec.Kinds())
	assert.Equal(t, "redlock", es[0].Source)
	return es[0]
}

func TestObserverHearsObtainedAndReleased(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		rec := &observe.Recorder{}
		locks := b.client(t, redlock.WithPrefix("p:"), redlock.WithObserver(rec))
		defer locks.Close()

		l, err := locks.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		e := only(t, rec, keyward.Obtained)
		assert.Equal(t, "p:job", e.Key, "the key on the nodes, with the prefix")
		assert.Equal(t, l.Fence(), e.Fence)

		time.Sleep(time.Second)
		require.NoError(t, l.Release(ctx))
		e = only(t, rec, keyward.Released)
		assert.Equal(t, "p:job", e.Key)
		assert.Equal(t, l.Fence(), e.Fence)
		assert.GreaterOrEqual(t, e.Held, time.Second)
		assert.NoError(t, e.Err)

		require.NoError(t, l.Release(ctx))
		assert.Len(t, rec.Of(keyward.Released), 1, "a second Release sends nothing, and tells nothing")
		assert.Equal(t, []keyward.EventKind{keyward.Obtained, keyward.Ended, keyward.Released}, rec.Kinds(),
			"no wait, no clean-up")
		e = only(t, rec, keyward.Ended)
		assert.Equal(t, keyward.Event{Kind: keyward.Ended, Source: "redlock", Op: "try obtain", Key: "p:job",
			Fence: l.Fence()}, e, "the call ended with the lock")
	})
}

func TestObserverHearsAWait(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		rec := &observe.Recorder{}
		p, q := b.client(t), b.client(t, redlock.WithObserver(rec))
		defer p.Close()
		defer q.Close()
		held, err := p.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		synctest.Wait()

		got := obtainAsync(t, q, ctx)
		assert.Equal(t, []keyward.EventKind{keyward.WaitStarted}, rec.Kinds())
		time.Sleep(time.Second)
		l := handOff(t, held, got, nil, "")
		assert.Equal(t, []keyward.EventKind{keyward.WaitStarted, keyward.WaitEnded, keyward.Obtained, keyward.Ended},
			rec.Kinds())
		ended := only(t, rec, keyward.WaitEnded)
		assert.NoError(t, ended.Err, "the wait ended with the lock")
		assert.GreaterOrEqual(t, ended.Wait, time.Second)
		assert.Equal(t, "job", ended.Key)
		obtained := only(t, rec, keyward.Obtained)
		assert.GreaterOrEqual(t, obtained.Wait, ended.Wait, "since the call started")
		assert.Equal(t, l.Fence(), obtained.Fence)

		// A wait that ends without the lock: the ctx's deadline, behind a holder of the same Client.
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err = q.Obtain(wctx, "job", time.Minute)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		ends := rec.Of(keyward.WaitEnded)
		require.Len(t, ends, 2, "%v", rec.Kinds())
		assert.ErrorIs(t, ends[1].Err, context.DeadlineExceeded)
		assert.Equal(t, 2*time.Second, ends[1].Wait)
		assert.Len(t, rec.Of(keyward.WaitStarted), 2)
		calls := rec.Of(keyward.Ended)
		require.Len(t, calls, 2)
		assert.Equal(t, "obtain", calls[1].Op)
		assert.Equal(t, err, calls[1].Err, "the call ended with its error")
		assert.Equal(t, 2*time.Second, calls[1].Wait)
		assert.Zero(t, calls[1].Fence)
		require.NoError(t, l.Release(ctx))
	})
}

func TestObserverHearsARefreshFailingThenTheLoss(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		rec := &observe.Recorder{}
		locks := b.client(t, redlock.WithObserver(rec))
		defer locks.Close()
		l, err := locks.TryObtain(ctx, "job", 3*time.Second, redlock.WithAutoRefresh())
		require.NoError(t, err)
		synctest.Wait()
		b.ms[1].SetError("LOADING Redis is loading the dataset in memory")
		b.ms[2].SetError("LOADING Redis is loading the dataset in memory")

		select {
		case <-l.Lost():
		case <-time.After(time.Minute):
			t.Fatalf("the lock was not lost: refreshes on one node of three kept it (events: %v)", rec.Kinds())
		}
		synctest.Wait()
		kinds := rec.Kinds()
		require.Equal(t, keyward.Lost, kinds[len(kinds)-1], "%v", kinds)
		failed := rec.Of(keyward.RefreshFailed)
		require.NotEmpty(t, failed, "every failed refresh is told, until the deadline: %v", kinds)
		for _, e := range failed {
			assert.Equal(t, "job", e.Key)
			assert.Equal(t, l.Fence(), e.Fence)
			require.ErrorIs(t, e.Err, redlock.ErrQuorum)
			var ne *keyward.NodeError
			require.ErrorAs(t, e.Err, &ne)
			assert.Contains(t, []int{1, 2}, ne.Node)
		}
		lost := only(t, rec, keyward.Lost)
		assert.ErrorIs(t, lost.Err, redlock.ErrLost)
		assert.Equal(t, l.Err(), errors.Unwrap(lost.Err), "the lock's own loss error, with the key")
		assert.Contains(t, lost.Err.Error(), `"job"`)
		assert.Equal(t, l.Fence(), lost.Fence)
		assert.InDelta(t, 3*time.Second, lost.Held, float64(50*time.Millisecond), "held until the validity deadline")

		b.ms[1].SetError("")
		b.ms[2].SetError("")
		require.ErrorIs(t, l.Release(ctx), redlock.ErrLost)
		assert.Len(t, rec.Of(keyward.Lost), 1, "a loss is told once")
	})
}

func TestObserverHearsCleanUps(t *testing.T) {
	t.Run("a minority taken, released", func(t *testing.T) {
		inBubble(t, 3, func(t *testing.T, b *bubble) {
			rec := &observe.Recorder{}
			locks := b.client(t, redlock.WithObserver(rec))
			for _, m := range b.ms[1:] {
				require.NoError(t, m.Set("job", "another holder"))
				m.SetTTL("job", time.Minute)
			}
			_, err := locks.TryObtain(context.Background(), "job", time.Minute)
			require.ErrorIs(t, err, redlock.ErrNotObtained)
			require.NoError(t, locks.Close())
			e := only(t, rec, keyward.CleanedUp)
			assert.Equal(t, "job", e.Key)
			assert.NoError(t, e.Err, "node 0, released")
			assert.False(t, b.ms[0].Exists("job"))
		})
	})
	t.Run("ambiguous acquires on hung nodes", func(t *testing.T) {
		inBubble(t, 3, func(t *testing.T, b *bubble) {
			b.hang(1)
			b.hang(2)
			rec := &observe.Recorder{}
			locks := b.client(t, redlock.WithObserver(rec))
			_, err := locks.TryObtain(context.Background(), "job", 10*time.Second)
			require.ErrorIs(t, err, redlock.ErrQuorum)
			require.NoError(t, locks.Close()) // waits for the clean-ups of the hung nodes, bounded
			cleaned := rec.Of(keyward.CleanedUp)
			require.Len(t, cleaned, 3, "one per node the attempt may hold")
			failed := map[int]bool{}
			for _, e := range cleaned {
				if e.Err == nil {
					continue
				}
				var ne *keyward.NodeError
				require.ErrorAs(t, e.Err, &ne)
				assert.Equal(t, "miniredis", ne.Addr)
				assert.Contains(t, ne.Error(), "no answer within the node timeout")
				failed[ne.Node] = true
			}
			assert.Equal(t, map[int]bool{1: true, 2: true}, failed, "node 0 released, the hung ones not")
		})
	})
}

func TestObserverHearsBackgroundErrors(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		rec := &observe.Recorder{}
		p := b.client(t)
		defer p.Close()
		held, err := p.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		synctest.Wait()
		waiter := b.client(t, redlock.WithObserver(rec), redlock.WithLogger(nil))
		defer waiter.Close()

		wctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := waiter.Obtain(wctx, "job", time.Minute)
			errc <- err
		}()
		synctest.Wait() // in every node's queue
		b.ms[2].SetError("ERR node 2 refuses everything")
		require.ErrorIs(t, <-errc, context.DeadlineExceeded)
		synctest.Wait() // the give-backs, in the background
		e := only(t, rec, keyward.Error)
		assert.Equal(t, "job", e.Key)
		var ne *keyward.NodeError
		require.ErrorAs(t, e.Err, &ne, "leaving node 2's queue failed")
		assert.Equal(t, 2, ne.Node)
		assert.Contains(t, e.Err.Error(), "refuses everything")
		b.ms[2].SetError("")
		require.NoError(t, held.Release(ctx))
	})
}

func TestObserversAddUp(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		first, second := &observe.Recorder{}, &observe.Recorder{}
		locks := b.client(t, redlock.WithObserver(first), redlock.WithObserver(nil), redlock.WithObserver(second))
		defer locks.Close()
		l, err := locks.TryObtain(context.Background(), "job", time.Minute)
		require.NoError(t, err)
		require.NoError(t, l.Release(context.Background()))
		assert.Equal(t, []keyward.EventKind{keyward.Obtained, keyward.Ended, keyward.Released}, first.Kinds())
		assert.Equal(t, first.Kinds(), second.Kinds())
	})
}

func TestStats(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		a, other := b.client(t, redlock.WithCohort(1)), b.client(t)
		defer a.Close()
		defer other.Close()
		assert.Equal(t, keyward.Stats{}, a.Stats())

		a1, err := a.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		synctest.Wait()
		assert.Equal(t, keyward.Stats{Tries: 1}, a.Stats())
		_, err = other.TryObtain(ctx, "job", time.Minute)
		require.ErrorIs(t, err, redlock.ErrNotObtained)
		assert.Equal(t, keyward.Stats{Tries: 1, FailedTries: 1}, other.Stats())

		// a's release reserves the lock for a's own waiter while another process waits: a hand-off.
		gotA2 := obtainAsync(t, a, ctx)
		gotB := obtainAsync(t, other, ctx)
		a2 := handOff(t, a1, gotA2, gotB, "within the cohort")
		s := a.Stats()
		assert.Equal(t, int64(1), s.HandOffs)
		// a2's plain try and its first queued try found the lock taken (a1 came from TryObtain, so a2 did not
		// know it as its Client's holder), and a third claimed the reservation.
		assert.Equal(t, keyward.Stats{Tries: 4, FailedTries: 2, HandOffs: 1}, s)
		lb := handOff(t, a2, gotB, nil, "")
		assert.Equal(t, int64(1), a.Stats().HandOffs, "the cohort (1) was used up: the next process's turn")
		require.NoError(t, lb.Release(ctx))
		assert.Positive(t, other.Stats().FailedTries)
	})
}

func TestLoggerLogsTheEvents(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		var buf bytes.Buffer
		logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		rec := &observe.Recorder{}
		locks := b.client(t, redlock.WithLogger(logger), redlock.WithObserver(rec), redlock.WithPrefix("p:"))
		defer locks.Close()
		l, err := locks.TryObtain(context.Background(), "job", time.Minute)
		require.NoError(t, err)
		require.NoError(t, l.Release(context.Background()))
		out := buf.String()
		assert.Contains(t, out, `msg="keyward: obtained" source=redlock key=p:job`)
		assert.Contains(t, out, `msg="keyward: released" source=redlock key=p:job`)
		assert.NotContains(t, out, "keyward: ended", "a call that obtained is logged once, as obtained")
		assert.Len(t, rec.All(), 3, "the observer hears them too, and the call's end")
	})
}
