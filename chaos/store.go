package chaos

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// StoreKeys are the keys of one phase on the storage server.
type StoreKeys struct {
	// Counter is the counter the workers read, pause on, and write back +1, without any fencing.
	Counter string
	// MaxFence is the largest fencing token the fenced store accepted.
	MaxFence string
	// Log lists the accepted fenced writes in the order the store accepted them: "fence worker seq".
	Log string
}

// KeysFor returns the storage keys of the phase whose lock key is key.
func KeysFor(key string) StoreKeys {
	return StoreKeys{Counter: key + ":counter", MaxFence: key + ":max-fence", Log: key + ":accepted"}
}

// fencedWrite accepts a write only when its fencing token is larger than every token it accepted before, and
// logs it; one round trip, atomic on the storage server. Fences are below 2^53, exact in Lua's numbers.
var fencedWrite = redis.NewScript(`
local max = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) <= max then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[1] .. ' ' .. ARGV[2])
return 1
`)

// FencedWrite writes to the fenced store for the holder with fencing token fence, identified by who. It
// reports whether the store accepted it.
func FencedWrite(ctx context.Context, rdb redis.Scripter, k StoreKeys, fence int64, who string) (bool, error) {
	n, err := fencedWrite.Run(ctx, rdb, []string{k.MaxFence, k.Log}, strconv.FormatInt(fence, 10), who).Int()
	return n == 1, err
}

// Store is what the storage server holds for a phase at its end.
type Store struct {
	// Counter is the final value of the counter.
	Counter int64 `json:"counter"`
	// Log are the fences of the accepted fenced writes, in the order the store accepted them.
	Log []int64 `json:"log"`
}

// ReadStore reads the storage server's state of the phase with keys k.
func ReadStore(ctx context.Context, rdb *redis.Client, k StoreKeys) (Store, error) {
	var s Store
	n, err := rdb.Get(ctx, k.Counter).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return s, err
	}
	s.Counter = n
	entries, err := rdb.LRange(ctx, k.Log, 0, -1).Result()
	if err != nil {
		return s, err
	}
	for _, e := range entries {
		f, _, _ := strings.Cut(e, " ")
		fence, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return s, fmt.Errorf("fenced store log entry %q: %w", e, err)
		}
		s.Log = append(s.Log, fence)
	}
	return s, nil
}
