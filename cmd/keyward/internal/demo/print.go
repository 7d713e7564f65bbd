package demo

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"time"
)

// printer writes the demo's report: plain lines, checks (marked ok or FAIL in a left gutter) and, on a terminal,
// a progress line redrawn in place for steps that take more than a second.
type printer struct {
	mu     sync.Mutex
	w      io.Writer
	tty    bool
	drawn  bool // a progress line is on screen
	failed int
}

func newPrinter(w io.Writer, tty bool) *printer { return &printer{w: w, tty: tty} }

// line prints a line with no gutter mark.
func (p *printer) line(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearLocked()
	fmt.Fprintf(p.w, format+"\n", args...)
}

// info prints a detail of the running scenario.
func (p *printer) info(format string, args ...any) { p.line("      "+format, args...) }

// check prints the outcome of an invariant: "  ok  …" or "FAIL  …".
func (p *printer) check(ok bool, format string, args ...any) {
	mark := "  ok  "
	if !ok {
		mark = "FAIL  "
		p.mu.Lock()
		p.failed++
		p.mu.Unlock()
	}
	p.line(mark+format, args...)
}

func (p *printer) failures() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

func (p *printer) clearLocked() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\033[K")
		p.drawn = false
	}
}

// step shows status (a description of the progress so far) on a progress line, redrawn ten times a second, when
// the step is still running after a second and the report goes to a terminal. The returned function ends it.
func (p *printer) step(status func() string) (done func()) {
	if !p.tty {
		return func() {}
	}
	stop := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTimer(time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			p.mu.Lock()
			p.clearLocked()
			fmt.Fprintf(p.w, "      … %s", status())
			p.drawn = true
			p.mu.Unlock()
			t.Reset(100 * time.Millisecond)
		}
	}()
	return func() {
		close(stop)
		<-finished
		p.mu.Lock()
		p.clearLocked()
		p.mu.Unlock()
	}
}

// thousands formats n with thousands separators: 1,000.
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// ms formats a duration in milliseconds, with a decimal below 10 ms (unless it is a whole number).
func ms(d time.Duration) string {
	f := float64(d) / float64(time.Millisecond)
	if f < 10 && d%time.Millisecond != 0 {
		return strconv.FormatFloat(f, 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(f, 'f', 0, 64) + " ms"
}

// percentile returns the p-th percentile (0 < p ≤ 100) of samples, by the nearest-rank method.
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := int(p/100*float64(len(s))+0.999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

// human formats a duration for the report: "1 ms", "250 ms", "1 s", "1.5 s".
func human(d time.Duration) string {
	if d < time.Second {
		return ms(d)
	}
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s"
}
