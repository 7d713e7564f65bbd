package keyward

import (
	"errors"
	"time"
)

var (
	// ErrNotObtained means the lock is held by another holder, so it was not obtained.
	ErrNotObtained = errors.New("keyward: not obtained: held by another")

	// ErrNotHeld means the lock is not held by this holder: it was released, it expired, or another holder
	// took it after it expired.
	ErrNotHeld = errors.New("keyward: not held")

	// ErrLost means a lock that was held has been lost while its holder still meant to hold it: its
	// validity deadline passed before a refresh succeeded, or its key was found deleted or taken by another.
	// errors.Is(err, ErrNotHeld) is true for it as well.
	ErrLost = &lostError{}

	// ErrLeaseExpired is the loss of a lock whose holder's own validity deadline passed before a refresh
	// succeeded: refreshes kept failing (Redis unreachable or too slow), the process was paused, or it held on
	// without auto-refresh. Errors matching it match ErrLost and ErrNotHeld too, and read like ErrLost's.
	ErrLeaseExpired = &lostError{reason: "lease expired"}

	// ErrGone is the loss of a lock that Redis was found no longer holding for its holder, before its validity
	// deadline: the key was deleted, expired on the server or taken by another (found by a refresh, TTL, Guard),
	// a Redlock held on fewer than a majority of its nodes, a later term of an election leads. Errors matching
	// it match ErrLost and ErrNotHeld too, and read like ErrLost's.
	ErrGone = &lostError{reason: "gone"}

	// ErrInvalid means an argument is not valid: an empty key, a ttl too small for the drift margin, a nil
	// client, a nil ctx (in every method that takes one), an option out of range.
	ErrInvalid = errors.New("keyward: invalid argument")

	// ErrWrongType means a key the lock uses holds a value of another type (Redis WRONGTYPE): some other
	// program uses the same name.
	ErrWrongType = errors.New("keyward: key holds another type")

	// ErrReadOnly means the server is a read-only replica (Redis READONLY): locks must be taken on a primary.
	ErrReadOnly = errors.New("keyward: server is read-only")

	// ErrNoPermission means the connection's ACL user may not run a command, touch a key or use a channel that
	// the operation needs (Redis NOPERM, or the refusal of a command inside a script). The README's
	// "Permissions" section gives the rule each feature needs. A refused script writes nothing.
	ErrNoPermission = errors.New("keyward: no permission")

	// ErrOutOfMemory means the server refused a write because it reached maxmemory (Redis OOM).
	ErrOutOfMemory = errors.New("keyward: server out of memory")

	// ErrClosed means the client, semaphore, election or watcher was closed before or during the operation.
	// Every operation after Close returns an error matching it, in every package.
	ErrClosed = errors.New("keyward: closed")
)

// lostError is ErrLost, which also matches ErrNotHeld, and the reasons of a loss, which match ErrLost as well.
type lostError struct{ reason string }

func (*lostError) Error() string { return "keyward: lock lost" }

func (e *lostError) Is(target error) bool {
	return target == ErrNotHeld || target == ErrLost && e.reason != ""
}

// MaxTTL is the longest ttl a lock, permit or leadership may be obtained or refreshed with: 24 h. A longer one is
// an ErrInvalid error. A ttl is how long a holder that died keeps the others out; a holder that needs the lock
// longer keeps it with refreshes (auto-refresh). Every package's MaxTTL is this one.
const MaxTTL = 24 * time.Hour
