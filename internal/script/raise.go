package script

import (
	"context"
	_ "embed"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/keys"
)

var (
	//go:embed raise.lua
	raiseSrc string

	raiseScript = redis.NewScript(fenceSrc + raiseSrc)
)

// Raise raises the fencing counter n.Fence to fence if it is below, and returns the counter after the call (at
// least fence). A counter it raises then lives CounterTTL(ttl), as after an acquire with ttl. A quorum lock uses it
// to make a majority of its nodes remember the fence it hands out, so that a later holder's fence is larger.
func Raise(ctx context.Context, c redis.Scripter, n keys.Names, fence int64, ttl time.Duration) (int64, error) {
	res, err := raiseScript.Run(ctx, c, []string{n.Fence}, fence, CounterTTL(ttl).Milliseconds()).Int64()
	return res, Classify(err)
}
