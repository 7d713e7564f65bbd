package lock

import "github.com/keyward/keyward"

// The errors of this package are keyward's shared sentinels, so that one errors.Is check works for lock and
// redlock alike. Errors are returned wrapped, with the key and the Redis error they came from.
var (
	// ErrNotObtained: the lock is held by another holder.
	ErrNotObtained = keyward.ErrNotObtained
	// ErrNotHeld: the lock is not held by this holder (released, expired, or taken by another).
	ErrNotHeld = keyward.ErrNotHeld
	// ErrLost: the lock was lost while held; also matches ErrNotHeld.
	ErrLost = keyward.ErrLost
	// ErrLeaseExpired: a loss because the holder's validity deadline passed before a refresh succeeded; matches
	// ErrLost.
	ErrLeaseExpired = keyward.ErrLeaseExpired
	// ErrGone: a loss because Redis was found no longer holding it for this holder (deleted, expired on the
	// server, taken by another); matches ErrLost.
	ErrGone = keyward.ErrGone
	// ErrInvalid: an argument is not valid (empty key, ttl not above the drift margin, nil client, bad option).
	ErrInvalid = keyward.ErrInvalid
	// ErrWrongType: the lock key or its fencing counter holds a value of another type.
	ErrWrongType = keyward.ErrWrongType
	// ErrReadOnly: the server is a read-only replica.
	ErrReadOnly = keyward.ErrReadOnly
	// ErrNoPermission: the ACL user may not run the lock's commands or touch its keys.
	ErrNoPermission = keyward.ErrNoPermission
	// ErrOutOfMemory: the server refused the write because it reached maxmemory.
	ErrOutOfMemory = keyward.ErrOutOfMemory
	// ErrClosed: the Client was closed before or during the call.
	ErrClosed = keyward.ErrClosed
)
