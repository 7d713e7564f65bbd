package script

import (
	"context"
	_ "embed"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/keys"
)

var (
	//go:embed giveback.lua
	giveBackSrc    string
	giveBackScript = redis.NewScript(guardSrc + giveBackSrc)
)

// GiveBack takes the waiting process waiter out of the queue of n.Lock and, when a release reserved the lock for
// it ("reserved:<waiter>"), passes the reservation on as a release would: reserved for the next process in line
// for window (DefaultClaimWindow when zero), which is told, or freed. It reports whether a reservation was given
// back. A process whose last waiter gives up calls it, so that the others do not wait out a claim window.
func GiveBack(ctx context.Context, c redis.Scripter, n keys.Names, waiter string, publish Publish, window time.Duration) (bool, error) {
	if window <= 0 {
		window = DefaultClaimWindow
	}
	res, err := giveBackScript.Run(ctx, c, []string{n.Lock, n.Channel, n.Queue}, waiter, string(publish),
		window.Milliseconds()).Int64()
	if err != nil {
		return false, Classify(err)
	}
	return res == 1, nil
}
