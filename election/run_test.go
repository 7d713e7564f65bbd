package election_test

import (
	"context"
	"errors"
	"strings"
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

func TestRunCampaignsAgainAfterALossAndResignsWhenCtxEnds(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		var started []election.Leader
		var causes []error
		a := newCandidate(t, client(), "replica-a", election.WithCallbacks(election.Callbacks{
			OnStartedLeading: func(l election.Leader) { started = append(started, l) },
			OnStoppedLeading: func(_ election.Leader, cause error) { causes = append(causes, cause) },
		}))
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		var terms []int64
		err := a.Run(ctx, func(leaderCtx context.Context) error {
			terms = append(terms, election.TermFrom(leaderCtx))
			if len(terms) == 1 {
				// Another program takes the lock for 2 s.
				require.NoError(t, m.Set(name, "someone else"))
				m.SetTTL(name, 2*time.Second)
				<-leaderCtx.Done()
				assert.ErrorIs(t, context.Cause(leaderCtx), election.ErrLost)
				return leaderCtx.Err()
			}
			cancel(errors.New("shutting down"))
			<-leaderCtx.Done()
			assert.EqualError(t, context.Cause(leaderCtx), "shutting down")
			return leaderCtx.Err()
		})
		assert.ErrorIs(t, err, context.Canceled, "a Run whose ctx ended returns ctx's error")
		assert.EqualError(t, err, `election "report": run: context canceled: shutting down`, "and no other")
		require.Len(t, terms, 2)
		assert.Greater(t, terms[1], terms[0])
		require.Len(t, started, 2)
		assert.Equal(t, terms, []int64{started[0].Term, started[1].Term})
		assert.Equal(t, "replica-a", started[0].Identity)
		require.Len(t, causes, 2)
		assert.ErrorIs(t, causes[0], election.ErrLost)
		assert.EqualError(t, causes[1], "shutting down")
		assert.False(t, m.Exists(name), "resigned: the lock was released")
		assert.False(t, m.Exists(recordKey), "and the record withdrawn")
	})
}

func TestRunReturnsFnsErrorAfterResigning(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		a := newCandidate(t, client(), "replica-a")
		boom := errors.New("report failed")
		err := a.Run(context.Background(), func(context.Context) error { return boom })
		assert.ErrorIs(t, err, boom)
		assert.False(t, m.Exists(name))
	})
}

func TestRunResignsWhenFnPanics(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		a := newCandidate(t, client(), "replica-a")
		assert.PanicsWithValue(t, "boom", func() {
			_ = a.Run(context.Background(), func(context.Context) error { panic("boom") })
		})
		assert.False(t, m.Exists(name))
		assert.False(t, m.Exists(recordKey))
	})
}

func TestRunStepsDownWhenFnReturnsNil(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		var mu sync.Mutex
		var newLeaders []election.Leader
		sawB := make(chan struct{})
		a := newCandidate(t, client(), "replica-a")
		b := newCandidate(t, client(), "replica-b", election.WithCallbacks(election.Callbacks{
			OnNewLeader: func(l election.Leader) {
				mu.Lock()
				defer mu.Unlock()
				newLeaders = append(newLeaders, l)
				if l.Identity == "replica-b" {
					close(sawB)
				}
			},
		}))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()

		aLeads, proceed := make(chan int64), make(chan struct{})
		var aTerms []int64
		aDone := make(chan error)
		go func() {
			aDone <- a.Run(ctx, func(leaderCtx context.Context) error {
				aTerms = append(aTerms, election.TermFrom(leaderCtx))
				if len(aTerms) > 1 {
					<-leaderCtx.Done()
					return nil
				}
				aLeads <- election.TermFrom(leaderCtx)
				<-proceed
				return nil // this term's work is done: step down
			})
		}()
		aTerm := <-aLeads

		var bTerm int64
		bDone := make(chan error)
		go func() {
			bDone <- b.Run(ctx, func(leaderCtx context.Context) error {
				bTerm = election.TermFrom(leaderCtx)
				<-sawB
				cancel()
				<-leaderCtx.Done()
				return nil
			})
		}()
		synctest.Wait() // b waits for the lock, and b's observer has seen a
		close(proceed)
		assert.ErrorIs(t, <-bDone, context.Canceled)
		assert.ErrorIs(t, <-aDone, context.Canceled)

		assert.Equal(t, []int64{aTerm}, aTerms, "the next candidate in line led, not a again")
		assert.Greater(t, bTerm, aTerm)
		assert.Equal(t, []election.Leader{
			{Identity: "replica-a", Term: aTerm, TTL: newLeaders[0].TTL},
			{Identity: "replica-b", Term: bTerm, TTL: newLeaders[1].TTL},
		}, newLeaders, "OnNewLeader saw every term, in order")
	})
}

func TestRunRetriesErrorsThatPass(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		m.SetError("LOADING Redis is loading the dataset in memory") // the lock's tries ride this out by themselves
		var errs []error
		record := &failRecordWrite{err: loadingError{}}
		a := newCandidate(t, client(record), "replica-a", election.WithObserver(keyward.ObserverFunc(
			func(_ context.Context, e keyward.Event) {
				if e.Kind == keyward.Error {
					errs = append(errs, e.Err) // the record write's error
				}
			})))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		led := false
		go func() {
			time.Sleep(5 * time.Second)
			m.SetError("") // the server is up again
		}()
		err := a.Run(ctx, func(leaderCtx context.Context) error {
			led = true
			cancel()
			return nil
		})
		assert.ErrorIs(t, err, context.Canceled)
		assert.True(t, led)
		require.Len(t, errs, 1)
		assert.Contains(t, errs[0].Error(), "LOADING")
	})
}

// failRecordWrite is a go-redis hook that fails the first write of the election's record with err.
type failRecordWrite struct {
	err  error
	done bool
}

func (h *failRecordWrite) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *failRecordWrite) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); !h.done && len(args) > 3 && args[3] == recordKey && strings.HasPrefix(cmd.Name(), "eval") {
			h.done = true
			cmd.SetErr(h.err)
			return h.err
		}
		return next(ctx, cmd)
	}
}
func (h *failRecordWrite) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// loadingError is the error reply of a server that is loading its data set.
type loadingError struct{}

func (loadingError) Error() string { return "LOADING Redis is loading the dataset in memory" }
func (loadingError) RedisError()   {}

func TestRunStopsOnErrorsThatWillNotPass(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		_, err := m.Lpush(recordKey, "another program's list")
		require.NoError(t, err)
		a := newCandidate(t, client(), "replica-a")
		err = a.Run(context.Background(), func(context.Context) error {
			t.Error("fn ran without a record")
			return nil
		})
		assert.ErrorIs(t, err, election.ErrWrongType)
		assert.True(t, strings.Contains(err.Error(), `"report"`), err.Error())
		assert.False(t, m.Exists(name), "the lock taken for the campaign was given back")
	})
}

func TestRunOnAClosedClientStops(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		rdb := client()
		a := newCandidate(t, rdb, "replica-a")
		require.NoError(t, rdb.Close())
		err := a.Run(context.Background(), func(context.Context) error { return nil })
		assert.ErrorIs(t, err, redis.ErrClosed)
	})
}
