package chaos_test

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/chaos"
)

const ms = int64(time.Millisecond)

// section returns the record of a worker that obtained the lock at start (called 1 ms before), with fence,
// ran its section until end, wrote the fenced store at end (accepted or not), and released at end.
func section(w, seq int, start, end, fence int64, accepted bool) chaos.Record {
	return chaos.Record{
		Worker: w, Seq: seq, Call: start - ms, Start: start, Result: chaos.Obtained,
		Fence: fence, Token: string(rune('a'+w)) + string(rune('0'+seq)), Until: start + 240*ms,
		Wrote: true, WStart: end - ms, WEnd: end, Accepted: accepted, End: end,
		RelCall: end, RelEnd: end + ms, Release: chaos.Released,
	}
}

func TestCheckCleanHistory(t *testing.T) {
	h := chaos.History{TTL: 250 * time.Millisecond, Store: chaos.Store{Counter: 3, Log: []int64{10, 20, 30}}}
	h.Records = []chaos.Record{
		section(0, 0, 0, 10*ms, 10, true),
		section(1, 0, 12*ms, 20*ms, 20, true),
		section(0, 1, 22*ms, 30*ms, 30, true),
		{Worker: 1, Seq: 1, Call: 13 * ms, Start: 19 * ms, Result: chaos.NotObtained},
	}
	v := chaos.Check(h)
	assert.Equal(t, 4, v.Attempts)
	assert.Equal(t, 3, v.Sections)
	assert.Equal(t, 1, v.NotObtained)
	assert.Equal(t, 3, v.Accepted)
	assert.Zero(t, v.Overlaps)
	assert.Zero(t, v.ValidityOverlaps)
	assert.Zero(t, v.LostUpdates)
	assert.Zero(t, v.StaleAccepted)
	assert.Zero(t, v.FenceViolations)
	assert.Equal(t, chaos.Linear, v.Linearizable)
}

func TestCheckFindsViolations(t *testing.T) {
	ttl := 250 * time.Millisecond
	tests := []struct {
		name    string
		records []chaos.Record
		store   chaos.Store
		pauses  []chaos.Pause
		check   func(t *testing.T, v chaos.Verdict)
	}{
		{
			name: "two holders at once",
			records: []chaos.Record{
				section(0, 0, 0, 20*ms, 10, true),
				section(1, 0, 10*ms, 30*ms, 20, true),
			},
			store: chaos.Store{Counter: 1, Log: []int64{10, 20}},
			check: func(t *testing.T, v chaos.Verdict) {
				assert.Equal(t, 1, v.Overlaps, "one stale holder")
				assert.Equal(t, 1, v.ValidityOverlaps, "both believed they held it")
				assert.Equal(t, 1, v.LostUpdates, "two increments, counter 1")
				assert.Equal(t, chaos.NotLinear, v.Linearizable, "a mutex cannot be acquired while held")
			},
		},
		{
			name: "a stale write accepted",
			records: []chaos.Record{
				section(0, 0, 0, 10*ms, 20, true),
				section(1, 0, 12*ms, 20*ms, 10, true),
			},
			store: chaos.Store{Counter: 2, Log: []int64{20, 10}},
			check: func(t *testing.T, v chaos.Verdict) {
				assert.Equal(t, 2, v.StaleAccepted, "in the store's order and in real time")
				assert.Equal(t, 1, v.FenceViolations, "the later holder got the smaller fence")
				assert.Equal(t, chaos.NotLinear, v.Linearizable)
			},
		},
		{
			name: "a release that deleted the next holder's key",
			records: func() []chaos.Record {
				a := section(0, 0, 0, 10*ms, 10, true)
				a.Until = 5 * ms // expired during the section: the next holder may take over
				a.RelCall, a.RelEnd = 30*ms, 31*ms
				b := section(1, 0, 20*ms, 40*ms, 20, true)
				return []chaos.Record{a, b}
			}(),
			store: chaos.Store{Counter: 2, Log: []int64{10, 20}},
			check: func(t *testing.T, v chaos.Verdict) {
				assert.Zero(t, v.ValidityOverlaps, "the first holder's validity had ended")
				assert.Equal(t, chaos.NotLinear, v.Linearizable, "its release reported success with another holder")
			},
		},
		{
			name: "a holder paused past its ttl, told it lost the lock",
			records: func() []chaos.Record {
				a := section(0, 0, 0, 800*ms, 10, false)
				a.Until = 240 * ms
				a.LostFired, a.Release, a.RelCall, a.RelEnd = true, chaos.ReleaseLost, 800*ms, 801*ms
				b := section(1, 0, 300*ms, 310*ms, 20, true)
				return []chaos.Record{a, b}
			}(),
			store:  chaos.Store{Counter: 1, Log: []int64{20}},
			pauses: []chaos.Pause{{Token: "a0", Stop: 5 * ms, Cont: 755 * ms}},
			check: func(t *testing.T, v chaos.Verdict) {
				assert.Equal(t, 1, v.Overlaps, "the paused section overlaps the next")
				assert.Zero(t, v.ValidityOverlaps)
				assert.Zero(t, v.StaleAccepted, "the store refused the late write")
				assert.Equal(t, 1, v.Rejected)
				assert.Equal(t, 1, v.LostUpdates, "the unfenced counter lost an update")
				assert.Equal(t, 1, v.PausedHolders)
				assert.Equal(t, 1, v.PausedHoldersToldLost)
				assert.Equal(t, chaos.Linear, v.Linearizable, "an expiry after the validity deadline explains it")
			},
		},
		{
			name: "a lock that came back expired overlaps nothing",
			records: func() []chaos.Record {
				a := section(0, 0, 100*ms, 110*ms, 20, true)
				// Paused before its obtain returned: the key it got expired long ago, its validity is empty.
				b := chaos.Record{Worker: 1, Call: 0, Start: 105 * ms, Result: chaos.ExpiredOnArrival, Token: "late",
					Fence: 10, Until: 40 * ms, LostFired: true, RelCall: 106 * ms, RelEnd: 107 * ms, Release: chaos.ReleaseLost}
				return []chaos.Record{a, b}
			}(),
			store: chaos.Store{Counter: 1, Log: []int64{20}},
			check: func(t *testing.T, v chaos.Verdict) {
				assert.Zero(t, v.ValidityOverlaps)
				assert.Zero(t, v.FenceViolations, "its acquire was called before the other's returned")
				assert.Equal(t, 1, v.ExpiredOnArrival)
				assert.Equal(t, chaos.Linear, v.Linearizable)
			},
		},
		{
			name: "an acquire that took the lock but was reported refused",
			records: []chaos.Record{
				{Worker: 0, Call: 0, Start: 5 * ms, Result: chaos.NotObtained, OwnKeyLeft: true, LeftValue: "x pid=1"},
				{Worker: 0, Seq: 1, Call: 6 * ms, Start: 7 * ms, Result: chaos.NotObtained, OwnKeyLeft: true, LeftValue: "x pid=1"},
				{Worker: 1, Call: 0, Start: 5 * ms, Result: chaos.Failed, OwnKeyLeft: true, LeftValue: "y pid=2"},
			},
			check: func(t *testing.T, v chaos.Verdict) {
				assert.Equal(t, 1, v.OwnKeyLeftAfterRefusal, "counted once")
				assert.Equal(t, 1, v.OwnKeyLeftAfterError)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, chaos.Check(chaos.History{Records: tt.records, Store: tt.store, Pauses: tt.pauses, TTL: ttl}))
		})
	}
}

// TestCheckHandOffGaps feeds the checker releases with and without a waiter, hand-offs through Redis and within a
// process (the successor's obtain returns before the release does), and a wait cut short by the phase's end.
func TestCheckHandOffGaps(t *testing.T) {
	ttl := 2 * time.Second
	waiting := func(w, g int, call, start int64, result string) chaos.Record {
		return chaos.Record{Worker: w, G: g, Call: call, Start: start, Result: result}
	}
	tests := []struct {
		name    string
		records []chaos.Record
		n       int
		gap     time.Duration
	}{
		{
			name: "nobody waits",
			records: []chaos.Record{
				section(0, 0, 0, 10*ms, 10, true),
				section(1, 0, 100*ms, 110*ms, 20, true),
			},
		},
		{
			name: "a waiter obtains 4 ms after the release returned",
			records: []chaos.Record{
				section(0, 0, 0, 10*ms, 10, true), // released 10–11 ms
				func() chaos.Record {
					r := section(1, 0, 15*ms, 20*ms, 20, true)
					r.Call = 2 * ms
					return r
				}(),
			},
			n: 1, gap: 4 * time.Millisecond,
		},
		{
			name: "a hand-over within a process: the successor returns before the release does",
			records: []chaos.Record{
				section(0, 0, 0, 10*ms, 10, true), // released 10–11 ms
				func() chaos.Record {
					r := section(0, 0, 10*ms+ms/2, 20*ms, 20, true)
					r.G, r.Call = 1, 2*ms
					return r
				}(),
			},
			n: 1, gap: 0,
		},
		{
			name: "a lost wake-up: the waiter obtains a ttl later",
			records: []chaos.Record{
				section(0, 0, 0, 10*ms, 10, true),
				func() chaos.Record {
					r := section(1, 0, 11*ms+int64(ttl), 20*ms+int64(ttl), 20, true)
					r.Call = 2 * ms
					return r
				}(),
			},
			n: 1, gap: ttl,
		},
		{
			name: "a lost wake-up cut short by the phase's end",
			records: []chaos.Record{
				section(0, 0, 0, 10*ms, 10, true),
				waiting(1, 0, 2*ms, 811*ms, chaos.Stopped),
			},
			n: 1, gap: 800 * time.Millisecond,
		},
		{
			name: "a refused try does not wait",
			records: []chaos.Record{
				section(0, 0, 0, 10*ms, 10, true),
				waiting(1, 0, 2*ms, 811*ms, chaos.NotObtained),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := chaos.Check(chaos.History{TTL: ttl, Records: tt.records})
			assert.Equal(t, tt.n, v.HandOffs, "hand-offs")
			assert.Equal(t, tt.gap, v.MaxHandOffGap, "max gap")
		})
	}
}

// TestCheckGoroutinesOfOneWorker: records of two goroutines of one worker process, one of which hands the lock
// to the other, are as distinct as those of two processes: a successor that got its predecessor's fence is a
// fence violation and illegal for porcupine.
func TestCheckGoroutinesOfOneWorker(t *testing.T) {
	a := section(0, 0, 0, 10*ms, 10, true)
	b := section(0, 0, 10*ms+ms/2, 20*ms, 20, true)
	b.G, b.Call, b.Token = 1, 5*ms, "b"
	v := chaos.Check(chaos.History{TTL: 250 * time.Millisecond, Records: []chaos.Record{a, b},
		Store: chaos.Store{Counter: 2, Log: []int64{10, 20}}})
	assert.Zero(t, v.FenceViolations)
	assert.Equal(t, chaos.Linear, v.Linearizable)

	b.Fence, b.Accepted = a.Fence, false // the hand-over did not advance the fence
	v = chaos.Check(chaos.History{TTL: 250 * time.Millisecond, Records: []chaos.Record{a, b},
		Store: chaos.Store{Counter: 2, Log: []int64{10}}})
	assert.Equal(t, 1, v.FenceViolations)
	assert.Equal(t, chaos.NotLinear, v.Linearizable)
}

// Histories recorded by the rig (testdata/README.md) keep their verdicts: one from a fault-free phase, one from
// the same phase with a bug injected in the acquire script.
func TestRecordedHistories(t *testing.T) {
	t.Run("linearizable", func(t *testing.T) {
		h, err := chaos.ReadHistory("testdata/baseline.history.jsonl")
		require.NoError(t, err)
		require.Len(t, h.Records, 34)
		v := chaos.Check(h)
		assert.Equal(t, 27, v.Sections)
		assert.Equal(t, v.Sections, v.Accepted, "every fenced write accepted")
		for name, n := range map[string]int{
			"overlaps": v.Overlaps, "validity overlaps": v.ValidityOverlaps, "lost updates": v.LostUpdates,
			"stale writes accepted": v.StaleAccepted, "fence violations": v.FenceViolations,
			"sections under an expired lock": v.SectionsExpired, "keys lost while valid": v.KeyLostWhileValid,
			"errors": v.Errors,
		} {
			assert.Zero(t, n, name)
		}
		assert.Equal(t, chaos.Linear, v.Linearizable)
	})
	t.Run("not linearizable", func(t *testing.T) {
		h, err := chaos.ReadHistory("testdata/acquire-ignores-holder.history.jsonl")
		require.NoError(t, err)
		require.Len(t, h.Records, 43)
		v := chaos.Check(h)
		assert.Positive(t, v.Overlaps)
		assert.Positive(t, v.ValidityOverlaps)
		assert.Positive(t, v.LostUpdates)
		assert.Positive(t, v.FenceViolations)
		assert.Equal(t, chaos.NotLinear, v.Linearizable, "two holders at once")
	})
}

func TestHistoryRoundTrip(t *testing.T) {
	h := chaos.History{
		TTL:               250 * time.Millisecond,
		Store:             chaos.Store{Counter: 2, Log: []int64{10, 20}},
		Pauses:            []chaos.Pause{{PID: 42, Token: "t host=h pid=42", Stop: 5 * ms, Cont: 9 * ms}},
		Resets:            []chaos.Span{{From: 30 * ms, To: 31 * ms}},
		AmbiguousReleases: true,
		Records: []chaos.Record{
			section(0, 0, 0, 10*ms, 10, true),
			section(1, 0, 12*ms, 20*ms, 20, true),
		},
	}
	path := filepath.Join(t.TempDir(), "h.history.jsonl")
	require.NoError(t, chaos.WriteHistory(path, h))
	got, err := chaos.ReadHistory(path)
	require.NoError(t, err)
	assert.Equal(t, h, got)

	require.NoError(t, os.WriteFile(path, nil, 0o644))
	_, err = chaos.ReadHistory(path)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "an empty file")
}
