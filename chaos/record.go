package chaos

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/keyward/keyward/internal/redistest"
)

// Mono returns the CLOCK_MONOTONIC reading in nanoseconds. Readings of different processes on one host compare.
func Mono() int64 {
	d, err := redistest.Monotonic()
	if err != nil {
		panic(fmt.Sprintf("chaos: clock_gettime(CLOCK_MONOTONIC): %v", err)) // cannot fail on Linux
	}
	return int64(d)
}

// Outcomes of an acquire attempt (Record.Outcome).
const (
	// Obtained: the lock was obtained while still valid and the critical section ran.
	Obtained = "ok"
	// ExpiredOnArrival: the lock was obtained, but its validity deadline had passed when the call returned (the
	// reply came late); the worker did not run the critical section.
	ExpiredOnArrival = "expired"
	// NotObtained: the lock was held by another (TryObtain's ErrNotObtained).
	NotObtained = "not-obtained"
	// TimedOut: Obtain waited for the whole obtain timeout without getting the lock.
	TimedOut = "timeout"
	// Failed: the attempt returned any other error (network, timeout of a command, an ambiguous acquire).
	Failed = "error"
	// Stopped: the worker was stopped (the end of the phase) while the attempt waited.
	Stopped = "stopped"
)

// Release results (Record.Release).
const (
	// Released: Release returned nil.
	Released = "ok"
	// ReleaseNotHeld: Release returned ErrNotHeld (the key had expired or was taken).
	ReleaseNotHeld = "not-held"
	// ReleaseLost: Release returned ErrLost: the lease had been lost before.
	ReleaseLost = "lost"
	// ReleaseFailed: Release returned another error; its outcome is unknown.
	ReleaseFailed = "error"
)

// A Record is one acquire attempt of a worker and, when it got the lock, its critical section and release. All
// times are Mono readings.
type Record struct {
	Worker int `json:"w"`
	// G numbers the goroutine of the worker process that made the attempt (WorkerConfig.Goroutines); Seq
	// numbers the goroutine's attempts.
	G   int `json:"g,omitempty"`
	PID int `json:"pid"`
	Seq int `json:"seq"`
	// Do: the lock was taken with Locker.Do, and the section ran as its fn (see WorkerConfig.Do): Until is when
	// fn returned, or when its context was cancelled because the lock was lost; RelCall is when fn returned.
	Do     bool   `json:"do,omitempty"`
	Call   int64  `json:"call"`  // before Obtain/TryObtain was called
	Start  int64  `json:"start"` // when it returned
	Result string `json:"outcome"`
	Err    string `json:"err,omitempty"`

	// With the lock (Obtained or ExpiredOnArrival):
	Fence int64  `json:"fence,omitempty"`
	Token string `json:"token,omitempty"`
	Until int64  `json:"until,omitempty"` // the validity deadline, Lock.Until on the monotonic clock (the last one)
	// TTL is the ttl the lock was taken with (ns; 0 in older histories: the phase's); AutoRefresh says the lock
	// was refreshed until its release, so its key may have lived until the release's end plus the ttl.
	TTL         int64 `json:"ttl,omitempty"`
	AutoRefresh bool  `json:"autoRefresh,omitempty"`

	// The critical section (Obtained):
	Read     int64  `json:"read,omitempty"`     // the counter read
	Wrote    bool   `json:"wrote,omitempty"`    // the counter was written back (read + 1)
	WStart   int64  `json:"wstart,omitempty"`   // before the fenced write
	WEnd     int64  `json:"wend,omitempty"`     // after it
	Accepted bool   `json:"accepted,omitempty"` // the fenced store accepted the write
	End      int64  `json:"end,omitempty"`      // the critical section's end
	StoreErr string `json:"storeErr,omitempty"` // an error of the storage server (none expected: it has no faults)

	// Whether the lock key still held this token, read on a direct connection after the section while the lock
	// was valid, and when that read returned.
	HeldChecked bool  `json:"heldChecked,omitempty"`
	Held        bool  `json:"held,omitempty"`
	HeldAt      int64 `json:"heldAt,omitempty"`

	// LostFired: the validity deadline had passed before Release, and Lost() was closed.
	LostFired bool   `json:"lostFired,omitempty"`
	RelCall   int64  `json:"relCall,omitempty"`
	RelEnd    int64  `json:"relEnd,omitempty"`
	Release   string `json:"released,omitempty"`
	RelErr    string `json:"relErr,omitempty"`

	// OwnKeyLeft: after an attempt that did not get the lock, the lock key held a value of this goroutine
	// of the worker, LeftValue: either the value of an earlier lock of this goroutine whose release failed, or one that
	// the failed attempt itself stored (an acquire that the server ran although the client was told otherwise).
	OwnKeyLeft bool   `json:"ownKeyLeft,omitempty"`
	LeftValue  string `json:"leftValue,omitempty"`
}

// HasLock reports whether the attempt obtained the lock (valid or not).
func (r *Record) HasLock() bool { return r.Result == Obtained || r.Result == ExpiredOnArrival }

// ReadRecords reads the JSON lines a worker wrote to path.
func ReadRecords(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Record
	sc := newScanner(f)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

func newScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return sc
}

// WriteHistory writes h to path as JSON lines: the first holds everything but the records (ttl, store, pauses,
// resets), each further line one record, as the workers log them. The rig writes each phase's history so
// (<phase>.history.jsonl, next to the workers' files); ReadHistory reads it back, for Check and Linearizable.
func WriteHistory(path string, h History) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	err = enc.Encode(h)
	for _, r := range h.Records {
		if err != nil {
			break
		}
		err = enc.Encode(r)
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadHistory reads a history that WriteHistory wrote.
func ReadHistory(path string) (History, error) {
	var h History
	f, err := os.Open(path)
	if err != nil {
		return h, err
	}
	defer f.Close()
	sc := newScanner(f)
	if !sc.Scan() {
		return h, fmt.Errorf("%s: empty history: %w", path, cmp.Or(sc.Err(), io.ErrUnexpectedEOF))
	}
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
		return h, fmt.Errorf("%s: line 1: %w", path, err)
	}
	for line := 2; sc.Scan(); line++ {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return h, fmt.Errorf("%s: line %d: %w", path, line, err)
		}
		h.Records = append(h.Records, r)
	}
	return h, sc.Err()
}
