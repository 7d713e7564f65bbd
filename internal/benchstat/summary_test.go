package benchstat_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/keyward/keyward/internal/benchstat"
)

func TestSummarize(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	span := func(holder, acquired int) benchstat.Span {
		return benchstat.Span{Acquired: at(acquired), Releasing: at(acquired + 1), Released: at(acquired + 2), Holder: holder}
	}
	// Holders 0 and 1 are process 0, holders 2 and 3 process 1; holder 3 never gets the lock.
	a := benchstat.Merge(
		benchstat.Acquisitions{
			Spans:     []benchstat.Span{span(0, 0), span(0, 10), span(1, 20), span(0, 30)},
			Waits:     []time.Duration{1, 2, 3, 4},
			PerHolder: map[int]int64{0: 3, 1: 1},
		},
		benchstat.Acquisitions{
			Spans:      []benchstat.Span{span(2, 40), span(2, 50), span(2, 90)},
			Waits:      []time.Duration{5, 6, 7},
			Unfinished: []time.Duration{100},
			PerHolder:  map[int]int64{2: 3, 3: 0},
		},
	)
	for _, tc := range []struct {
		name     string
		from, to time.Time
		perGroup int
		want     benchstat.Summary
	}{
		{
			name: "whole run", from: at(0), to: at(100), perGroup: 2,
			want: benchstat.Summary{
				Acquisitions: 7, Rate: 70,
				WaitP50: 4, WaitP99: 7, WaitMax: 100,
				GapP50: 8 * time.Millisecond, GapP99: 38 * time.Millisecond,
				SameHolder:   3.0 / 6,
				MinPerHolder: 0, MaxPerHolder: 3,
				Jain:       benchstat.Jain([]int64{3, 1, 3, 0}),
				JainGroups: benchstat.Jain([]int64{4, 3}),
				MeanHold:   time.Millisecond,
			},
		},
		{
			name: "a window, one group", from: at(10), to: at(60), perGroup: 0,
			want: benchstat.Summary{
				Acquisitions: 5, Rate: 100,
				WaitP50: 4, WaitP99: 6, WaitMax: 100,
				GapP50: 8 * time.Millisecond, GapP99: 8 * time.Millisecond,
				SameHolder:   1.0 / 4,
				MinPerHolder: 0, MaxPerHolder: 2,
				Jain:       benchstat.Jain([]int64{2, 1, 2, 0}),
				JainGroups: 1,
				MeanHold:   time.Millisecond,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := benchstat.Summarize(a, tc.from, tc.to, tc.perGroup)
			assert.InDelta(t, tc.want.Rate, got.Rate, 1e-9)
			got.Rate = tc.want.Rate
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestSummarizeCountsOverlapsInTheWholeRun(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	a := benchstat.Acquisitions{
		Spans: []benchstat.Span{
			{Acquired: at(0), Releasing: at(5), Released: at(6), Holder: 0},
			{Acquired: at(4), Releasing: at(7), Released: at(8), Holder: 1}, // outside the window, still counted
		},
		Waits: []time.Duration{1, 1},
	}
	assert.Equal(t, 1, benchstat.Summarize(a, at(0), at(1), 0).Overlaps)
}

func TestOfBound(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    benchstat.Summary
		rtt  time.Duration
		want float64
	}{
		{"at the bound", benchstat.Summary{Rate: 1000, MeanHold: 800 * time.Microsecond}, 100 * time.Microsecond, 1},
		{"half of it", benchstat.Summary{Rate: 2000, MeanHold: 0}, 125 * time.Microsecond, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.InDelta(t, tc.want, tc.s.OfBound(tc.rtt), 1e-9)
		})
	}
}
