package observe_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/observe"
)

func TestRecorderKeepsEveryEventInOrder(t *testing.T) {
	var r observe.Recorder // the zero value is ready
	assert.Empty(t, r.All())
	assert.Empty(t, r.Take())
	ctx := context.Background()
	r.Observe(ctx, keyward.Event{Kind: keyward.Obtained, Key: "a"})
	r.Observe(ctx, keyward.Event{Kind: keyward.WaitStarted, Key: "b"})
	r.Observe(ctx, keyward.Event{Kind: keyward.Obtained, Key: "c"})

	assert.Equal(t, []keyward.EventKind{keyward.Obtained, keyward.WaitStarted, keyward.Obtained}, r.Kinds())
	assert.Equal(t, []keyward.Event{{Kind: keyward.Obtained, Key: "a"}, {Kind: keyward.Obtained, Key: "c"}},
		r.Of(keyward.Obtained))
	assert.Empty(t, r.Of(keyward.Lost))
	all := r.All()
	all[0].Key = "changed"
	assert.Equal(t, "a", r.All()[0].Key, "All returns a copy")

	assert.Len(t, r.Take(), 3, "everything, the first time")
	assert.Empty(t, r.Take(), "nothing new")
	r.Observe(ctx, keyward.Event{Kind: keyward.Released, Key: "a"})
	assert.Equal(t, []keyward.Event{{Kind: keyward.Released, Key: "a"}}, r.Take(), "only what came since")
	assert.Len(t, r.All(), 4, "All still has what was taken")
}

func TestKindsAndSelect(t *testing.T) {
	es := []keyward.Event{{Kind: keyward.Lost, Key: "a"}, {Kind: keyward.Error}, {Kind: keyward.Lost, Key: "b"}}
	assert.Equal(t, []keyward.EventKind{keyward.Lost, keyward.Error, keyward.Lost}, observe.Kinds(es))
	assert.Equal(t, []keyward.Event{es[0], es[2]}, observe.Select(es, keyward.Lost))
	assert.Nil(t, observe.Kinds(nil))
	assert.Nil(t, observe.Select(es, keyward.Obtained))
}

func TestRecorderObservesConcurrently(t *testing.T) {
	var r observe.Recorder
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				r.Observe(context.Background(), keyward.Event{Kind: keyward.Obtained})
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			r.Take()
		}
	})
	wg.Wait()
	assert.Len(t, r.All(), 800)
}

// Wait in a bubble: the waiting goroutine is durably blocked, so the bubble's clock moves on to the event.
func TestRecorderWaitInABubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r observe.Recorder
		ctx := context.Background()
		go func() {
			time.Sleep(time.Second)
			r.Observe(ctx, keyward.Event{Kind: keyward.WaitStarted})
			time.Sleep(time.Second)
			r.Observe(ctx, keyward.Event{Kind: keyward.Obtained, Key: "first"})
			r.Observe(ctx, keyward.Event{Kind: keyward.Obtained, Key: "second"})
		}()
		start := time.Now()
		var wg sync.WaitGroup
		for range 2 { // every waiter wakes, not only one
			wg.Go(func() {
				e, err := r.Wait(ctx, keyward.Obtained)
				assert.NoError(t, err)
				assert.Equal(t, "first", e.Key)
				assert.Equal(t, 2*time.Second, time.Since(start))
			})
		}
		wg.Wait()
		e, err := r.Wait(ctx, keyward.WaitStarted)
		require.NoError(t, err)
		assert.Equal(t, keyward.WaitStarted, e.Kind, "an event heard before the call")
	})
}

func TestRecorderWaitEndsWithItsContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var r observe.Recorder
		r.Observe(context.Background(), keyward.Event{Kind: keyward.Obtained})
		cause := errors.New("test budget spent")
		ctx, cancel := context.WithTimeoutCause(context.Background(), 10*time.Second, cause)
		defer cancel()
		start := time.Now()
		_, err := r.Wait(ctx, keyward.Lost)
		require.ErrorIs(t, err, cause)
		assert.ErrorContains(t, err, "no lost event; heard [obtained]")
		assert.Equal(t, 10*time.Second, time.Since(start))
	})
}
