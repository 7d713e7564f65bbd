package ratelimit_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/ratelimit"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperRole) != "" {
		os.Exit(m.Run()) // a child process of TestProcesses: goleak runs in the parent
	}
	goleak.VerifyTestMain(m)
}

// inBubble runs test inside a testing/synctest bubble with a miniredis whose clock is the bubble's.
func inBubble(t *testing.T, test func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client)) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		defer m.Close()
		rdb := redistest.SynctestClient(m)
		defer rdb.Close()
		test(t, m, rdb)
	})
}

func newLimiter(t *testing.T, rdb redis.UniversalClient, name string, limit ratelimit.Limit, opts ...ratelimit.Option) *ratelimit.Limiter {
	t.Helper()
	l, err := ratelimit.New(rdb, name, limit, opts...)
	require.NoError(t, err)
	return l
}

// stretched is a delay the server gave, as the client waits it: 0.1 % longer, for the rates of the clocks.
func stretched(d time.Duration) time.Duration { return d + d/1000 }

// calls counts the commands a client sends, and the scripts among them.
type calls struct{ commands, scripts atomic.Int64 }

func (c *calls) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *calls) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (c *calls) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.commands.Add(1)
		if n := cmd.Name(); n == "evalsha" || n == "eval" {
			c.scripts.Add(1)
		}
		return next(ctx, cmd)
	}
}

func TestAllowUpToTheBurstThenRetryAfter(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		lim := newLimiter(t, rdb, "api", ratelimit.PerMinute(10), ratelimit.WithPrefix("rate:"))
		assert.Equal(t, "api", lim.Name())
		assert.Equal(t, ratelimit.PerMinute(10), lim.Limit())
		for i := range 10 {
			res, err := lim.Allow(ctx)
			require.NoError(t, err)
			assert.Equal(t, 1, res.Allowed, "event %d", i)
			assert.Equal(t, 9-i, res.Remaining, "event %d", i)
			assert.Equal(t, time.Duration(-1), res.RetryAfter)
			assert.InDelta(t, time.Duration(i+1)*6*time.Second, res.ResetAfter, float64(time.Second))
			assert.Equal(t, ratelimit.PerMinute(10), res.Limit)
		}
		res, err := lim.Allow(ctx)
		require.NoError(t, err)
		assert.Zero(t, res.Allowed)
		assert.Zero(t, res.Remaining)
		assert.InDelta(t, 6*time.Second, res.RetryAfter, float64(time.Second), "the next token comes in an interval")
		assert.InDelta(t, time.Minute, res.ResetAfter, float64(time.Second))

		pttl := rdb.PTTL(ctx, "rate:api").Val()
		assert.InDelta(t, time.Minute, pttl, float64(time.Second), "the one key lives until the limiter is idle again")
		assert.Equal(t, []string{"rate:api"}, rdb.Keys(ctx, "*").Val(), "one key per limiter")
	})
}

func TestAllowNAndABurstLargerThanTheRate(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		lim := newLimiter(t, rdb, "api", ratelimit.PerSecond(10).WithBurst(50))
		res, err := lim.AllowN(ctx, 30)
		require.NoError(t, err)
		assert.Equal(t, 30, res.Allowed)
		assert.Equal(t, 20, res.Remaining)
		res, err = lim.AllowN(ctx, 21)
		require.NoError(t, err)
		assert.Zero(t, res.Allowed)
		assert.Equal(t, 20, res.Remaining, "a refusal says what is left")
		assert.Equal(t, 100*time.Millisecond, res.RetryAfter)
		res, err = lim.AllowN(ctx, 20)
		require.NoError(t, err)
		assert.Equal(t, 20, res.Allowed)

		time.Sleep(time.Second)
		res, err = lim.AllowN(ctx, 10)
		require.NoError(t, err)
		assert.Equal(t, 10, res.Allowed, "a second later, ten more")
		res, err = lim.Allow(ctx)
		require.NoError(t, err)
		assert.Zero(t, res.Allowed)

		time.Sleep(5 * time.Second)
		res, err = lim.AllowN(ctx, 50)
		require.NoError(t, err)
		assert.Equal(t, 50, res.Allowed, "after five idle seconds, the whole burst")
	})
}

// Waiters are let through in the order they asked, one interval apart, each with one round trip.
func TestWaitAdmitsInOrderAtTheRate(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		counted := &calls{}
		rdb.AddHook(counted)
		lim := newLimiter(t, rdb, "api", ratelimit.Every(10*time.Millisecond, 1))
		require.NoError(t, lim.Wait(ctx)) // loads the script
		start := time.Now()
		counted.commands.Store(0)
		const waiters = 30
		admitted := make([]time.Duration, waiters)
		var order []int
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range waiters {
			wg.Go(func() {
				assert.NoError(t, lim.Wait(ctx))
				admitted[i] = time.Since(start)
				mu.Lock()
				order = append(order, i)
				mu.Unlock()
			})
			synctest.Wait() // waiter i has its reservation before waiter i+1 asks
		}
		wg.Wait()
		for i, at := range admitted {
			assert.Equal(t, stretched(time.Duration(i+1)*10*time.Millisecond), at, "waiter %d", i)
		}
		want := make([]int, waiters)
		for i := range want {
			want[i] = i
		}
		assert.Equal(t, want, order, "in arrival order")
		assert.Equal(t, int64(waiters), counted.commands.Load(), "one call per Wait")
	})
}

// A burst of waiters that arrive at once is let through at the rate, none early, none twice.
func TestWaitWithABurst(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		lim := newLimiter(t, rdb, "api", ratelimit.PerSecond(100).WithBurst(5))
		start := time.Now()
		var mu sync.Mutex
		var at []time.Duration
		var wg sync.WaitGroup
		for range 25 {
			wg.Go(func() {
				assert.NoError(t, lim.Wait(ctx))
				mu.Lock()
				at = append(at, time.Since(start))
				mu.Unlock()
			})
		}
		wg.Wait()
		require.Len(t, at, 25)
		for i, d := range at {
			want := stretched(time.Duration(max(0, i-4)) * 10 * time.Millisecond)
			assert.Equal(t, want, d, "the first 5 at once, then one per 10 ms: event %d", i)
		}
	})
}

func TestWaitPastTheDeadlineReservesNothing(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		lim := newLimiter(t, rdb, "api", ratelimit.Every(time.Second, 1))
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		require.NoError(t, lim.Wait(ctx))
		before := rdb.Get(context.Background(), "api").Val()
		start := time.Now()
		err := lim.Wait(ctx)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, `ratelimit "api": wait: the tokens would come in 1s, after ctx's deadline: context deadline exceeded`, err.Error())
		assert.Zero(t, time.Since(start), "it does not wait for a deadline it cannot beat")
		assert.Equal(t, before, rdb.Get(context.Background(), "api").Val(), "nothing reserved")

		ctx, cancel = context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		assert.ErrorIs(t, lim.Wait(ctx), context.DeadlineExceeded, "the wait, stretched for the clocks' rates, would end after it")
		ctx, cancel = context.WithTimeout(context.Background(), stretched(time.Second)+time.Millisecond)
		defer cancel()
		require.NoError(t, lim.Wait(ctx), "a deadline after the tokens' time is enough")
		assert.Equal(t, stretched(time.Second), time.Since(start))
	})
}

// A Wait whose ctx ends gives its tokens back when nobody reserved after it, and the next waiter gets its turn.
func TestWaitCancelledGivesItsTurnBack(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		rec := &observe.Recorder{}
		lim := newLimiter(t, rdb, "api", ratelimit.Every(100*time.Millisecond, 1), ratelimit.WithObserver(rec))
		require.NoError(t, lim.Wait(context.Background()))
		start := time.Now()
		cause := errors.New("shutting down")
		ctx, cancel := context.WithCancelCause(context.Background())
		done := make(chan error)
		go func() { done <- lim.Wait(ctx) }()
		synctest.Wait()
		time.Sleep(30 * time.Millisecond)
		cancel(cause)
		err := <-done
		assert.ErrorIs(t, err, context.Canceled)
		assert.ErrorIs(t, err, cause)
		assert.Equal(t, `ratelimit "api": wait: context canceled: shutting down`, err.Error())
		assert.Equal(t, []keyward.EventKind{keyward.Ended, keyward.WaitStarted, keyward.CleanedUp, keyward.WaitEnded,
			keyward.Ended}, rec.Kinds())
		assert.ErrorIs(t, rec.Of(keyward.Ended)[1].Err, cause, "the call ends with the error it returned")
		ended := rec.Of(keyward.WaitEnded)[0]
		assert.Equal(t, 30*time.Millisecond, ended.Wait)
		assert.ErrorIs(t, ended.Err, cause)
		assert.NoError(t, rec.Of(keyward.CleanedUp)[0].Err)
		for _, e := range rec.All() {
			assert.Equal(t, "ratelimit", e.Source)
			assert.Equal(t, "api", e.Key)
		}

		require.NoError(t, lim.Wait(context.Background()))
		assert.Equal(t, 30*time.Millisecond+stretched(70*time.Millisecond), time.Since(start),
			"the cancelled turn went to the next waiter")
	})
}

// A reservation's tokens come back only while no later reservation was made: later turns cannot move.
func TestReserveAndCancel(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		lim := newLimiter(t, rdb, "api", ratelimit.Every(100*time.Millisecond, 2))
		now := lim // the limiter, for readability below
		_, err := now.AllowN(ctx, 2)
		require.NoError(t, err)

		a, err := lim.Reserve(ctx, 1)
		require.NoError(t, err)
		assert.Equal(t, 1, a.Tokens())
		assert.Equal(t, stretched(100*time.Millisecond), a.Delay())
		assert.Equal(t, time.Now().Add(stretched(100*time.Millisecond)), a.Time())
		assert.Equal(t, stretched(100*time.Millisecond)-60*time.Millisecond, a.DelayFrom(time.Now().Add(60*time.Millisecond)))
		b, err := lim.Reserve(ctx, 2)
		require.NoError(t, err)
		assert.Equal(t, stretched(300*time.Millisecond), b.Delay(), "b's two tokens come after a's")

		ok, err := a.Cancel(ctx)
		require.NoError(t, err)
		assert.False(t, ok, "b was reserved after a")
		ok, err = b.Cancel(ctx)
		require.NoError(t, err)
		assert.True(t, ok, "b is the latest")
		ok, err = b.Cancel(ctx)
		require.NoError(t, err)
		assert.False(t, ok, "once")

		c, err := lim.Reserve(ctx, 1)
		require.NoError(t, err)
		assert.Equal(t, stretched(200*time.Millisecond), c.Delay(), "b's tokens are back: c comes right after a")

		time.Sleep(stretched(200 * time.Millisecond))
		ok, err = c.Cancel(ctx)
		require.NoError(t, err)
		assert.False(t, ok, "its time has come: the tokens may have been used")

		res, err := lim.Allow(ctx)
		require.NoError(t, err)
		assert.Zero(t, res.Allowed)
	})
}

func TestReservationsOfTwoLimitersShareTheLine(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		a := newLimiter(t, rdb, "api", ratelimit.Every(time.Second, 1))
		b := newLimiter(t, rdb, "api", ratelimit.Every(time.Second, 1))
		var delays []time.Duration
		for i := range 6 {
			lim := a
			if i%2 == 1 {
				lim = b
			}
			r, err := lim.Reserve(ctx, 1)
			require.NoError(t, err)
			delays = append(delays, r.Delay())
		}
		var want []time.Duration
		for i := range 6 {
			want = append(want, stretched(time.Duration(i)*time.Second))
		}
		assert.Equal(t, want, delays)
	})
}

func TestSetLimit(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		lim := newLimiter(t, rdb, "api", ratelimit.Every(100*time.Millisecond, 1))
		delay := func() time.Duration {
			t.Helper()
			r, err := lim.Reserve(ctx, 1)
			require.NoError(t, err)
			return r.Delay()
		}
		assert.Zero(t, delay())
		assert.Equal(t, stretched(100*time.Millisecond), delay())

		require.NoError(t, lim.SetLimit(ratelimit.Every(10*time.Millisecond, 1)))
		assert.Equal(t, ratelimit.Every(10*time.Millisecond, 1), lim.Limit())
		assert.Equal(t, stretched(200*time.Millisecond), delay(), "the turns reserved under the old rate are kept: the next starts at their end")
		assert.Equal(t, stretched(210*time.Millisecond), delay(), "then one every 10 ms")

		require.NoError(t, lim.SetLimit(ratelimit.Every(time.Second, 1)))
		assert.Equal(t, stretched(220*time.Millisecond), delay(), "a slower rate: this turn is at the end of the line")
		assert.Equal(t, stretched(1220*time.Millisecond), delay(), "and the next a second after it")

		err := lim.SetLimit(ratelimit.Limit{})
		assert.ErrorIs(t, err, ratelimit.ErrInvalid)
		assert.Equal(t, ratelimit.Every(time.Second, 1), lim.Limit(), "an invalid limit leaves the old one")

		time.Sleep(3 * time.Second) // past the last turn's interval, which ends 2.22 s after the start
		require.NoError(t, lim.SetLimit(ratelimit.PerSecond(10)))
		res, err := lim.AllowN(ctx, 10)
		require.NoError(t, err)
		assert.Equal(t, 10, res.Allowed)
		require.NoError(t, lim.SetLimit(ratelimit.PerSecond(10).WithBurst(15)))
		res, err = lim.AllowN(ctx, 5)
		require.NoError(t, err)
		assert.Equal(t, 5, res.Allowed, "a larger burst lets its difference through at once")
		require.NoError(t, lim.SetLimit(ratelimit.PerSecond(10).WithBurst(5)))
		time.Sleep(500 * time.Millisecond)
		res, err = lim.Allow(ctx)
		require.NoError(t, err)
		assert.Zero(t, res.Allowed, "a smaller burst holds back what it does not allow")
		assert.Equal(t, 600*time.Millisecond, res.RetryAfter, "1.5 s of tokens taken, half a second passed, a burst of 0.5 s")
	})
}

func TestAnIdleLimiterLeavesNoKey(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
		lim := newLimiter(t, rdb, "api", ratelimit.PerSecond(10))
		_, err := lim.AllowN(context.Background(), 10)
		require.NoError(t, err)
		assert.True(t, m.Exists("api"))
		time.Sleep(999 * time.Millisecond)
		assert.True(t, m.Exists("api"))
		time.Sleep(time.Millisecond)
		assert.False(t, m.Exists("api"), "gone once the limiter has its whole burst again")
	})
}

// The server's clock decides: a client whose clock runs ahead gets nothing early.
func TestTheServersClockDecides(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
		ctx := context.Background()
		serverNow := time.Now().Add(-time.Hour) // the server is an hour behind the client
		m.SetTime(serverNow)
		lim := newLimiter(t, rdb, "api", ratelimit.Every(time.Second, 1))
		res, err := lim.Allow(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, res.Allowed)
		time.Sleep(10 * time.Second) // the client's clock moves, the server's does not
		res, err = lim.Allow(ctx)
		require.NoError(t, err)
		assert.Zero(t, res.Allowed)
		m.SetTime(serverNow.Add(time.Second))
		res, err = lim.Allow(ctx)
		require.NoError(t, err)
		assert.Equal(t, 1, res.Allowed)
	})
}

func TestBadInput(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	ctx := context.Background()
	var nilClient *redis.Client
	for name, build := range map[string]func() (*ratelimit.Limiter, error){
		"nil client": func() (*ratelimit.Limiter, error) { return ratelimit.New(nil, "a", ratelimit.PerSecond(1)) },
		"typed nil":  func() (*ratelimit.Limiter, error) { return ratelimit.New(nilClient, "a", ratelimit.PerSecond(1)) },
		"empty name": func() (*ratelimit.Limiter, error) { return ratelimit.New(rdb, "", ratelimit.PerSecond(1)) },
		"zero limit": func() (*ratelimit.Limiter, error) { return ratelimit.New(rdb, "a", ratelimit.Limit{}) },
		"rate 0":     func() (*ratelimit.Limiter, error) { return ratelimit.New(rdb, "a", ratelimit.PerSecond(0)) },
		"negative":   func() (*ratelimit.Limiter, error) { return ratelimit.New(rdb, "a", ratelimit.PerMinute(-3)) },
		"period 0":   func() (*ratelimit.Limiter, error) { return ratelimit.New(rdb, "a", ratelimit.Every(0, 1)) },
		"burst 0":    func() (*ratelimit.Limiter, error) { return ratelimit.New(rdb, "a", ratelimit.PerHour(5).WithBurst(0)) },
		"too fast":   func() (*ratelimit.Limiter, error) { return ratelimit.New(rdb, "a", ratelimit.PerSecond(2_000_000)) },
		"burst × slow": func() (*ratelimit.Limiter, error) {
			return ratelimit.New(rdb, "a", ratelimit.Every(24*time.Hour, 1_000_000))
		},
	} {
		l, err := build()
		assert.ErrorIs(t, err, ratelimit.ErrInvalid, name)
		assert.Nil(t, l, name)
	}

	lim := newLimiter(t, rdb, "api", ratelimit.PerSecond(10))
	var nilCtx context.Context
	calls := map[string]func(ctx context.Context, n int) error{
		"allow":   func(ctx context.Context, n int) error { _, err := lim.AllowN(ctx, n); return err },
		"reserve": func(ctx context.Context, n int) error { _, err := lim.Reserve(ctx, n); return err },
		"wait":    func(ctx context.Context, n int) error { return lim.WaitN(ctx, n) },
	}
	for op, call := range calls {
		for _, n := range []int{0, -1} {
			err := call(ctx, n)
			assert.ErrorIs(t, err, ratelimit.ErrInvalid, "%s %d", op, n)
			assert.NotErrorIs(t, err, ratelimit.ErrExceedsBurst)
		}
		err := call(ctx, 11)
		assert.ErrorIs(t, err, ratelimit.ErrExceedsBurst, op)
		assert.ErrorIs(t, err, ratelimit.ErrInvalid, op)
		assert.True(t, strings.HasPrefix(err.Error(), `ratelimit "api": `+op+`: `), err.Error())
		assert.ErrorIs(t, call(nilCtx, 1), ratelimit.ErrInvalid, op)
	}
	assert.Empty(t, rdb.Keys(ctx, "*").Val(), "nothing reached the server")

	r, err := lim.Reserve(ctx, 1)
	require.NoError(t, err)
	_, err = r.Cancel(nilCtx)
	assert.ErrorIs(t, err, ratelimit.ErrInvalid)
}

// A call whose ctx has ended sends nothing and returns an error with the package's shape.
func TestEndedContext(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	lim := newLimiter(t, rdb, "api", ratelimit.PerSecond(10))
	cause := errors.New("shutting down")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	_, err := lim.Allow(ctx)
	assert.ErrorIs(t, err, context.Canceled)
	assert.ErrorIs(t, err, cause)
	assert.Equal(t, `ratelimit "api": allow: context canceled: shutting down`, err.Error())
	_, err = lim.Reserve(ctx, 1)
	assert.ErrorIs(t, err, cause)
	err = lim.Wait(ctx)
	assert.ErrorIs(t, err, cause)
	assert.Empty(t, rdb.Keys(context.Background(), "*").Val())
}

// Redis errors keep their sentinel and the package's shape.
func TestWrongType(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	ctx := context.Background()
	require.NoError(t, rdb.LPush(ctx, "api", "x").Err())
	lim := newLimiter(t, rdb, "api", ratelimit.PerSecond(10))
	_, err := lim.Allow(ctx)
	assert.ErrorIs(t, err, ratelimit.ErrWrongType)
	assert.True(t, strings.HasPrefix(err.Error(), `ratelimit "api": allow: `), err.Error())
	err = lim.Wait(ctx)
	assert.ErrorIs(t, err, ratelimit.ErrWrongType)
}

func TestLimit(t *testing.T) {
	assert.Equal(t, "10/s, burst 10", ratelimit.PerSecond(10).String())
	assert.Equal(t, "100/m, burst 5", ratelimit.PerMinute(100).WithBurst(5).String())
	assert.Equal(t, "1/1m30s, burst 2", ratelimit.Every(90*time.Second, 2).String())
	assert.Equal(t, ratelimit.Limit{Rate: 6, Period: time.Hour, Burst: 6}, ratelimit.PerHour(6))
	assert.Equal(t, time.Millisecond, ratelimit.PerSecond(1000).Interval())
	assert.Equal(t, 333334*time.Microsecond, ratelimit.PerSecond(3).Interval(), "rounded up: never faster than the limit")
	assert.Equal(t, 2*time.Microsecond, ratelimit.PerSecond(700_000).Interval())
	assert.NoError(t, ratelimit.PerSecond(1_000_000).Validate())
	assert.ErrorIs(t, ratelimit.Limit{}.Validate(), ratelimit.ErrInvalid)
	assert.ErrorIs(t, ratelimit.PerSecond(1_000_001).Validate(), ratelimit.ErrInvalid)
}
