package ratelimit

import (
	"fmt"
	"time"

	"github.com/keyward/keyward"
)

// A Limit is a rate and a burst: Rate events per Period on average, of which up to Burst may happen at once after
// a quiet time. The events are spread evenly: one every Period/Rate (the interval), and a limiter that was idle
// lets Burst through at once. Limit has the fields of redis_rate's Limit, so that a migration keeps its limits.
type Limit struct {
	// Rate is how many events a Period allows; at least 1.
	Rate int
	// Period is the time Rate events are spread over; more than 0.
	Period time.Duration
	// Burst is how many events may happen at once; at least 1. It may be larger than Rate (a limit of 10 a
	// second that lets a client that was quiet do 100 at once), and a call cannot take more tokens than it.
	Burst int
}

// PerSecond is a limit of rate events a second, with bursts of rate.
func PerSecond(rate int) Limit { return Limit{Rate: rate, Period: time.Second, Burst: rate} }

// PerMinute is a limit of rate events a minute, with bursts of rate.
func PerMinute(rate int) Limit { return Limit{Rate: rate, Period: time.Minute, Burst: rate} }

// PerHour is a limit of rate events an hour, with bursts of rate.
func PerHour(rate int) Limit { return Limit{Rate: rate, Period: time.Hour, Burst: rate} }

// Every is a limit of one event per interval, with bursts of burst (golang.org/x/time/rate's
// NewLimiter(rate.Every(interval), burst)).
func Every(interval time.Duration, burst int) Limit {
	return Limit{Rate: 1, Period: interval, Burst: burst}
}

// WithBurst returns l with bursts of burst.
func (l Limit) WithBurst(burst int) Limit {
	l.Burst = burst
	return l
}

// String shows the limit as "10/s, burst 20" ("3/2m0s, burst 1" for periods other than a second, minute or
// hour).
func (l Limit) String() string {
	per := l.Period.String()
	switch l.Period {
	case time.Second:
		per = "s"
	case time.Minute:
		per = "m"
	case time.Hour:
		per = "h"
	}
	return fmt.Sprintf("%d/%s, burst %d", l.Rate, per, l.Burst)
}

// Interval is the time between two events at the limit's rate, Period/Rate, rounded up to a whole microsecond
// (the unit the server counts in): a limiter never lets more through than the limit says.
func (l Limit) Interval() time.Duration {
	return time.Duration(l.interval()) * time.Microsecond
}

// maxTolerance is the longest burst × interval a limit may have (about 31 years): the times the server computes
// in microseconds then stay exact in a Lua number.
const maxTolerance = 1_000_000_000_000_000 // µs

// interval is the interval in µs, rounded up; 0 for a limit that is not valid.
func (l Limit) interval() int64 {
	if l.Rate < 1 || l.Period <= 0 {
		return 0
	}
	// ceil(Period / Rate / 1 µs) without overflow: Period is at most 292 years in ns.
	per := int64(l.Period)
	rate := int64(l.Rate)
	us := per / rate / 1000
	if us*rate*1000 < per {
		us++
	}
	return us
}

// tolerance is burst × interval in µs.
func (l Limit) tolerance() int64 { return int64(l.Burst) * l.interval() }

// Validate returns nil for a usable limit, else an ErrInvalid error that says why: a rate, period or burst not
// above 0, a rate above one per microsecond, or a burst × interval above 31 years. New and SetLimit return the
// same error; Validate lets a program check a limit it read from its configuration before it needs a Limiter.
func (l Limit) Validate() error {
	switch {
	case l.Rate < 1:
		return fmt.Errorf("%w: limit %v: rate %d is below 1", keyward.ErrInvalid, l, l.Rate)
	case l.Period <= 0:
		return fmt.Errorf("%w: limit %v: period %v is not above 0", keyward.ErrInvalid, l, l.Period)
	case l.Burst < 1:
		return fmt.Errorf("%w: limit %v: burst %d is below 1", keyward.ErrInvalid, l, l.Burst)
	case l.Period/time.Duration(l.Rate) < time.Microsecond:
		return fmt.Errorf("%w: limit %v: more than one event per microsecond", keyward.ErrInvalid, l)
	case l.interval() > maxTolerance/int64(l.Burst):
		return fmt.Errorf("%w: limit %v: burst × interval is above 31 years", keyward.ErrInvalid, l)
	}
	return nil
}
