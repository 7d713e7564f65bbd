package chaos

import (
	"slices"
	"sort"
	"time"
)

// A Pause is one SIGSTOP of the process that held the lock.
type Pause struct {
	// PID is the paused worker process; Token the lock value read from the key just before the SIGSTOP.
	PID   int    `json:"pid"`
	Token string `json:"token"`
	// Stop is when the process was confirmed stopped, Cont when SIGCONT was sent (Mono readings).
	Stop int64 `json:"stop"`
	Cont int64 `json:"cont"`
}

// A Span is an interval of Mono readings during which a fault took effect, such as a server restarting empty.
type Span struct {
	// From and To bound the span.
	From int64 `json:"from"`
	To   int64 `json:"to"`
}

// History is everything a phase produced: the workers' records, the faults injected, and the storage at the end.
type History struct {
	// Records are the workers' records, merged.
	Records []Record `json:"-"` // one per line after the rest (WriteHistory)
	// Pauses are the SIGSTOPs of lock holders.
	Pauses []Pause `json:"pauses,omitempty"`
	// Resets are the restarts that emptied the lock server: the key (and any holder's claim) vanished within
	// each span.
	Resets []Span `json:"resets,omitempty"`
	// TTL is the ttl the locks were taken with, unless a record says otherwise (Record.TTL).
	TTL time.Duration `json:"ttl"`
	// Store is the storage server's state at the end.
	Store Store `json:"store"`
	// AmbiguousReleases says that replies could be lost in this phase (reset connections, dropped replies):
	// go-redis then retries a release that the server already ran, and the retry finds the key gone, so a
	// release reported ErrNotHeld may have deleted the holder's own key. The porcupine model then takes such
	// a release as one of unknown outcome.
	AmbiguousReleases bool `json:"ambiguousReleases,omitempty"`
}

// A Verdict is what Check found in a History.
type Verdict struct {
	// Attempts counts acquire attempts; Obtained those that got the lock, ExpiredOnArrival those of them whose
	// validity had passed when the call returned (their holder did not run the section).
	Attempts, Obtained, ExpiredOnArrival int
	// Sections counts the critical sections run; Overran those that ended after their lock's validity deadline
	// (the holder stalled: a pause, or a machine too loaded to run it within the ttl).
	Sections, Overran int
	// NotObtained, TimedOut and Errors count attempts that did not get the lock: refused, waited out, failed.
	NotObtained, TimedOut, Errors int
	// Accepted and Rejected count the fenced writes.
	Accepted, Rejected int
	// Overlaps counts critical sections that were still running when another holder's section began (distinct
	// stale holders).
	Overlaps int
	// ValidityOverlaps counts holders whose validity interval (from the obtain's return to the earlier of the
	// validity deadline and the release) was still open when another holder obtained the lock. A lock must keep
	// it at 0 unless the server lost the key.
	ValidityOverlaps int
	// LostUpdates is the number of counter increments lost: increments written minus the final counter.
	LostUpdates int
	// StaleAccepted counts fenced writes the store accepted although a write with a larger fence had been
	// accepted before them (in the store's order, or in real time). Must be 0.
	StaleAccepted int
	// FenceViolations counts holders whose fence was not larger than that of a holder whose obtain returned
	// before theirs was called. Must be 0.
	FenceViolations int
	// SectionsExpired counts critical sections that ran although the lock's validity had passed when they
	// began. Must be 0: no client may believe it holds an expired lock.
	SectionsExpired int
	// KeyLostWhileValid counts holders that read the key directly, within their validity, and found another
	// value: the key was deleted or taken under them. Must be 0 unless the server lost its data.
	KeyLostWhileValid int
	// ReleaseNotHeld counts releases that found the lock gone (ErrNotHeld or ErrLost), ReleaseErrors those whose
	// outcome is unknown (network). ReleaseNotHeldValid counts not-held releases sent before the validity
	// deadline, when the key must still have been there.
	ReleaseNotHeld, ReleaseErrors, ReleaseNotHeldValid int
	// OwnKeyLeftAfterError counts values that failed attempts (errors) left in the key: ambiguous acquires not
	// cleaned up. OwnKeyLeftAfterRefusal counts values found in the key after refused attempts (ErrNotObtained)
	// of the same worker that no lock was handed out with: the acquire took the lock on the server, but the
	// caller was told it is held by another. Each value is counted once.
	OwnKeyLeftAfterError, OwnKeyLeftAfterRefusal int
	// PausedHolders counts SIGSTOPs that caught a process holding the lock (before it called Release);
	// PausedHoldersToldLost those whose Release reported ErrNotHeld (or ErrLost), PausedHoldersLostFired those
	// whose Lost() had fired before Release. (A holder stopped after its last look at Until, and resumed, may
	// call Release before the lease's timer runs: Release then reports ErrNotHeld, and Lost never fires.)
	PausedHolders, PausedHoldersToldLost, PausedHoldersLostFired int
	// StoreErrors counts errors of the storage server (it has no faults: must be 0).
	StoreErrors int
	// MaxWait is the longest time an obtain that succeeded took.
	MaxWait time.Duration
	// Stopped counts attempts still waiting when the phase ended.
	Stopped int
	// HandOffs counts clean releases (Release returned nil) while another attempt waited: it was called before
	// the release was, and was still waiting then. MaxHandOffGap is the longest time from such a
	// release's return to the next obtain's return (of whichever attempt), or to the end of a wait cut short
	// meanwhile (the phase's end, a timeout), whichever came first: the lock lay idle that long although someone
	// wanted it. A waiter that missed the release's wake-up shows as a gap of a claim window or of the holder's
	// remaining ttl, when its timer ends the wait.
	HandOffs      int
	MaxHandOffGap time.Duration
	// Linearizable is porcupine's verdict on the acquire/release history with the fenced-mutex model.
	Linearizable LinearizabilityResult
}

// Check computes the verdict of a phase's history.
func Check(h History) Verdict {
	var v Verdict
	var held, sections, accepted []*Record
	wrote := 0
	tokens := map[string]bool{} // values of locks the workers obtained
	for _, r := range h.Records {
		if r.Token != "" {
			tokens[r.Token] = true
		}
	}
	// A value left by a failed attempt itself, not by an earlier lock whose release failed; each counted once
	// (later attempts find it too until it expires).
	leftByAttempt := func(r *Record) bool {
		if !r.OwnKeyLeft || tokens[r.LeftValue] {
			return false
		}
		tokens[r.LeftValue] = true
		return true
	}
	for i := range h.Records {
		r := &h.Records[i]
		v.Attempts++
		switch r.Result {
		case Obtained:
			v.Obtained++
			held = append(held, r)
		case ExpiredOnArrival:
			v.Obtained++
			v.ExpiredOnArrival++
			held = append(held, r)
		case NotObtained:
			v.NotObtained++
			if leftByAttempt(r) {
				v.OwnKeyLeftAfterRefusal++
			}
		case TimedOut:
			v.TimedOut++
		case Stopped:
			v.Stopped++
		default:
			v.Errors++
			if leftByAttempt(r) {
				v.OwnKeyLeftAfterError++
			}
		}
		if !r.HasLock() {
			continue
		}
		v.MaxWait = max(v.MaxWait, time.Duration(r.Start-r.Call))
		if r.Result == Obtained && r.End > 0 {
			v.Sections++
			sections = append(sections, r)
			if r.Until <= r.Start {
				v.SectionsExpired++
			}
			if r.End > r.Until {
				v.Overran++
			}
		}
		if r.StoreErr != "" {
			v.StoreErrors++
		}
		if r.Wrote {
			wrote++
		}
		if r.WEnd > 0 && r.StoreErr == "" {
			if r.Accepted {
				v.Accepted++
				accepted = append(accepted, r)
			} else {
				v.Rejected++
			}
		}
		if r.HeldChecked && !r.Held && r.HeldAt < r.Until {
			v.KeyLostWhileValid++
		}
		switch r.Release {
		case ReleaseNotHeld, ReleaseLost:
			v.ReleaseNotHeld++
			if r.RelEnd < r.Until {
				v.ReleaseNotHeldValid++
			}
		case ReleaseFailed:
			v.ReleaseErrors++
		}
	}
	v.LostUpdates = wrote - int(h.Store.Counter)

	v.Overlaps = staleHolders(sections, func(r *Record) int64 { return r.End })
	v.ValidityOverlaps = staleHolders(held, func(r *Record) int64 {
		end := r.Until
		if r.RelCall > 0 {
			end = min(end, r.RelCall)
		}
		return end
	})
	v.FenceViolations = fenceViolations(held)
	v.HandOffs, v.MaxHandOffGap = handOffGaps(h.Records)
	v.StaleAccepted = staleWrites(accepted, h.Store.Log)
	v.PausedHolders, v.PausedHoldersToldLost, v.PausedHoldersLostFired = pausedHolders(h.Records, h.Pauses)
	v.Linearizable = Linearizable(h, 0)
	return v
}

// staleHolders counts holders whose interval [Start, end) was still open when a later holder's began. Empty
// intervals (a lock that came back expired) take part in no overlap.
func staleHolders(rs []*Record, end func(*Record) int64) int {
	var open []*Record
	for _, r := range rs {
		if end(r) > r.Start {
			open = append(open, r)
		}
	}
	slices.SortFunc(open, func(a, b *Record) int { return cmp64(a.Start, b.Start) })
	stale := 0
	for i, a := range open {
		if i+1 < len(open) && open[i+1].Start < end(a) {
			stale++
		}
	}
	return stale
}

// fenceViolations counts holders B whose fence is not larger than the fence of some holder A whose obtain
// returned before B's was called: real-time order must be fence order.
func fenceViolations(held []*Record) int {
	byStart := slices.Clone(held)
	slices.SortFunc(byStart, func(a, b *Record) int { return cmp64(a.Start, b.Start) })
	prefixMax := make([]int64, len(byStart)) // largest fence among byStart[:i+1]
	for i, r := range byStart {
		prefixMax[i] = r.Fence
		if i > 0 {
			prefixMax[i] = max(prefixMax[i], prefixMax[i-1])
		}
	}
	n := 0
	for _, b := range held {
		// Holders whose obtain returned before b's was called: byStart[:k].
		k := sort.Search(len(byStart), func(i int) bool { return byStart[i].Start >= b.Call })
		if k > 0 && prefixMax[k-1] >= b.Fence {
			n++
		}
	}
	return n
}

// handOffGaps returns how many clean releases came while another attempt waited, and the longest gap after one
// of them (see Verdict.MaxHandOffGap). A waiter is an attempt that obtained the lock, or waited until a timeout
// or the phase's end; refused tries and errors do not wait.
func handOffGaps(records []Record) (n int, gap time.Duration) {
	var waiters []*Record
	var ends []int64 // when obtains returned, and when cut-short waits ended
	for i := range records {
		r := &records[i]
		switch {
		case r.HasLock():
			waiters = append(waiters, r)
			ends = append(ends, r.Start)
		case r.Result == Stopped, r.Result == TimedOut:
			waiters = append(waiters, r)
			ends = append(ends, r.Start)
		}
	}
	slices.SortFunc(waiters, func(a, b *Record) int { return cmp64(a.Call, b.Call) })
	slices.Sort(ends)
	lastEnd := make([]int64, len(waiters)) // the latest return among waiters[:i+1]
	for i, r := range waiters {
		lastEnd[i] = r.Start
		if i > 0 {
			lastEnd[i] = max(lastEnd[i], lastEnd[i-1])
		}
	}
	for i := range records {
		a := &records[i]
		if !a.HasLock() || a.Release != Released {
			continue
		}
		// Waiters called before a's release was: waiters[:k]. One of them still waited then?
		k := sort.Search(len(waiters), func(j int) bool { return waiters[j].Call >= a.RelCall })
		if k == 0 || lastEnd[k-1] <= a.RelCall {
			continue
		}
		n++
		// The first obtain (a hand-over's may return before the release does: no gap) or cut-short wait after
		// the release was called.
		j := sort.Search(len(ends), func(j int) bool { return ends[j] >= a.RelCall })
		if j < len(ends) {
			gap = max(gap, time.Duration(ends[j]-a.RelEnd))
		}
	}
	return n, gap
}

// staleWrites counts accepted fenced writes that follow a write with a larger (or equal) fence: in the store's
// own order (its log), or in real time (a write with a larger fence was accepted before this one was sent).
func staleWrites(accepted []*Record, log []int64) int {
	n := 0
	var top int64
	for i, f := range log {
		if i > 0 && f <= top {
			n++
		}
		top = max(top, f)
	}
	byEnd := slices.Clone(accepted)
	slices.SortFunc(byEnd, func(a, b *Record) int { return cmp64(a.WEnd, b.WEnd) })
	prefixMax := make([]int64, len(byEnd))
	for i, r := range byEnd {
		prefixMax[i] = r.Fence
		if i > 0 {
			prefixMax[i] = max(prefixMax[i], prefixMax[i-1])
		}
	}
	for _, a := range accepted {
		k := sort.Search(len(byEnd), func(i int) bool { return byEnd[i].WEnd >= a.WStart })
		if k > 0 && prefixMax[k-1] >= a.Fence {
			n++
		}
	}
	return n
}

// pausedHolders matches each pause with the attempt whose token was in the key: a holder was caught when it
// had not called Release before it was stopped (and its Release got an answer). It returns how many were caught, how many of those Release
// told they no longer held the lock, and how many saw Lost fire.
func pausedHolders(records []Record, pauses []Pause) (caught, told, lostFired int) {
	byToken := map[string]*Record{}
	for i := range records {
		if records[i].Token != "" {
			byToken[records[i].Token] = &records[i]
		}
	}
	for _, p := range pauses {
		r := byToken[p.Token]
		if r == nil || r.RelCall == 0 || r.RelCall < p.Stop || r.Release == ReleaseFailed {
			continue // not caught holding it, or the release's outcome is unknown (a timeout on a loaded machine)
		}
		caught++
		if r.Release == ReleaseNotHeld || r.Release == ReleaseLost {
			told++
		}
		if r.LostFired {
			lostFired++
		}
	}
	return caught, told, lostFired
}

func cmp64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
