// Package keyward holds what keyward's lock packages share: the errors they return, matched with errors.Is.
//
// keyward is a library of distributed locks on Redis:
//
//   - [github.com/keyward/keyward/lock] is the single-node lock: SET NX PX with a random token per holder,
//     token-checked release and refresh, fencing tokens, auto-refresh with a signal when the lock is lost, and
//     guarded writes that commit only while the lock is still held.
//
// Every package returns the sentinels below (its own names for them are the same values), wrapped with the
// details of what went wrong, and wraps the Redis error it got, so both errors.Is(err, keyward.ErrWrongType) and
// the Redis error's text are available.
package keyward
