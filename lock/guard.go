package lock

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/script"
)

// guardAttempts bounds how often Guard starts over when the lock key changed between WATCH and EXEC while the
// lock was still held (a refresh touches the key too).
const guardAttempts = 8

// Guard runs the writes that fn queues on pipe as one MULTI/EXEC transaction that commits only while the lock
// key still holds this lock's token: the key is WATCHed, its value checked, and EXEC fails if the key changed in
// between. It is the Redis form of a compare-and-write on ownership, and it stays correct when the holder was
// paused past its ttl and another holder took the lock: the late write is refused with an error matching ErrLost.
// When ctx ends first, the error matches ctx's error and its cause.
//
// The keys fn writes must be on the same server as the lock; in Redis Cluster, in the same hash slot (give them
// the lock key's hash tag). On a Cluster, a write outside that slot makes Redis discard the whole transaction;
// Guard then returns an error matching ErrInvalid that names the refusal (CROSSSLOT, or MOVED for a slot of
// another node), nothing is written, and the lock is still held. fn may run more than once when the lock key was touched by a refresh in between;
// it should only queue commands. Reads that the writes depend on may happen before Guard: they are safe because
// the writes commit only if the lock was held throughout.
func (l *Lock) Guard(ctx context.Context, fn func(pipe redis.Pipeliner) error) error {
	if ctx == nil {
		return errs.NilContext("lock", "guard", l.key)
	}
	if err := l.checkTx(ctx); err != nil {
		return l.fail(ctx, "guard", err)
	}
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
				l.lease.MarkLost(fmt.Errorf("%w: key expired or was taken by another holder", keyward.ErrGone))
				return l.lease.Err()
			}
			cmds, err := tx.TxPipelined(ctx, fn)
			return guardError(cmds, err)
		}, l.names.Lock)
		if errors.Is(err, redis.TxFailedErr) {
			continue // the key changed after WATCH: look again whether it is still ours
		}
		var reply redis.Error
		if errors.As(err, &reply) && !classified(err) {
			err = script.Classify(err) // WATCH's own refusal (NOPERM), which go-redis returns as it is
		}
		return l.fail(ctx, "guard", err)
	}
	return l.wrap(fmt.Errorf("guarded write: the lock key kept changing in %d attempts", guardAttempts))
}

// guardError says why a guarded transaction failed. Redis refuses a transaction whose queued commands it
// rejected with a bare "EXECABORT Transaction discarded because of previous errors"; the reason is the queued
// command's own error, which go-redis keeps on that command, so it is reported (classified) instead. A write
// outside the lock key's hash slot — CROSSSLOT on one Cluster node, or MOVED/ASK to another node — is a misuse of
// Guard, not a passing fault: it matches ErrInvalid and names the cause.
func guardError(cmds []redis.Cmder, err error) error {
	if err == nil {
		return nil
	}
	if redis.IsExecAbortError(err) {
		for _, c := range cmds {
			if cerr := c.Err(); cerr != nil && !redis.IsExecAbortError(cerr) {
				err = fmt.Errorf("%w (the transaction was discarded)", cerr)
				break
			}
		}
	}
	if isSlotError(err) {
		return fmt.Errorf("%w: guarded writes must be in the lock key's cluster slot (give their keys the lock "+
			"key's hash tag): %w", keyward.ErrInvalid, err)
	}
	return script.Classify(err)
}

// isSlotError reports whether err is a Redis Cluster refusal of a key outside the connection's slot: CROSSSLOT
// (another slot of the same node), MOVED or ASK (a slot of another node).
func isSlotError(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	for _, prefix := range []string{"CROSSSLOT", "MOVED ", "ASK "} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}

// classified reports whether err already matches one of the sentinels script.Classify gives.
func classified(err error) bool {
	return errors.Is(err, keyward.ErrNoPermission) || errors.Is(err, keyward.ErrWrongType) ||
		errors.Is(err, keyward.ErrReadOnly) || errors.Is(err, keyward.ErrOutOfMemory)
}

// checkTx makes sure, once per Client, that the user may run MULTI and EXEC before Guard queues any write. A user
// refused MULTI would otherwise have the queued writes run at once, outside any transaction and whether or not
// the lock is still held (Redis answers MULTI with NOPERM and then executes the commands that follow it). The
// check is a transaction that only reads the lock key: refused, it writes nothing either.
func (l *Lock) checkTx(ctx context.Context) error {
	if l.c.txAllowed.Load() {
		return nil
	}
	_, err := l.c.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Get(ctx, l.names.Lock)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return script.Classify(err)
	}
	l.c.txAllowed.Store(true)
	return nil
}
