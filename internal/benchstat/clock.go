package benchstat

import (
	"time"

	"github.com/keyward/keyward/internal/redistest"
)

// Clock reads CLOCK_MONOTONIC, which every process on a host shares, so that the spans of holders in different
// processes can be put in one order (and checked for overlaps). Go's time.Now carries a monotonic reading too,
// but only relative to its own process; Clock ties the two together once and then costs what time.Since costs
// (no system call per reading).
type Clock struct {
	base time.Time     // a Go time, with its monotonic reading
	mono time.Duration // CLOCK_MONOTONIC at base
}

// NewClock calibrates a Clock: it reads CLOCK_MONOTONIC between two Go clock readings a few times and keeps the
// tightest pair, so the readings of two processes' Clocks agree to within a microsecond or so.
func NewClock() (*Clock, error) {
	var best Clock
	bracket := time.Duration(-1)
	for range 32 {
		before := time.Now()
		mono, err := redistest.Monotonic()
		if err != nil {
			return nil, err
		}
		after := time.Now()
		if d := after.Sub(before); bracket < 0 || d < bracket {
			bracket = d
			best = Clock{base: before.Add(d / 2), mono: mono}
		}
	}
	return &best, nil
}

// Now returns CLOCK_MONOTONIC as a time.Time (nanoseconds since the host booted, as if since the Unix epoch).
// Such times compare and subtract correctly with those of another process's Clock on the same host, and
// nothing else; they carry no monotonic reading of their own.
func (c *Clock) Now() time.Time {
	return c.At(time.Now())
}

// At converts a Go time t, taken in this process, to the Clock's time.
func (c *Clock) At(t time.Time) time.Time {
	return time.Unix(0, int64(c.mono+t.Sub(c.base)))
}

// Until returns how long it is, on the Go clock, until the Clock reads t.
func (c *Clock) Until(t time.Time) time.Duration {
	return t.Sub(c.Now())
}
