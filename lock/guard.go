package lock

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/script"
)

// guardAttempts bounds how often Guard starts over when the lock key changed between WATCH and EXEC while the
// lock was still held (a refresh touches the key too).
const guardAttempts = 8

// Guard runs the writes that fn queues on pipe as one MULTI/EXEC transaction that commits only while the lock
// key still holds this lock's token: the key is WATCHed, its value checked, and EXEC fails if the key changed in
// between. It is the Redis form of a compare-and-write on ownership, and it stays correct when the holder was
// paused past its ttl and another holder took the lock: the late write is refused with an error matching ErrLost.
//
// The keys fn writes must be on the same server as the lock; in Redis Cluster, in the same hash slot (give them
// the lock key's hash tag). fn may run more than once when the lock key was touched by a refresh in between;
// it should only queue commands. Reads that the writes depend on may happen before Guard: they are safe because
// the writes commit only if the lock was held throughout.
func (l *Lock) Guard(ctx context.Context, fn func(pipe redis.Pipeliner) error) error {
	for range guardAttempts {
		if err := l.lease.Check(); err != nil {
			return l.wrap(err)
		}
		err := l.c.client.Watch(ctx, func(tx *redis.Tx) error {
			v, err := tx.Get(ctx, l.names.Lock).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return script.Classify(err)
			}
			if v != l.value {
				l.lease.MarkLost(fmt.Errorf("%w: key expired or was taken by another holder", keyward.ErrLost))
				return l.lease.Err()
			}
			_, err = tx.TxPipelined(ctx, fn)
			return script.Classify(err)
		}, l.names.Lock)
		if errors.Is(err, redis.TxFailedErr) {
			continue // the key changed after WATCH: look again whether it is still ours
		}
		return l.wrap(err)
	}
	return l.wrap(fmt.Errorf("guarded write: the lock key kept changing in %d attempts", guardAttempts))
}
