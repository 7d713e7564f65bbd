package ratelimit

import (
	"errors"

	"github.com/keyward/keyward"
)

// The errors of this package are keyward's shared sentinels, so that one errors.Is check works for every package
// of keyward, and ErrExceedsBurst. Errors are returned wrapped, with the limiter's name, the operation and the
// Redis error they came from: `ratelimit "<name>": <op>: <error>`.
var (
	// ErrInvalid: an argument is not valid (nil client, empty name, a limit whose rate, period or burst is not
	// above 0, n below 1, a nil ctx, n above the burst).
	ErrInvalid = keyward.ErrInvalid
	// ErrExceedsBurst: a call asked for more tokens than the limit's burst, which no wait can ever give. It also
	// matches ErrInvalid.
	ErrExceedsBurst = errors.New("ratelimit: more tokens than the burst")
	// ErrWrongType: the limiter's key holds a value of another type, or a string that is not a time.
	ErrWrongType = keyward.ErrWrongType
	// ErrReadOnly: the server is a read-only replica.
	ErrReadOnly = keyward.ErrReadOnly
	// ErrNoPermission: the ACL user may not run the limiter's scripts or touch its key.
	ErrNoPermission = keyward.ErrNoPermission
	// ErrOutOfMemory: the server refused the write because it reached maxmemory.
	ErrOutOfMemory = keyward.ErrOutOfMemory
)
