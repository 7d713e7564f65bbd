package semaphore

import (
	"github.com/keyward/keyward"
)

// The errors of this package are keyward's shared sentinels, so that one errors.Is check works for locks and
// semaphores alike. Errors are returned wrapped, with the semaphore's name and the Redis error they came from.
var (
	// ErrNotObtained: the semaphore has no room (TryAcquire).
	ErrNotObtained = keyward.ErrNotObtained
	// ErrNotHeld: the permit is not held (released, expired and reclaimed, or never taken).
	ErrNotHeld = keyward.ErrNotHeld
	// ErrLost: the permit was lost while held; also matches ErrNotHeld.
	ErrLost = keyward.ErrLost
	// ErrLeaseExpired: a loss because the holder's validity deadline passed before a refresh succeeded; matches
	// ErrLost.
	ErrLeaseExpired = keyward.ErrLeaseExpired
	// ErrGone: a loss because Redis was found no longer holding it for this holder (deleted, expired on the
	// server, taken by another); matches ErrLost.
	ErrGone = keyward.ErrGone
	// ErrInvalid: an argument is not valid (empty name, limit below 1, ttl not above the drift margin, nil client,
	// bad option).
	ErrInvalid = keyward.ErrInvalid
	// ErrWrongType: a key of the semaphore holds a value of another type.
	ErrWrongType = keyward.ErrWrongType
	// ErrReadOnly: the server is a read-only replica.
	ErrReadOnly = keyward.ErrReadOnly
	// ErrNoPermission: the ACL user may not run the semaphore's scripts or touch its keys.
	ErrNoPermission = keyward.ErrNoPermission
	// ErrOutOfMemory: the server refused the write because it reached maxmemory.
	ErrOutOfMemory = keyward.ErrOutOfMemory
	// ErrClosed: the Semaphore was closed before or while TryAcquire, Acquire or Do ran.
	ErrClosed = keyward.ErrClosed
)
