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
	fmt.Fprintf(&b, "\n%s\n", r.unitNote())
	for _, sc := range r.Scenarios {
		fmt.Fprintf(&b, "\n### %s\n\n", r.title(sc))
		if sc.Processes == 0 {
			r.uncontendedTable(&b, sc)
		} else {
			r.contendedTable(&b, sc)
		}
	}
	if len(r.Errors) > 0 {
		fmt.Fprintf(&b, "\n### Errors\n\nThese measurements failed (the library returned an error) and are missing from the tables:\n\n")
		for _, e := range r.Errors {
			fmt.Fprintf(&b, "- %s\n", strings.SplitN(e, "\n", 2)[0])
		}
	}
	fmt.Fprintf(&b, "\n### Goals\n\n")
	r.goals(&b)
	fmt.Fprintf(&b, "\n### keyward's ratios to each anchor\n\n")
	r.ratios(&b)
	return b.String()
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

// goals says where each library stands against the goals.
func (r report) goals(b *strings.Builder) {
	row(b, "goal", "keyward", "anchors (this run)", "met")
	row(b, "---", "---:", "---", "---")
	kw, kwRed := "keyward lock", "keyward redlock"
	var anchors, redAnchors []string
	for _, lib := range r.libraries() {
		switch {
		case lib.Keyward:
		case lib.Nodes == 1:
			anchors = append(anchors, lib.Name)
		default:
			redAnchors = append(redAnchors, lib.Name)
		}
	}
	unc := func(lib string) (float64, bool) {
		m, ok := r.get(lib, "uncontended")
		return ratio(m.P50, m.Ping), ok
	}
	var real scenario
	for _, sc := range r.Scenarios {
		if sc.Realistic {
			real = sc
		}
	}
	list := func(libs []string, f func(string) (string, bool)) string {
		var parts []string
		for _, l := range libs {
			if v, ok := f(l); ok {
				parts = append(parts, l+" "+v)
			}
		}
		return strings.Join(parts, ", ")
	}

	if v, ok := unc(kw); ok {
		row(b, fmt.Sprintf("uncontended acquire+release p50 ≤ %.1f RTT", goalUncontended), fmt.Sprintf("%.2f", v),
			list(anchors, func(l string) (string, bool) { v, ok := unc(l); return fmt.Sprintf("%.2f", v), ok }),
			yes(v <= goalUncontended))
	}
	if m, ok := r.get(kw, real.Name); ok {
		f := func(m measurement) string {
			return fmt.Sprintf("%.0f %% / %.2f", 100*m.Summary.OfBound(r.Unit), m.Summary.JainGroups)
		}
		row(b, fmt.Sprintf("realistic ≥ %.0f %% of 1/(hold + 2·RTT), Jain across processes ≥ %.2f", 100*goalOfBound, goalJain),
			f(m), list(anchors, func(l string) (string, bool) { a, ok := r.get(l, real.Name); return f(a), ok }),
			yes(m.Summary.OfBound(r.Unit) >= goalOfBound && m.Summary.JainGroups >= goalJain))
		cpu := func(m measurement) float64 { return float64(m.Cost.CPU.Microseconds()) / float64(max(m.Acquired, 1)) }
		below := true
		for _, l := range anchors {
			if a, ok := r.get(l, real.Name); ok && cpu(a) <= cpu(m) {
				below = false
			}
		}
		row(b, "realistic: Redis CPU µs per acquisition below every anchor's", fmt.Sprintf("%.1f", cpu(m)),
			list(anchors, func(l string) (string, bool) { a, ok := r.get(l, real.Name); return fmt.Sprintf("%.1f", cpu(a)), ok }),
			yes(below))
	}
	if v, ok := unc(kwRed); ok {
		row(b, fmt.Sprintf("Redlock on 3 nodes, uncontended p50 ≤ %.1f RTT", goalRedlock), fmt.Sprintf("%.2f", v),
			list(redAnchors, func(l string) (string, bool) { v, ok := unc(l); return fmt.Sprintf("%.2f", v), ok }),
			yes(v <= goalRedlock))
	} else {
		row(b, fmt.Sprintf("Redlock on 3 nodes, uncontended p50 ≤ %.1f RTT", goalRedlock), "not measured",
			list(redAnchors, func(l string) (string, bool) { v, ok := unc(l); return fmt.Sprintf("%.2f", v), ok }), "—")
	}
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

func name(lib library) string {
	if lib.Keyward {
		return "**" + lib.Name + "**"
	}
	return lib.Name
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
