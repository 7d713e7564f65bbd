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
	"github.com/keyward/keyward/internal/observe"
)

// take returns the events rec heard since the last take, and checks that each comes from the election "report".
func take(t *testing.T, rec *observe.Recorder) []keyward.Event {
	t.Helper()
	es := rec.Take()
	for _, e := range es {
		assert.Equal(t, "election", e.Source, "%v", e.Kind)
		assert.Equal(t, name, e.Key, "%v", e.Kind)
	}
	return es
}

func TestObserverHearsTerms(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		ctx := context.Background()
		rec := &observe.Recorder{}
		a := newCandidate(t, client(), "replica-a", election.WithObserver(rec))
		b := newCandidate(t, client(), "replica-b")

		lead, err := a.Campaign(ctx)
		require.NoError(t, err)
		assert.Equal(t, []keyward.Event{{Kind: keyward.Obtained, Source: "election", Key: name, Fence: lead.Term()},
			{Kind: keyward.Ended, Source: "election", Op: "campaign", Key: name, Fence: lead.Term()}},
			take(t, rec), "elected at once")

		time.Sleep(5 * time.Second) // renewals tell nothing
		assert.Empty(t, take(t, rec))
		require.NoError(t, lead.Resign(ctx))
		assert.Equal(t, []keyward.Event{{Kind: keyward.Released, Source: "election", Key: name, Fence: lead.Term(),
			Held: 5 * time.Second}}, take(t, rec))
		require.NoError(t, lead.Resign(ctx))
		assert.Empty(t, take(t, rec), "a second Resign tells nothing")

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
			Fence: second.Term(), Wait: 3 * time.Second}, {Kind: keyward.Ended, Source: "election", Op: "campaign",
			Key: name, Fence: second.Term(), Wait: 3 * time.Second}}, take(t, rec))
		require.NoError(t, second.Resign(ctx))
		assert.Equal(t, []keyward.EventKind{keyward.Released}, observe.Kinds(take(t, rec)))
	})
}

// The background case: a leader whose renewals fail is told each failure, then the loss of its term.
func TestObserverHearsATermLost(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		ctx := context.Background()
		rec := &observe.Recorder{}
		crashed := newCrash()
		a := newCandidate(t, client(crashed), "replica-a", election.WithObserver(rec))
		lead, err := a.Campaign(ctx)
		require.NoError(t, err)
		elected := time.Now()
		assert.Equal(t, []keyward.EventKind{keyward.Obtained, keyward.Ended}, observe.Kinds(take(t, rec)))

		crashed.On() // Redis can no longer be reached: no renewal succeeds
		<-lead.Done()
		synctest.Wait()
		events := take(t, rec)
		require.GreaterOrEqual(t, len(events), 2, "%v", observe.Kinds(events))
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
		events = take(t, rec)
		assert.Equal(t, []keyward.EventKind{keyward.Released}, observe.Kinds(events), "the loss is told once")
		assert.Equal(t, err, events[0].Err)
	})
}

// A term found taken at a renewal is lost, with no failed renewal before it; Run campaigns again.
func TestObserverHearsRunsTerms(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		rec := &observe.Recorder{}
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
		events := take(t, rec)
		assert.Equal(t, []keyward.EventKind{keyward.Obtained, keyward.Ended, keyward.Lost, keyward.Released,
			keyward.Obtained, keyward.Ended, keyward.Released}, observe.Kinds(events))
		assert.Equal(t, terms[0], events[2].Fence)
		assert.ErrorIs(t, events[2].Err, election.ErrLost)
		assert.Equal(t, time.Second/3, events[2].Held, "found taken at the first renewal")
		assert.ErrorIs(t, events[3].Err, election.ErrLost, "the lost term's resignation reports the loss")
		assert.Equal(t, terms[1], events[4].Fence)
		assert.GreaterOrEqual(t, events[4].Wait, 2*time.Second-time.Second/3, "waited for the other holder")
		assert.Equal(t, "campaign", events[5].Op, "each of Run's campaigns is a call")
		assert.NoError(t, events[6].Err)
	})
}

// The errors Run rides out, which OnError used to hear, are Error events.
func TestObserverHearsErrorsRunRidesOut(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		rec := &observe.Recorder{}
		a := newCandidate(t, client(&failRecordWrite{err: loadingError{}}), "replica-a", election.WithObserver(rec))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		err := a.Run(ctx, func(context.Context) error {
			cancel()
			return nil
		})
		require.ErrorIs(t, err, context.Canceled)
		events := take(t, rec)
		assert.Equal(t, []keyward.EventKind{keyward.Error, keyward.Obtained, keyward.Ended, keyward.Released},
			observe.Kinds(events))
		assert.NoError(t, events[2].Err, "the campaign rode the error out")
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
		rec := &observe.Recorder{}
		a := newCandidate(t, client(), "replica-a", election.WithLogger(logger), election.WithObserver(rec),
			election.WithLogger(nil))
		lead, err := a.Campaign(context.Background())
		require.NoError(t, err)
		require.NoError(t, lead.Resign(context.Background()))
		assert.Len(t, take(t, rec), 3, "the observer hears everything too: obtained, ended, released")
		mu.Lock()
		defer mu.Unlock()
		assert.Contains(t, buf.String(), `msg="keyward: obtained" source=election key=report`)
		assert.Contains(t, buf.String(), `msg="keyward: released" source=election key=report`)
	})
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
