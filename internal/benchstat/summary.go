package benchstat

import (
	"maps"
	"slices"
	"time"
)

// Summary is what a contended run comes to.
type Summary struct {
	// Acquisitions counts the spans acquired within the run's window, and Rate is their number per second.
	Acquisitions int
	Rate         float64
	// Waits are quantiles of Obtain's latency. WaitMax also counts the waits that went on past the window.
	WaitP50, WaitP99, WaitMax time.Duration
	// Gaps are quantiles of the hand-off gap: one holder's release returns → the next holder's Obtain returns.
	GapP50, GapP99 time.Duration
	// SameHolder is the share of acquisitions that went to the holder of the one before (re-acquisitions).
	SameHolder float64
	// MinPerHolder and MaxPerHolder are the fewest and most acquisitions of one holder (goroutine), Jain is
	// Jain's index over holders and JainGroups over groups of holders (processes).
	MinPerHolder, MaxPerHolder int64
	Jain, JainGroups           float64
	// MeanHold is the mean time from Obtain returning to Release being called.
	MeanHold time.Duration
	// Overlaps counts critical sections that began before the previous one ended: it must be 0.
	Overlaps int
}

// Summarize computes a run's figures from the acquisitions of all its processes, counting those acquired in
// [from, to). Holders h belong to group h / perGroup (perGroup ≤ 0: one group).
func Summarize(a Acquisitions, from, to time.Time, perGroup int) Summary {
	var (
		s     Summary
		spans []Span
		waits []time.Duration
		held  time.Duration
	)
	for i, sp := range a.Spans {
		if sp.Acquired.Before(from) || !sp.Acquired.Before(to) {
			continue
		}
		spans = append(spans, sp)
		waits = append(waits, a.Waits[i])
		held += sp.Releasing.Sub(sp.Acquired)
	}
	_, s.Overlaps, _ = Gaps(a.Spans)
	s.Acquisitions = len(spans)
	if secs := to.Sub(from).Seconds(); secs > 0 {
		s.Rate = float64(len(spans)) / secs
	}
	s.WaitP50, s.WaitP99 = Quantile(waits, 0.5), Quantile(waits, 0.99)
	s.WaitMax = Quantile(append(slices.Clone(a.Waits), a.Unfinished...), 1)
	gaps, _, same := Gaps(spans)
	s.GapP50, s.GapP99 = Quantile(gaps, 0.5), Quantile(gaps, 0.99)
	if len(spans) > 1 {
		s.SameHolder = float64(same) / float64(len(spans)-1)
	}
	if len(spans) > 0 {
		s.MeanHold = held / time.Duration(len(spans))
	}

	perHolder := map[int]int64{}
	for h := range a.PerHolder {
		perHolder[h] = 0
	}
	for _, sp := range spans {
		perHolder[sp.Holder]++
	}
	holders := slices.Sorted(maps.Keys(perHolder))
	counts := make([]int64, 0, len(holders))
	groups := map[int]int64{}
	for _, h := range holders {
		counts = append(counts, perHolder[h])
		g := 0
		if perGroup > 0 {
			g = h / perGroup
		}
		groups[g] += perHolder[h]
	}
	if len(counts) > 0 {
		s.MinPerHolder, s.MaxPerHolder = slices.Min(counts), slices.Max(counts)
	}
	s.Jain = Jain(counts)
	groupCounts := make([]int64, 0, len(groups))
	for _, g := range slices.Sorted(maps.Keys(groups)) {
		groupCounts = append(groupCounts, groups[g])
	}
	s.JainGroups = Jain(groupCounts)
	return s
}

// OfBound returns the rate as a fraction of the bound 1/(hold + 2·rtt) for a lock whose every hand-off costs a
// release and an acquire, with the hold as measured (a holder that overstays lowers the bound).
func (s Summary) OfBound(rtt time.Duration) float64 {
	return s.Rate * (s.MeanHold + 2*rtt).Seconds()
}
