package script_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/script"
)

// A limit of one token per 100 ms with bursts of 3, in µs.
var tenPerSecond = script.RateTake{Interval: 100_000, Tolerance: 300_000, N: 1}

// frozen returns a miniredis whose clock stands at a whole second, and a client to it.
func frozen(t *testing.T) (*miniredis.Miniredis, *redis.Client, int64) {
	m, rdb := redistest.Miniredis(t)
	now := time.Unix(1_800_000_000, 0)
	m.SetTime(now)
	return m, rdb, now.UnixMicro()
}

func take(t *testing.T, rdb *redis.Client, r script.RateTake) script.RateAnswer {
	t.Helper()
	a, err := script.RateTakeTokens(context.Background(), rdb, "api", r)
	require.NoError(t, err)
	return a
}

func tat(t *testing.T, rdb *redis.Client) int64 {
	t.Helper()
	v, err := rdb.Get(context.Background(), "api").Result()
	require.NoError(t, err)
	n, err := strconv.ParseInt(v, 10, 64)
	require.NoError(t, err, "the TAT is an integer string: %q", v)
	return n
}

// GCRA, step by step, on a clock that stands still: a burst, then refusals that say how long to wait, and
// reservations that each wait one interval more than the last.
func TestRateTakeBurstThenInterval(t *testing.T) {
	_, rdb, now := frozen(t)
	for i := range 3 {
		a := take(t, rdb, tenPerSecond)
		assert.Equal(t, script.RateAnswer{Taken: true, Remaining: int64(2 - i), Delay: 0,
			ResetAfter: int64(i+1) * 100_000, Start: now + int64(i)*100_000, End: now + int64(i+1)*100_000}, a, "token %d", i)
	}
	assert.Equal(t, now+300_000, tat(t, rdb))

	allow := tenPerSecond
	allow.MaxWait = 0
	a := take(t, rdb, allow)
	assert.Equal(t, script.RateAnswer{Remaining: 0, Delay: 100_000, ResetAfter: 300_000}, a, "refused: wait one interval")
	assert.Equal(t, now+300_000, tat(t, rdb), "a refusal writes nothing")

	reserve := tenPerSecond
	reserve.MaxWait = -1
	for i := range 3 {
		a := take(t, rdb, reserve)
		assert.True(t, a.Taken)
		assert.Equal(t, int64(i+1)*100_000, a.Delay, "reservation %d waits one interval more", i)
		assert.Equal(t, now+int64(i+4)*100_000, a.End)
	}
	bounded := tenPerSecond
	bounded.MaxWait = 399_999
	a = take(t, rdb, bounded)
	assert.False(t, a.Taken, "the next would wait 400 ms")
	assert.Equal(t, int64(400_000), a.Delay)
	bounded.MaxWait = 400_000
	assert.True(t, take(t, rdb, bounded).Taken)

	pttl := rdb.PTTL(context.Background(), "api").Val()
	assert.Equal(t, 700*time.Millisecond, pttl, "the key lives until the TAT passes")
}

func TestRateTakeN(t *testing.T) {
	_, rdb, now := frozen(t)
	r := tenPerSecond
	r.N = 3
	a := take(t, rdb, r)
	assert.Equal(t, script.RateAnswer{Taken: true, Remaining: 0, ResetAfter: 300_000, Start: now, End: now + 300_000}, a)
	r.N, r.MaxWait = 2, 0
	a = take(t, rdb, r)
	assert.Equal(t, script.RateAnswer{Delay: 200_000, ResetAfter: 300_000}, a)
}

// After an idle time the TAT is in the past: the whole burst is there again, never more.
func TestRateTakeIdle(t *testing.T) {
	m, rdb, now := frozen(t)
	take(t, rdb, tenPerSecond)
	m.SetTime(time.UnixMicro(now + 10_000_000))
	m.FastForward(10 * time.Second)
	assert.Zero(t, rdb.Exists(context.Background(), "api").Val(), "an idle limiter leaves no key")
	a := take(t, rdb, tenPerSecond)
	assert.Equal(t, int64(2), a.Remaining)
	assert.Equal(t, now+10_000_000, a.Start)
}

// A hint above the server's TAT (the server lost it) is where the next reservation starts.
func TestRateTakeHint(t *testing.T) {
	_, rdb, now := frozen(t)
	r := tenPerSecond
	r.Hint, r.MaxWait = now+1_000_000, -1
	a := take(t, rdb, r)
	assert.Equal(t, now+1_000_000, a.Start)
	assert.Equal(t, int64(800_000), a.Delay, "it waits until its interval is within the tolerance")
	r.Hint = now
	a = take(t, rdb, r)
	assert.Equal(t, now+1_100_000, a.Start, "a hint below the TAT changes nothing")
}

// Cancel gives the tokens back only while the reservation is the latest.
func TestRateCancel(t *testing.T) {
	_, rdb, now := frozen(t)
	ctx := context.Background()
	r := tenPerSecond
	r.MaxWait = -1
	var as []script.RateAnswer
	for range 5 {
		as = append(as, take(t, rdb, r))
	}
	ok, err := script.RateCancel(ctx, rdb, "api", as[3].Start, as[3].End)
	require.NoError(t, err)
	assert.False(t, ok, "a reservation was made after it")
	assert.Equal(t, now+500_000, tat(t, rdb))

	ok, err = script.RateCancel(ctx, rdb, "api", as[4].Start, as[4].End)
	require.NoError(t, err)
	assert.True(t, ok)
	assert.Equal(t, now+400_000, tat(t, rdb))
	ok, err = script.RateCancel(ctx, rdb, "api", as[3].Start, as[3].End)
	require.NoError(t, err)
	assert.True(t, ok, "the later one was given back: this one is the latest again")
	assert.Equal(t, now+300_000, tat(t, rdb))
	ok, err = script.RateCancel(ctx, rdb, "api", as[3].Start, as[3].End)
	require.NoError(t, err)
	assert.False(t, ok, "given back once")

	for i := 2; i >= 0; i-- {
		ok, err = script.RateCancel(ctx, rdb, "api", as[i].Start, as[i].End)
		require.NoError(t, err)
		assert.True(t, ok)
	}
	assert.Equal(t, now, tat(t, rdb), "back to an empty limiter")
	assert.Equal(t, time.Millisecond, rdb.PTTL(ctx, "api").Val(), "a TAT that is not ahead expires at once")
	ok, err = script.RateCancel(ctx, rdb, "api", as[0].Start, as[0].End)
	require.NoError(t, err)
	assert.False(t, ok)
}

func TestRateWrongType(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		for name, set := range map[string]func() error{
			"a list":   func() error { return rdb.RPush(ctx, "api", "x").Err() },
			"not time": func() error { return rdb.Set(ctx, "api", "soon", 0).Err() },
		} {
			require.NoError(t, rdb.Del(ctx, "api").Err())
			require.NoError(t, set(), name)
			before := rdb.Dump(ctx, "api").Val()
			_, err := script.RateTakeTokens(ctx, rdb, "api", tenPerSecond)
			assert.ErrorIs(t, err, keyward.ErrWrongType, name)
			_, err = script.RateCancel(ctx, rdb, "api", 1, 2)
			assert.ErrorIs(t, err, keyward.ErrWrongType, name)
			assert.Equal(t, before, rdb.Dump(ctx, "api").Val(), "%s: left as it was", name)
		}
	})
}

// On a real server, with its running clock: the decision's times follow the server's TIME.
func TestRateTakeOnTheServersClock(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		before := serverMicros(t, rdb)
		a := take(t, rdb, tenPerSecond)
		after := serverMicros(t, rdb)
		assert.True(t, a.Taken)
		assert.GreaterOrEqual(t, a.Start, before)
		assert.LessOrEqual(t, a.Start, after)
		assert.Equal(t, a.Start+100_000, a.End)
		assert.Equal(t, a.End, tat(t, rdb))
		pttl := rdb.PTTL(context.Background(), "api").Val()
		assert.Greater(t, pttl, time.Duration(0))
		assert.LessOrEqual(t, pttl, 101*time.Millisecond)
	})
}
