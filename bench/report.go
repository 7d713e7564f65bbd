package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/keyward/keyward/internal/benchstat"
)

// report is a whole run, ready to print.
type report struct {
	Env       machine
	Results   []measurement
	Scenarios []scenario
	// Errors are the measurements that failed, with why.
	Errors []string
	// Pairs is the number of uncontended pairs per library.
	Pairs int
	// Unit is the RTT every latency is expressed in: the median of every PING of the run. On a shared machine
	// the PING round trip moves with the load from one measurement to the next; one unit for the whole run keeps
	// the rows comparable with each other (each row's own PING is shown beside it).
	Unit time.Duration
	// Saturation and Memory are the runs of those scenarios (none when skipped).
	Saturation []saturationRun
	Memory     []memoryRun
	// RateLimit are the runs of the rate-limit scenario (none when skipped).
	RateLimit []rateRun
	// Config is the command line the run had.
	Config config
}

// unitNote says what the RTT units are.
func (r report) unitNote() string {
	return fmt.Sprintf("Latencies: the time, then the same in RTT units in parentheses; 1 RTT = %d µs, the median of every PING "+
		"of the run (uncontended pairs: measured round by round across the libraries, each in units of its own PINGs, "+
		"one before every pair).", r.Unit.Microseconds())
}

// unit returns the median of every PING sample of the measurements.
func unit(ms []measurement) time.Duration {
	var all []time.Duration
	for _, m := range ms {
		all = append(all, m.Pings...)
	}
	return benchstat.Quantile(all, 0.5)
}

// Goals the issue sets, and the figures of the anchors measured when it was written.
const (
	goalUncontended = 2.3  // RTT, acquire + release, p50
	goalRedlock     = 2.5  // RTT, on 3 nodes
	goalOfBound     = 0.75 // realistic scenario
	goalJain        = 0.95 // across processes, realistic scenario
)

// realistic returns the scenario the goals are set on.
func (r report) realistic() (scenario, bool) {
	for _, sc := range r.Scenarios {
		if sc.Realistic {
			return sc, true
		}
	}
	return scenario{}, false
}

// get returns a library's measurement in a scenario, if it was made without error.
func (r report) get(lib, sc string) (measurement, bool) {
	for _, m := range r.Results {
		if m.Library.Name == lib && m.Scenario.Name == sc && m.Err == "" {
			return m, true
		}
	}
	return measurement{}, false
}

func (r report) libraries() []library {
	var libs []library
	seen := map[string]bool{}
	for _, m := range r.Results {
		if !seen[m.Library.Name] {
			seen[m.Library.Name] = true
			libs = append(libs, m.Library)
		}
	}
	return libs
}

// Tables returns every table of the run, in Markdown.
func (r report) Tables() string {
	var b strings.Builder
	if len(r.Results) > 0 {
		fmt.Fprintf(&b, "\n%s\n", r.unitNote())
	}
	for _, sc := range r.Scenarios {
		if !r.measured(sc) {
			continue
		}
		fmt.Fprintf(&b, "\n### %s\n\n", r.title(sc))
		if sc.Processes == 0 {
			r.uncontendedTable(&b, sc)
		} else {
			r.contendedTable(&b, sc)
		}
	}
	r.loadTables(&b, "###")
	if len(r.Errors) > 0 {
		fmt.Fprintf(&b, "\n### Errors\n\nThese measurements failed (the library returned an error) and are missing from the tables:\n\n")
		for _, e := range r.Errors {
			fmt.Fprintf(&b, "- %s\n", strings.SplitN(e, "\n", 2)[0])
		}
	}
	fmt.Fprintf(&b, "\n### Goals\n\n")
	r.goals(&b)
	if len(r.Results) > 0 {
		fmt.Fprintf(&b, "\n### keyward's ratios to each anchor\n\n")
		r.ratios(&b)
	}
	return b.String()
}

// measured says whether the scenario has a measurement (it was not left out by -scenarios).
func (r report) measured(sc scenario) bool {
	for _, m := range r.Results {
		if m.Scenario.Name == sc.Name {
			return true
		}
	}
	return false
}

// loadTables writes the saturation, memory and rate-limit tables, if those scenarios ran, under headings of level h.
func (r report) loadTables(b *strings.Builder, h string) {
	if len(r.Saturation) > 0 {
		fmt.Fprintf(b, "\n%s %s\n\n", h, r.saturationTitle())
		r.saturationTable(b)
	}
	if len(r.Memory) > 0 {
		fmt.Fprintf(b, "\n%s %s\n\n", h, r.memoryTitle())
		r.memoryTable(b)
	}
	if len(r.RateLimit) > 0 {
		fmt.Fprintf(b, "\n%s %s\n\n", h, r.rateTitle())
		r.rateTable(b)
	}
}

func (r report) title(sc scenario) string {
	switch {
	case sc.Processes == 0:
		return "Uncontended: acquire + release on a free lock"
	case sc.Realistic:
		return fmt.Sprintf("Realistic: %d processes × %d goroutines, hold %v, think %v (%v)",
			sc.Processes, sc.Goroutines, sc.Hold, sc.Think, sc.Duration)
	default:
		return fmt.Sprintf("Contended: one process, %d goroutines, hold 0 (%v)", sc.Goroutines, sc.Duration)
	}
}

func (r report) uncontendedTable(b *strings.Builder, sc scenario) {
	// In units of the PINGs interleaved with the pairs, which saw the same moments as the pairs. No Redis CPU
	// here: the PING before each pair costs the server about as much as a script, and would be counted with it.
	row(b, "library", "PING p50", "acquire+release p50", "p99", "commands/acq", "scripts/acq")
	row(b, "---", "---:", "---:", "---:", "---:", "---:")
	for _, lib := range r.libraries() {
		m, ok := r.get(lib.Name, sc.Name)
		if !ok {
			continue
		}
		row(b, name(lib), micros(m.Ping), inRTT(m.P50, m.Ping), inRTT(m.P99, m.Ping),
			perAcq(m.Cost.Commands(), m.Acquired), perAcq(m.Cost.Scripts(), m.Acquired))
	}
}

func (r report) contendedTable(b *strings.Builder, sc scenario) {
	head := []string{"library", "PING p50", "acq/s", "wait p50", "wait p99", "wait max", "gap p50", "gap p99",
		"re-acq by holder", "per goroutine min–max", "Jain"}
	align := []string{"---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"}
	if sc.Processes > 1 {
		head = append(head, "Jain processes", "of bound")
		align = append(align, "---:", "---:")
	}
	head = append(head, "failed tries/acq", "commands/acq", "scripts/acq", "Redis CPU µs/acq")
	align = append(align, "---:", "---:", "---:", "---:")
	row(b, head...)
	row(b, align...)
	for _, lib := range r.libraries() {
		m, ok := r.get(lib.Name, sc.Name)
		if !ok {
			continue
		}
		s := m.Summary
		cells := []string{name(lib), micros(m.Ping), fmt.Sprintf("%.0f", s.Rate),
			withRTT(s.WaitP50, r.Unit), withRTT(s.WaitP99, r.Unit), withRTT(s.WaitMax, r.Unit),
			withRTT(s.GapP50, r.Unit), withRTT(s.GapP99, r.Unit),
			fmt.Sprintf("%.0f %%", 100*s.SameHolder), fmt.Sprintf("%d–%d", s.MinPerHolder, s.MaxPerHolder),
			fmt.Sprintf("%.3f", s.Jain)}
		if sc.Processes > 1 {
			cells = append(cells, fmt.Sprintf("%.3f", s.JainGroups), fmt.Sprintf("%.0f %%", 100*s.OfBound(r.Unit)))
		}
		cells = append(cells, failedPerAcq(m), perAcq(m.Cost.Commands(), m.Acquired),
			perAcq(m.Cost.Scripts(), m.Acquired), cpuPerAcq(m))
		row(b, cells...)
	}
}

// goals says where keyward stands against the goals of the issue on what a lock costs Redis (numbered as
// there), and against the earlier goals, each computed from this run. A goal whose figures are missing (the
// scenario was skipped, or a library failed) says so.
func (r report) goals(b *strings.Builder) {
	row(b, "goal", "keyward", "anchors (this run)", "met")
	row(b, "---", "---:", "---", "---")
	kw, kwRed, red3 := "keyward lock", "keyward redlock", "redsync ×3"
	var anchors []string
	for _, lib := range r.libraries() {
		if !lib.Keyward && lib.Nodes == 1 {
			anchors = append(anchors, lib.Name)
		}
	}
	missing := func(goal, anchors string) { row(b, goal, "not measured", anchors, "—") }
	list := func(libs []string, f func(string) (string, bool)) string {
		var parts []string
		for _, l := range libs {
			if v, ok := f(l); ok {
				parts = append(parts, l+" "+v)
			}
		}
		if len(parts) == 0 {
			return "—"
		}
		return strings.Join(parts, ", ")
	}

	// 1. Saturation.
	var satAnchors []string
	for _, c := range saturationContenders {
		if c.Label != kw {
			satAnchors = append(satAnchors, c.Label)
		}
	}
	sat := func(l string) (saturationSummary, bool) { return summarize(r.Saturation, l) }
	cpuText := func(l string) (string, bool) { s, ok := sat(l); return fmt.Sprintf("%.1f µs", s.MedianCPU), ok }
	rateText := func(l string) (string, bool) { s, ok := sat(l); return fmt.Sprintf("%.0f", s.MedianRate), ok }
	k, kok := sat(kw)
	for _, g := range []struct {
		anchor, goal string
		cpu          bool // the goal is on the CPU per pair, not on pairs/s
	}{{"bsm/redislock", "1. Saturation: Redis CPU per pair ≤ bsm/redislock's", true},
		{"bsm/redislock", "1. Saturation: pairs/s ≥ bsm/redislock's", false},
		{"rueidislock", "1. Stretch: saturation Redis CPU per pair ≤ rueidislock's", true},
		{"rueidislock", "1. Stretch: saturation pairs/s ≥ rueidislock's", false}} {
		f := rateText
		if g.cpu {
			f = cpuText
		}
		goal := fmt.Sprintf("%s (%d goroutines, fresh keys; median of %d runs)", g.goal, r.Config.saturationGoroutines, r.Config.saturationRuns)
		a, aok := sat(g.anchor)
		if !kok || !aok {
			missing(goal, list(satAnchors, f))
			continue
		}
		met := k.MedianRate >= a.MedianRate
		kv, _ := f(kw)
		if g.cpu {
			met = k.MedianCPU <= a.MedianCPU
		}
		row(b, goal, kv, list(satAnchors, f), yes(met))
	}

	// 2. A single uncontended pair.
	unc := func(lib string) (float64, bool) {
		m, ok := r.get(lib, "uncontended")
		return ratio(m.P50, m.Ping), ok
	}
	uncText := func(l string) (string, bool) { v, ok := unc(l); return fmt.Sprintf("%.2f RTT", v), ok }
	goal := "2. Single uncontended acquire+release p50 ≤ bsm/redislock's (interleaved, in RTT)"
	if v, ok := unc(kw); ok {
		// Each bsm row is bsm/redislock uncontended: their retry settings play no part.
		met, compared := true, false
		for _, l := range anchors {
			if a, ok := unc(l); ok && strings.HasPrefix(l, "bsm") {
				compared = true
				met = met && v <= a
			}
		}
		if compared {
			row(b, goal, fmt.Sprintf("%.2f RTT", v), list(anchors, uncText), yes(met))
		} else {
			missing(goal, list(anchors, uncText))
		}
	} else {
		missing(goal, list(anchors, uncText))
	}

	// 3. Memory left behind.
	var memAnchors []string
	for _, c := range memoryContenders {
		if c.Label != kw && c.Label != kwRed {
			memAnchors = append(memAnchors, c.Label)
		}
	}
	left := func(l string) (string, bool) {
		m, ok := r.memoryOf(l)
		return fmt.Sprintf("%d keys (%d naming a lock), %s", sum(m.Later).Keys-sum(m.Before).Keys,
			m.Named, signed(m.MemoryLeft())), ok
	}
	for _, l := range []string{kw, kwRed} {
		goal := fmt.Sprintf("3. Memory, %s: no per-name state %v (2×ttl + 1.5 s) after %s names were locked once "+
			"(no key names a lock, ≤ %d new keys per node)", l, memoryWait, count(r.Config.names), clusterSlots)
		m, ok := r.memoryOf(l)
		if !ok {
			missing(goal, list(memAnchors, left))
			continue
		}
		kv, _ := left(l)
		if len(m.Later) > 1 {
			kv += ", DBSIZE per node " + perNode(m.Later)
		}
		row(b, goal, kv, list(memAnchors, left), yes(m.Clean()))
	}

	// 4. Contention stays where it is.
	real, _ := r.realistic()
	ofBound := func(m measurement) string {
		return fmt.Sprintf("%.0f %% / %.2f", 100*m.Summary.OfBound(r.Unit), m.Summary.JainGroups)
	}
	cpu := func(m measurement) float64 { return float64(m.Cost.CPU.Microseconds()) / float64(max(m.Acquired, 1)) }
	cpuOf := func(l string) (string, bool) {
		a, ok := r.get(l, real.Name)
		return fmt.Sprintf("%.1f µs", cpu(a)), ok
	}
	goal = fmt.Sprintf("4. Realistic ≥ %.0f %% of 1/(hold + 2·RTT), Jain across processes ≥ %.2f", 100*goalOfBound, goalJain)
	goalCPU := "4. Realistic: Redis CPU per acquisition below every anchor's"
	if m, ok := r.get(kw, real.Name); ok {
		row(b, goal, ofBound(m), list(anchors, func(l string) (string, bool) { a, ok := r.get(l, real.Name); return ofBound(a), ok }),
			yes(m.Summary.OfBound(r.Unit) >= goalOfBound && m.Summary.JainGroups >= goalJain))
		below := true
		for _, l := range anchors {
			if a, ok := r.get(l, real.Name); ok && cpu(a) <= cpu(m) {
				below = false
			}
		}
		row(b, goalCPU, fmt.Sprintf("%.1f µs", cpu(m)), list(anchors, cpuOf), yes(below))
	} else {
		missing(goal, "—")
		missing(goalCPU, list(anchors, cpuOf))
	}

	// 5. Redlock.
	reds := []string{red3}
	goal = fmt.Sprintf("5. Redlock: Redis CPU per contended acquisition ≤ redsync ×3's (realistic, %d×%d)", real.Processes, real.Goroutines)
	goalLead := "5. Redlock: realistic throughput (of bound) and Jain across processes ≥ redsync ×3's"
	k5, ok1 := r.get(kwRed, real.Name)
	a5, ok2 := r.get(red3, real.Name)
	if ok1 && ok2 {
		row(b, goal, fmt.Sprintf("%.1f µs", cpu(k5)), list(reds, cpuOf), yes(cpu(k5) <= cpu(a5)))
		row(b, goalLead, ofBound(k5), list(reds, func(l string) (string, bool) { return ofBound(a5), true }),
			yes(k5.Summary.OfBound(r.Unit) >= a5.Summary.OfBound(r.Unit) && k5.Summary.JainGroups >= a5.Summary.JainGroups))
	} else {
		missing(goal, list(reds, cpuOf))
		missing(goalLead, "—")
	}
	goal = "5. Redlock uncontended p50 ≤ redsync ×3's (interleaved, in RTT)"
	v, ok1 := unc(kwRed)
	a, ok2 := unc(red3)
	if ok1 && ok2 {
		row(b, goal, fmt.Sprintf("%.2f RTT", v), list(reds, uncText), yes(v <= a))
	} else {
		missing(goal, list(reds, uncText))
	}

	// The earlier goals, in RTT.
	goal = fmt.Sprintf("earlier: uncontended acquire+release p50 ≤ %.1f RTT", goalUncontended)
	if v, ok := unc(kw); ok {
		row(b, goal, fmt.Sprintf("%.2f RTT", v), list(anchors, uncText), yes(v <= goalUncontended))
	} else {
		missing(goal, list(anchors, uncText))
	}
	goal = fmt.Sprintf("earlier: Redlock on 3 nodes, uncontended p50 ≤ %.1f RTT", goalRedlock)
	if v, ok := unc(kwRed); ok {
		row(b, goal, fmt.Sprintf("%.2f RTT", v), list(reds, uncText), yes(v <= goalRedlock))
	} else {
		missing(goal, list(reds, uncText))
	}

	// 6. The rate limiter.
	if len(r.RateLimit) > 0 {
		r.rateGoalRows(b)
	}
}

// memoryOf returns the memory run of the library label, if it was made without error.
func (r report) memoryOf(label string) (memoryRun, bool) {
	for _, m := range r.Memory {
		if m.Label == label && m.Err == "" {
			return m, true
		}
	}
	return memoryRun{}, false
}

// saturationTitle and saturationTable show the saturation runs.
func (r report) saturationTitle() string {
	c := r.Config
	return fmt.Sprintf("Saturation: %d goroutines in one process, each taking and releasing fresh keys (no contention), %v per run, %d runs per library in rounds",
		c.saturationGoroutines, c.saturation, c.saturationRuns)
}

func (r report) saturationTable(b *strings.Builder) {
	row(b, "library", "pairs/s, each run", "pairs/s best", "pairs/s median", "Redis CPU µs/pair, each run", "CPU best",
		"CPU median", "commands/pair", "scripts/pair", "pair p50", "pair p99", "failed tries")
	row(b, "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:")
	for _, c := range saturationContenders {
		s, ok := summarize(r.Saturation, c.Label)
		if !ok {
			continue
		}
		var rates, cpus []string
		for _, run := range s.Runs {
			rates = append(rates, fmt.Sprintf("%.0f", run.Rate()))
			cpus = append(cpus, fmt.Sprintf("%.1f", run.CPUPerPair()))
		}
		label := bold(c.Label, s.Library.Keyward)
		row(b, label, strings.Join(rates, ", "), fmt.Sprintf("%.0f", s.BestRate), fmt.Sprintf("%.0f", s.MedianRate),
			strings.Join(cpus, ", "), fmt.Sprintf("%.1f", s.BestCPU), fmt.Sprintf("%.1f", s.MedianCPU),
			fmt.Sprintf("%.2f", s.Commands), fmt.Sprintf("%.2f", s.Scripts), human(s.P50), human(s.P99), fmt.Sprint(s.FailedTries))
	}
}

// memoryTitle and memoryTable show the memory runs.
func (r report) memoryTitle() string {
	return fmt.Sprintf("Memory: %s distinct names, each locked (ttl %v) and released once by %d goroutines; the servers before, right after, and %v later",
		count(r.Config.names), memoryTTL, memoryGoroutines, memoryWait)
}

func (r report) memoryTable(b *strings.Builder) {
	row(b, "library", "names/s", "failed tries", "DBSIZE before → after → later", "DBSIZE per node, later", "keys naming a lock, later",
		"used_memory before → after → later", "later − before", "no per-name state")
	row(b, "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---")
	for _, c := range memoryContenders {
		m, ok := r.memoryOf(c.Label)
		if !ok {
			continue
		}
		label := bold(c.Label, m.Library.Keyward)
		bf, af, lt := sum(m.Before), sum(m.After), sum(m.Later)
		row(b, label, fmt.Sprintf("%.0f", float64(m.Names)/max(m.Took.Seconds(), 1e-9)), fmt.Sprint(m.Retried),
			fmt.Sprintf("%d → %d → %d", bf.Keys, af.Keys, lt.Keys), perNode(m.Later), fmt.Sprint(m.Named),
			fmt.Sprintf("%s → %s → %s", sizeOf(bf.UsedMemory), sizeOf(af.UsedMemory), sizeOf(lt.UsedMemory)),
			signed(m.MemoryLeft()), yes(m.Clean()))
	}
}

// perNode shows the nodes' DBSIZE, "a / b / c".
func perNode(ns []nodeMemory) string {
	var parts []string
	for _, n := range ns {
		parts = append(parts, fmt.Sprint(n.Keys))
	}
	return strings.Join(parts, " / ")
}

// signed shows a change in bytes with its sign.
func signed(n int64) string {
	if n >= 0 {
		return "+" + sizeOf(n)
	}
	return "−" + sizeOf(-n)
}

// ratios compares keyward with each anchor; every figure is "how many times better keyward is" (> 1: keyward
// is better).
func (r report) ratios(b *strings.Builder) {
	var real scenario
	for _, sc := range r.Scenarios {
		if sc.Realistic {
			real = sc
		}
	}
	row(b, "keyward", "anchor", "uncontended p50", "realistic throughput (of bound)", "realistic wait p99",
		"realistic Redis CPU/acq", "1×8 acq/s", "1×32 wait max")
	row(b, "---", "---", "---:", "---:", "---:", "---:", "---:", "---:")
	for _, kw := range r.libraries() {
		if !kw.Keyward {
			continue
		}
		for _, a := range r.libraries() {
			if a.Keyward || a.Nodes != kw.Nodes {
				continue
			}
			cells := []string{kw.Name, a.Name}
			// Latencies are compared in RTT units, so that each is read against its own run's PING.
			lower := func(sc string, f func(measurement) float64) string {
				k, ok1 := r.get(kw.Name, sc)
				m, ok2 := r.get(a.Name, sc)
				if !ok1 || !ok2 || f(k) == 0 {
					return "—"
				}
				return fmt.Sprintf("%.2f×", f(m)/f(k))
			}
			higher := func(sc string, f func(measurement) float64) string {
				k, ok1 := r.get(kw.Name, sc)
				m, ok2 := r.get(a.Name, sc)
				if !ok1 || !ok2 || f(m) == 0 {
					return "—"
				}
				return fmt.Sprintf("%.2f×", f(k)/f(m))
			}
			cells = append(cells,
				lower("uncontended", func(m measurement) float64 { return ratio(m.P50, m.Ping) }),
				higher(real.Name, func(m measurement) float64 { return m.Summary.OfBound(r.Unit) }),
				lower(real.Name, func(m measurement) float64 { return ratio(m.Summary.WaitP99, r.Unit) }),
				lower(real.Name, func(m measurement) float64 { return float64(m.Cost.CPU) / float64(max(m.Acquired, 1)) }),
				higher("1×8", func(m measurement) float64 { return m.Summary.Rate }),
				lower("1×32", func(m measurement) float64 { return ratio(m.Summary.WaitMax, r.Unit) }),
			)
			row(b, cells...)
		}
	}
}

func row(b *strings.Builder, cells ...string) {
	b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
}

func name(lib library) string { return bold(lib.Name, lib.Keyward) }

// bold returns label in bold when it names one of keyward's rows.
func bold(label string, keyward bool) string {
	if keyward {
		return "**" + label + "**"
	}
	return label
}

func yes(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

func ratio(d, rtt time.Duration) float64 {
	if rtt <= 0 {
		return 0
	}
	return float64(d) / float64(rtt)
}

// micros shows a duration in µs.
func micros(d time.Duration) string { return fmt.Sprintf("%d µs", d.Microseconds()) }

// inRTT shows a duration in RTT units first, for the uncontended table.
func inRTT(d, rtt time.Duration) string {
	return fmt.Sprintf("%.2f RTT (%s)", ratio(d, rtt), human(d))
}

// withRTT shows a duration and, in parentheses, in RTT units.
func withRTT(d, rtt time.Duration) string {
	return fmt.Sprintf("%s (%.1f)", human(d), ratio(d, rtt))
}

func human(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
}

func perAcq(n, acquired int64) string {
	if acquired == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", float64(n)/float64(acquired))
}

func failedPerAcq(m measurement) string {
	if m.FailedTries < 0 {
		return "n/a"
	}
	s := perAcq(m.FailedTries, m.Acquired)
	if m.GaveUp > 0 {
		s += fmt.Sprintf(" (gave up %d×)", m.GaveUp)
	}
	return s
}

func cpuPerAcq(m measurement) string {
	if m.Acquired == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f", float64(m.Cost.CPU.Microseconds())/float64(m.Acquired))
}

// progress is the one-line summary printed while the run goes on.
func progress(m measurement) string {
	if m.Err != "" {
		return "ERROR " + m.Err
	}
	if m.Scenario.Processes == 0 {
		return fmt.Sprintf("ping %v  p50 %.2f RTT  p99 %.2f RTT", m.Ping.Round(time.Microsecond), ratio(m.P50, m.Ping), ratio(m.P99, m.Ping))
	}
	s := m.Summary
	line := fmt.Sprintf("ping %v  %6.0f acq/s  wait p99 %v  Jain %.3f/%.3f  failed/acq %s  cpu µs/acq %s",
		m.Ping.Round(time.Microsecond), s.Rate, s.WaitP99.Round(time.Microsecond), s.Jain, s.JainGroups, failedPerAcq(m), cpuPerAcq(m))
	if m.Scenario.Realistic {
		line += fmt.Sprintf("  of bound %.0f %%", 100*s.OfBound(m.Ping))
	}
	if why := m.Failed(); why != "" {
		line += "  " + why
	}
	return line
}
