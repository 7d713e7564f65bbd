package keywardotel

import (
	"context"
	"errors"

	"github.com/keyward/keyward"
)

// The outcomes of a call (attribute keyward.outcome).
const (
	OutcomeObtained    = "obtained"     // the call returned the lock, permit or leadership (for Do: fn ran and returned nil)
	OutcomeNotObtained = "not_obtained" // a Try… found no room: an error matching keyward.ErrNotObtained
	OutcomeCancelled   = "cancelled"    // the call's ctx ended first (cancelled, or its deadline passed)
	OutcomeError       = "error"        // any other error; error.type says which
)

// outcome classifies the error of an Ended event.
func outcome(err error) string {
	switch {
	case err == nil:
		return OutcomeObtained
	case errors.Is(err, keyward.ErrNotObtained):
		return OutcomeNotObtained
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return OutcomeCancelled
	}
	return OutcomeError
}

// errorTypes maps the library's sentinels to the values of error.type, in the order they are tried.
var errorTypes = []struct {
	err  error
	name string
}{
	{keyward.ErrInvalid, "invalid"},
	{keyward.ErrClosed, "closed"},
	{keyward.ErrNoPermission, "no_permission"},
	{keyward.ErrWrongType, "wrong_type"},
	{keyward.ErrReadOnly, "read_only"},
	{keyward.ErrOutOfMemory, "out_of_memory"},
	{keyward.ErrQuorum, "quorum"},
	{keyward.ErrNotHeld, "not_held"}, // ErrLost matches it too: a Do whose lock was lost
}

// errorTypeOther is error.type for an error that matches none of the library's sentinels (the OpenTelemetry
// semantic conventions' fallback value).
const errorTypeOther = "_OTHER"

// errorType returns the value of error.type for err: the name of the keyward sentinel it matches, or "_OTHER".
func errorType(err error) string {
	for _, t := range errorTypes {
		if errors.Is(err, t.err) {
			return t.name
		}
	}
	return errorTypeOther
}

// The reasons a lock, permit or leadership was lost (attribute keyward.reason).
const (
	// ReasonExpired: the holder's own validity deadline passed before a refresh succeeded (keyward.ErrLeaseExpired):
	// refreshes kept failing (Redis unreachable, loading, too slow), or the process was paused, or it held on
	// without auto-refresh.
	ReasonExpired = "expired"
	// ReasonTaken: Redis was found no longer holding it for this holder (keyward.ErrGone): the key was gone or
	// held by another (a refresh, TTL, Guard or release found it), a redlock held on fewer than a majority of its
	// nodes, a later term of the election leads.
	ReasonTaken = "taken"
	// ReasonUnknown: a loss whose error matches neither.
	ReasonUnknown = "unknown"
)

// lostReason classifies the error of a Lost event by the reason it matches: keyward.ErrLeaseExpired or
// keyward.ErrGone.
func lostReason(err error) string {
	switch {
	case errors.Is(err, keyward.ErrLeaseExpired):
		return ReasonExpired
	case errors.Is(err, keyward.ErrGone):
		return ReasonTaken
	}
	return ReasonUnknown
}

// settles reports whether a Released event with err ends the holding: nil (released), or the lock was found
// not held (expired, taken, lost). After any other error the outcome is unknown and the library still regards
// the lock as held, until a retried release or its validity deadline (a Lost event) settles it.
func settles(err error) bool {
	return err == nil || errors.Is(err, keyward.ErrNotHeld)
}
