package election_test

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/election"
)

// recorder is an Observer that keeps every event it hears.
type recorder struct {
	mu     sync.Mutex
	events []keyward.Event
}

func (r *recorder) Observe(_ context.Context, e keyward.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

// take returns the events heard since the last take, and checks that each comes from the election "report".
func (r *recorder) take(t *testing.T) []keyward.Event {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.events
	r.events = nil
	for _, ev := range e {
		assert.Equal(t, "election", ev.Source, "%v", ev.Kind)
		assert.Equal(t, name, ev.Key, "%v", ev.Kind)
	}
	return e
}

func kinds(events []keyward.Event) []keyward.EventKind {
	var k []keyward.EventKind
	for _, e := range events {
		k = append(k, e.Kind)
	}
	return k
}

func TestObserverHearsTerms(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		ctx := context.Background()
		rec := &recorder{}
		a := newCandidate(t, client(), "replica-a", election.WithObserver(rec))
		b := newCandidate(t, client(), "replica-b")

		lead, err := a.Campaign(ctx)
		require.NoError(t, err)
		assert.Equal(t, []keyward.Event{{Kind: keyward.Obtained, Source: "election", Key: name, Fence: lead.Term()}},
			rec.take(t), "elected at once")

		time.Sleep(5 * time.Second) // renewals tell nothing
		assert.Empty(t, rec.take(t))
		require.NoError(t, lead.Resign(ctx))
		assert.Equal(t, []keyward.Event{{Kind: keyward.Released, Source: "election", Key: name, Fence: lead.Term(),
			Held: 5 * time.Second}}, rec.take(t))
		require.NoError(t, lead.Resign(ctx))
		assert.Empty(t, rec.take(t), "a second Resign tells nothing")

		// A campaign that waits for another leader.
		other, err := b.Campaign(ctx)
		require.NoError(t, err)
		got := make(chan *election.Leadership)
		go func() {
			l, err := a.Campaign(ctx)
			assert.NoError(t, err)
			got <- l
		}()
		time.Sleep(3 * time.Second)
		require.NoError(t, other.Resign(ctx))
		second := <-got
		assert.Equal(t, []keyward.Event{{Kind: keyward.Obtained, Source: "election", Key: name,
			Fence: second.Term(), Wait: 3 * time.Second}}, rec.take(t))
		require.NoError(t, second.Resign(ctx))
		assert.Equal(t, []keyward.EventKind{keyward.Released}, kinds(rec.take(t)))
	})
}

// The background case: a leader whose renewals fail is told each failure, then the loss of its term.
func TestObserverHearsATermLost(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		ctx := context.Background()
		rec := &recorder{}
		crashed := newCrash()
		a := newCandidate(t, client(crashed), "replica-a", election.WithObserver(rec))
		lead, err := a.Campaign(ctx)
		require.NoError(t, err)
		elected := time.Now()
		assert.Equal(t, []keyward.EventKind{keyward.Obtained}, kinds(rec.take(t)))

		crashed.On() // Redis can no longer be reached: no renewal succeeds
		<-lead.Done()
		synctest.Wait()
		events := rec.take(t)
		require.GreaterOrEqual(t, len(events), 2, "%v", kinds(events))
		for _, e := range events[:len(events)-1] {
			assert.Equal(t, keyward.RefreshFailed, e.Kind)
			assert.ErrorIs(t, e.Err, errCrashed)
			assert.Equal(t, lead.Term(), e.Fence)
		}
		lost := events[len(events)-1]
		assert.Equal(t, keyward.Lost, lost.Kind, "the loss comes last")
		assert.ErrorIs(t, lost.Err, election.ErrLost)
		assert.Equal(t, lead.Term(), lost.Fence)
		assert.Equal(t, time.Since(elected), lost.Held)
		assert.Equal(t, lead.Until().Sub(elected), lost.Held, "lost when the lease ran out")

		crashed.Off()
		err = lead.Resign(ctx)
		require.ErrorIs(t, err, election.ErrLost)
		events = rec.take(t)
		assert.Equal(t, []keyward.EventKind{keyward.Released}, kinds(events), "the loss is told once")
		assert.Equal(t, err, events[0].Err)
	})
}

// A term found taken at a renewal is lost, with no failed renewal before it; Run campaigns again.
func TestObserverHearsRunsTerms(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		rec := &recorder{}
		a := newCandidate(t, client(), "replica-a", election.WithObserver(rec))
		ctx, cancel := context.WithCancel(context.Background())
		var terms []int64
		err := a.Run(ctx, func(leaderCtx context.Context) error {
			terms = append(terms, election.TermFrom(leaderCtx))
			if len(terms) == 1 {
				require.NoError(t, m.Set(name, "someone else")) // another program takes the lock for 2 s
				m.SetTTL(name, 2*time.Second)
			} else {
				cancel()
			}
			<-leaderCtx.Done()
			return nil
		})
		require.ErrorIs(t, err, context.Canceled)
		require.Len(t, terms, 2)
		events := rec.take(t)
		assert.Equal(t, []keyward.EventKind{keyward.Obtained, keyward.Lost, keyward.Released, keyward.Obtained,
			keyward.Released}, kinds(events))
		assert.Equal(t, terms[0], events[1].Fence)
		assert.ErrorIs(t, events[1].Err, election.ErrLost)
		assert.Equal(t, time.Second/3, events[1].Held, "found taken at the first renewal")
		assert.ErrorIs(t, events[2].Err, election.ErrLost, "the lost term's resignation reports the loss")
		assert.Equal(t, terms[1], events[3].Fence)
		assert.GreaterOrEqual(t, events[3].Wait, 2*time.Second-time.Second/3, "waited for the other holder")
		assert.NoError(t, events[4].Err)
	})
}

// The errors Run rides out, which OnError used to hear, are Error events.
func TestObserverHearsErrorsRunRidesOut(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		rec := &recorder{}
		a := newCandidate(t, client(&failRecordWrite{err: loadingError{}}), "replica-a", election.WithObserver(rec))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		err := a.Run(ctx, func(context.Context) error {
			cancel()
			return nil
		})
		require.ErrorIs(t, err, context.Canceled)
		events := rec.take(t)
		assert.Equal(t, []keyward.EventKind{keyward.Error, keyward.Obtained, keyward.Released}, kinds(events))
		assert.ErrorContains(t, events[0].Err, "LOADING")
		assert.ErrorContains(t, events[0].Err, `"report"`)
	})
}

func TestWithLogger(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		var mu sync.Mutex
		var buf bytes.Buffer
		logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			return buf.Write(p)
		}), &slog.HandlerOptions{Level: slog.LevelDebug}))
		rec := &recorder{}
		a := newCandidate(t, client(), "replica-a", election.WithLogger(logger), election.WithObserver(rec),
			election.WithLogger(nil))
		lead, err := a.Campaign(context.Background())
		require.NoError(t, err)
		require.NoError(t, lead.Resign(context.Background()))
		assert.Len(t, rec.take(t), 2, "the observer hears everything too")
		mu.Lock()
		defer mu.Unlock()
		assert.Contains(t, buf.String(), `msg="keyward: obtained" source=election key=report`)
		assert.Contains(t, buf.String(), `msg="keyward: released" source=election key=report`)
	})
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
