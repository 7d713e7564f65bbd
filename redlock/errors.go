package redlock

import "github.com/keyward/keyward"

// The errors of this package are keyward's shared sentinels, so that one errors.Is check works for lock and
// redlock alike. Errors are returned wrapped, with the key and, for ErrQuorum, a *keyward.NodeError for each node
// that failed (its index, its address and its cause).
var (
	// ErrNotObtained: the lock is held by another holder on enough nodes that no majority is left.
	ErrNotObtained = keyward.ErrNotObtained
	// ErrQuorum: no majority of nodes agreed in time (too few answered, some refused, or the majority took
	// longer than the validity allows); the error carries a *keyward.NodeError for each node that failed.
	ErrQuorum = keyward.ErrQuorum
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
	// ErrInvalid: an argument is not valid (no nodes, a nil node, empty key, ttl not above the drift margin, bad
	// option).
	ErrInvalid = keyward.ErrInvalid
	// ErrClosed: the Client was closed before or while the call tried to take a lock.
	ErrClosed = keyward.ErrClosed
	// ErrWrongType: the lock key or its fencing counter holds a value of another type on some node.
	ErrWrongType = keyward.ErrWrongType
	// ErrReadOnly: a node is a read-only replica.
	ErrReadOnly = keyward.ErrReadOnly
	// ErrNoPermission: the ACL user may not run the lock's commands or touch its keys on some node.
	ErrNoPermission = keyward.ErrNoPermission
	// ErrOutOfMemory: a node refused the write because it reached maxmemory.
	ErrOutOfMemory = keyward.ErrOutOfMemory
)
