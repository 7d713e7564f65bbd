package keyward_test

// Every call of every package begins with a CallObserver's StartCall and ends with an Ended event on the context
// StartCall returned, and runs on that context in between: its Redis commands carry it, and Do's fn gets a context
// derived from it. That is what a tracer needs for the call's span to be the parent of what the call does.

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
	"github.com/keyward/keyward/ratelimit"
	"github.com/keyward/keyward/redlock"
	"github.com/keyward/keyward/semaphore"
)

// spanKey is the context key of callTracer's span numbers.
type spanKey struct{}

// callTracer numbers each call it hears begin, puts the number in the call's context, and keeps the calls and the
// number each event came with (0: an event whose context has none).
type callTracer struct {
	mu     sync.Mutex
	calls  []keyward.Call
	events []tracedEvent
}

type tracedEvent struct {
	span int
	e    keyward.Event
}

func (c *callTracer) StartCall(ctx context.Context, call keyward.Call) context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, call)
	return context.WithValue(ctx, spanKey{}, len(c.calls))
}

func (c *callTracer) Observe(ctx context.Context, e keyward.Event) {
	span, _ := ctx.Value(spanKey{}).(int)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, tracedEvent{span, e})
}

// ended returns the Ended events, each with the number of the span it came with.
func (c *callTracer) ended() []tracedEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []tracedEvent
	for _, te := range c.events {
		if te.e.Kind == keyward.Ended {
			out = append(out, te)
		}
	}
	return out
}

// commandSpans is a go-redis hook that keeps the span number of every command's context.
type commandSpans struct {
	mu    sync.Mutex
	spans map[int]int // span number → commands sent with it
}

func (h *commandSpans) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *commandSpans) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.note(ctx)
		return next(ctx, cmd)
	}
}

func (h *commandSpans) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.note(ctx)
		return next(ctx, cmds)
	}
}

func (h *commandSpans) note(ctx context.Context) {
	span, _ := ctx.Value(spanKey{}).(int)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.spans[span]++
}

func (h *commandSpans) sent(span int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.spans[span]
}

func TestEveryCallRunsOnTheContextItsObserverGave(t *testing.T) {
	hook := &commandSpans{spans: map[int]int{}}
	clients := make([]redis.UniversalClient, 4)
	for i := range clients {
		_, rdb := redistest.Miniredis(t)
		rdb.AddHook(hook)
		clients[i] = rdb
	}
	tracer := &callTracer{}
	plain := &observe.Recorder{} // a plain Observer beside it hears the same events
	locks, err := lock.New(clients[0], lock.WithObserver(tracer), lock.WithObserver(plain), lock.WithPrefix("p:"))
	require.NoError(t, err)
	defer locks.Close()
	quorum, err := redlock.New(clients[:3], redlock.WithObserver(tracer))
	require.NoError(t, err)
	defer quorum.Close()
	sem, err := semaphore.New(clients[3], "pool", 1, semaphore.WithObserver(tracer), semaphore.WithFencing())
	require.NoError(t, err)
	defer sem.Close()
	elect, err := election.New(locks.Locker(), "leader", election.WithObserver(tracer))
	require.NoError(t, err)

	ctx := context.Background()
	inFn := map[string]int{} // the span number fn's ctx carried, per package
	fn := func(pkg string) func(context.Context) error {
		return func(ctx context.Context) error {
			inFn[pkg], _ = ctx.Value(spanKey{}).(int)
			return nil
		}
	}
	l, err := locks.TryObtain(ctx, "job", time.Minute)
	require.NoError(t, err)
	_, err = locks.TryObtain(ctx, "job", time.Minute)
	require.ErrorIs(t, err, keyward.ErrNotObtained)
	require.NoError(t, l.Release(ctx))
	require.NoError(t, locks.Do(ctx, "job", time.Minute, fn("lock")))
	require.NoError(t, quorum.Do(ctx, "job", time.Minute, fn("redlock")))
	require.NoError(t, sem.Do(ctx, time.Minute, fn("semaphore")))
	lead, err := elect.Campaign(ctx)
	require.NoError(t, err)
	require.NoError(t, lead.Resign(ctx))
	_, err = locks.Obtain(ctx, "", time.Minute)
	require.ErrorIs(t, err, keyward.ErrInvalid, "a call that fails its checks is a call too")

	want := []keyward.Call{
		{Source: "lock", Op: "try obtain", Key: "p:job"},
		{Source: "lock", Op: "try obtain", Key: "p:job"},
		{Source: "lock", Op: "do", Key: "p:job"},
		{Source: "lock", Op: "obtain", Key: "p:job"},
		{Source: "redlock", Op: "do", Key: "job"},
		{Source: "redlock", Op: "obtain", Key: "job"},
		{Source: "semaphore", Op: "do", Key: "pool"},
		{Source: "semaphore", Op: "acquire", Key: "pool"},
		{Source: "election", Op: "campaign", Key: "leader"},
		{Source: "lock", Op: "obtain", Key: "p:leader"}, // the election's own obtain, through its Locker
		{Source: "lock", Op: "obtain", Key: "p:"},
	}
	assert.Equal(t, want, tracer.calls)

	// Each call ended once, on its own span, with its outcome; the inner call (Do's obtain) ended first.
	ended := tracer.ended()
	require.Len(t, ended, len(want))
	bySpan := map[int]keyward.Event{}
	for _, te := range ended {
		require.NotZero(t, te.span, "%+v ended on a context StartCall did not give", te.e)
		_, dup := bySpan[te.span]
		require.False(t, dup, "span %d ended twice", te.span)
		bySpan[te.span] = te.e
		c := tracer.calls[te.span-1]
		assert.Equal(t, c, keyward.Call{Source: te.e.Source, Op: te.e.Op, Key: te.e.Key})
	}
	assert.NoError(t, bySpan[1].Err)
	assert.Equal(t, l.Fence(), bySpan[1].Fence)
	assert.ErrorIs(t, bySpan[2].Err, keyward.ErrNotObtained)
	assert.Zero(t, bySpan[2].Fence)
	for span := 3; span <= 10; span++ {
		assert.NoError(t, bySpan[span].Err, "span %d", span)
		assert.Positive(t, bySpan[span].Fence, "span %d", span)
	}
	assert.Equal(t, bySpan[3].Fence, bySpan[4].Fence, "Do ended with the fence its obtain got")
	assert.ErrorIs(t, bySpan[11].Err, keyward.ErrInvalid)

	// The calls' commands went with their spans' contexts, and fn's ctx is derived from Do's.
	for _, span := range []int{1, 2, 4, 6, 8, 10} {
		assert.Positive(t, hook.sent(span), "commands sent on span %d (%+v)", span, tracer.calls[span-1])
	}
	assert.Equal(t, map[string]int{"lock": 3, "redlock": 5, "semaphore": 7}, inFn)

	// The events of a call came with its span too; the plain observer heard every event the tracer heard.
	for _, te := range tracer.events {
		if te.e.Kind == keyward.Obtained {
			assert.NotZero(t, te.span, "%+v", te.e)
		}
	}
	assert.Len(t, plain.Of(keyward.Ended), 6, "lock's calls: two TryObtain, Do and its Obtain, the election's, the bad one")
}

func TestDoWhoseFnPanicsEndsWithErrPanicked(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	rec := &observe.Recorder{}
	locks, err := lock.New(rdb, lock.WithObserver(rec))
	require.NoError(t, err)
	defer locks.Close()
	func() {
		defer func() { assert.Equal(t, "boom", recover()) }()
		_ = locks.Do(context.Background(), "job", time.Minute, func(context.Context) error { panic("boom") })
	}()
	ended := rec.Of(keyward.Ended)
	require.Len(t, ended, 2)
	assert.Equal(t, "obtain", ended[0].Op)
	assert.NoError(t, ended[0].Err)
	assert.Equal(t, "do", ended[1].Op)
	assert.True(t, errors.Is(ended[1].Err, observe.ErrPanicked), "%v", ended[1].Err)
}

// The rate limiter's calls begin and end the same way, and a Wait sleeps on its call's context: its events and
// the clean-up of its turn carry it.
func TestEveryRateLimitCallRunsOnTheContextItsObserverGave(t *testing.T) {
	hook := &commandSpans{spans: map[int]int{}}
	_, rdb := redistest.Miniredis(t)
	rdb.AddHook(hook)
	tracer := &callTracer{}
	waiting := make(chan struct{}, 1)
	started := keyward.ObserverFunc(func(_ context.Context, e keyward.Event) {
		if e.Kind == keyward.WaitStarted {
			waiting <- struct{}{}
		}
	})
	lim, err := ratelimit.New(rdb, "partner", ratelimit.Every(time.Hour, 1), ratelimit.WithObserver(tracer),
		ratelimit.WithObserver(started))
	require.NoError(t, err)

	ctx := context.Background()
	res, err := lim.Allow(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, res.Allowed)
	res, err = lim.Allow(ctx)
	require.NoError(t, err)
	require.Zero(t, res.Allowed, "the next token comes in an hour")
	r, err := lim.Reserve(ctx, 1)
	require.NoError(t, err)
	ok, err := r.Cancel(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- lim.Wait(wctx) }()
	<-waiting
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	_, err = lim.AllowN(ctx, 2)
	require.ErrorIs(t, err, ratelimit.ErrExceedsBurst)

	want := []keyward.Call{
		{Source: "ratelimit", Op: "allow", Key: "partner"},
		{Source: "ratelimit", Op: "allow", Key: "partner"},
		{Source: "ratelimit", Op: "reserve", Key: "partner"},
		{Source: "ratelimit", Op: "wait", Key: "partner"},
		{Source: "ratelimit", Op: "allow", Key: "partner"},
	}
	assert.Equal(t, want, tracer.calls)
	ended := tracer.ended()
	require.Len(t, ended, len(want))
	for i, te := range ended {
		require.Equal(t, i+1, te.span, "%+v ended on another call's context", te.e)
		assert.Equal(t, want[i], keyward.Call{Source: te.e.Source, Op: te.e.Op, Key: te.e.Key})
	}
	assert.NoError(t, ended[0].e.Err)
	assert.ErrorIs(t, ended[1].e.Err, keyward.ErrNotObtained, "a refused Allow ends as not obtained")
	assert.NoError(t, ended[2].e.Err)
	assert.ErrorIs(t, ended[3].e.Err, context.Canceled)
	assert.ErrorIs(t, ended[4].e.Err, keyward.ErrInvalid)
	for span := 1; span <= 4; span++ {
		assert.Positive(t, hook.sent(span), "commands sent on span %d (%+v)", span, tracer.calls[span-1])
	}
	assert.Zero(t, hook.sent(5), "a call refused before Redis sends nothing")
	assert.Positive(t, hook.sent(0), "Cancel is not a call: its script goes with the caller's context")
	for _, te := range tracer.events {
		if te.e.Kind == keyward.WaitStarted || te.e.Kind == keyward.WaitEnded || te.e.Kind == keyward.CleanedUp {
			assert.Equal(t, 4, te.span, "%+v came on the Wait's context", te.e)
		}
	}
}
