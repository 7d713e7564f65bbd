package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/script"
)

// A Reservation is tokens taken from a [Limiter] for events that may happen from [Reservation.Time] on. Its
// methods are safe for concurrent use.
type Reservation struct {
	l      *Limiter
	tokens int
	// at is the local time from which the tokens may be used: the answer's arrival plus the server's delay, so
	// never before the server's time.
	at time.Time
	// start and end are the reservation's virtual interval, in µs of the server's clock: Cancel names it.
	start, end int64

	mu   sync.Mutex
	done bool // given back, or found not to be the latest
}

// Tokens returns how many tokens were reserved.
func (r *Reservation) Tokens() int { return r.tokens }

// Time returns the local time from which the reserved events may happen. It is never before the time the server
// gave them: it counts the server's delay, stretched by 0.1 % for the rates of the clocks, from the moment its
// answer arrived.
func (r *Reservation) Time() time.Time { return r.at }

// Delay returns how long from now until the reserved events may happen; 0 when they may happen now.
func (r *Reservation) Delay() time.Duration { return r.DelayFrom(time.Now()) }

// DelayFrom returns how long from t until the reserved events may happen; 0 when they may happen at t.
func (r *Reservation) DelayFrom(t time.Time) time.Duration { return max(0, r.at.Sub(t)) }

// Cancel tells the limiter that the reserved events will not happen, and gives the tokens back when it can, in one
// round trip; it reports whether it did. It can when the reservation's time has not come yet (golang.org/x/time/
// rate's rule: once it has, the tokens may have been used, and Cancel does nothing, without a round trip) and no
// reservation was made after this one, by any process (or every later one was given back). Later reservations
// were given times after this one's, which cannot move, so the tokens stay used then; x/time/rate gives back n
// minus the tokens reserved after it, which for one token (Wait's) is the same rule. A second Cancel does
// nothing. When the round trip fails, nothing was given back as far as the caller knows, and Cancel may be called
// again; the error has the package's shape, with the operation "cancel".
func (r *Reservation) Cancel(ctx context.Context) (bool, error) {
	const op = "cancel"
	l := r.l
	if ctx == nil {
		return false, errs.NilContext("ratelimit", op, l.name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done || !time.Now().Before(r.at) {
		r.done = true
		return false, nil
	}
	if err := errs.Context(ctx, "ratelimit", op, l.name); err != nil {
		return false, err
	}
	ok, err := script.RateCancel(ctx, l.rdb, l.key, r.start, r.end)
	if err != nil {
		if ctx.Err() != nil && !script.IsReply(err) {
			return false, l.ctxErr(ctx, op, err)
		}
		return false, fmt.Errorf("ratelimit %q: %s: %w", l.name, op, err)
	}
	r.done = true
	if ok {
		// The limiter's time went back to this reservation's start: so does the latest this Limiter saw, if this
		// was it.
		l.hint.CompareAndSwap(r.end, r.start)
	}
	return ok, nil
}
