package script

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed ratelimit_take.lua
	rateTakeSrc string
	//go:embed ratelimit_cancel.lua
	rateCancelSrc string

	rateTakeScript   = redis.NewScript(rateTakeSrc)
	rateCancelScript = redis.NewScript(rateCancelSrc)
)

// RateTake is one request to a rate limiter: n tokens of a limit whose tokens are Interval apart, of which
// Tolerance's worth may be used at once (burst × interval). Times are in whole microseconds.
type RateTake struct {
	Interval  int64
	Tolerance int64
	N         int64
	// MaxWait is how long the tokens may wait: 0 takes them only when they are available now (Allow), -1 takes
	// them whatever the wait (Reserve).
	MaxWait int64
	// Hint is the latest end of a reservation the caller's process saw: the server starts no reservation before
	// it, should it have lost its state (a restart without persistence). 0: none.
	Hint int64
}

// RateAnswer is a rate limiter's decision. Times are in microseconds of the server's clock.
type RateAnswer struct {
	// Taken is true when the tokens were taken (reserved, when Delay > 0).
	Taken bool
	// Remaining is how many more tokens could be taken at once after this decision.
	Remaining int64
	// Delay is how long from the decision until the tokens may be used: the wait of a reservation, or how long a
	// refused request would have had to wait.
	Delay int64
	// ResetAfter is how long from the decision until the whole burst is available again.
	ResetAfter int64
	// Start and End are the reservation's virtual interval, which Cancel names (0 when not Taken).
	Start, End int64
}

// RateTakeTokens runs the rate limiter's decision on key (see ratelimit_take.lua).
func RateTakeTokens(ctx context.Context, c redis.Scripter, key string, t RateTake) (RateAnswer, error) {
	res, err := rateTakeScript.Run(ctx, c, []string{key}, t.Interval, t.Tolerance, t.N, t.MaxWait, t.Hint).Int64Slice()
	if err != nil {
		return RateAnswer{}, Classify(err)
	}
	if len(res) != 6 || res[0] < 0 || res[0] > 1 {
		return RateAnswer{}, fmt.Errorf("keyward: rate limit script answered %v", res)
	}
	return RateAnswer{Taken: res[0] == 1, Remaining: res[1], Delay: res[2], ResetAfter: res[3], Start: res[4],
		End: res[5]}, nil
}

// RateCancel gives back the tokens of the reservation [start, end) on key if no reservation was made after it (its
// end is still the limiter's TAT), and reports whether it did.
func RateCancel(ctx context.Context, c redis.Scripter, key string, start, end int64) (bool, error) {
	res, err := rateCancelScript.Run(ctx, c, []string{key}, start, end).Int64()
	if err != nil {
		return false, Classify(err)
	}
	return res == 1, nil
}
