package election_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// The multi-process tests run candidates as OS processes: the test binary itself, re-executed to run only
// TestHelperProcess, with the environment below saying what to do. A candidate runs election.Run until its
// stdin is closed; a line "resign" on stdin makes its fn return, so that it steps down. It reports on stdout
// ("helper: <what> <term> <details>"), and while it leads it appends its leadership interval to a shared log,
// which the parent checks for overlaps.
const (
	envHelper = "KEYWARD_ELECTION_HELPER" // "candidate"
	envAddr   = "KEYWARD_ELECTION_REDIS"
	envLog    = "KEYWARD_ELECTION_LOG"
	envTTL    = "KEYWARD_ELECTION_TTL"
	envID     = "KEYWARD_ELECTION_ID"

	helperPrefix = "helper: "
	// awaitTimeout bounds every wait for a helper's report: generous, for a machine shared with other work.
	awaitTimeout = 20 * time.Second
)

// TestHelperProcess is not a test: it is the body of the candidate processes that the multi-process tests start.
func TestHelperProcess(t *testing.T) {
	if os.Getenv(envHelper) != "candidate" {
		t.Skip("the body of the candidate processes of the multi-process tests")
	}
	runCandidate(t)
}

func say(what string, term int64, details ...any) {
	fmt.Printf("%s%s %d %s\n", helperPrefix, what, term, strings.ReplaceAll(fmt.Sprint(details...), "\n", " "))
}

// runCandidate campaigns in election "report" until stdin is closed. While it leads, every 2 ms it takes the
// time, checks that leaderCtx has not ended, and appends "<term> valid <unix ns>" to the log: a time at which it
// knew itself leader. The first line of a term is "<term> begin <unix ns>", taken after it was elected.
func runCandidate(t *testing.T) {
	ttl, err := time.ParseDuration(os.Getenv(envTTL))
	require.NoError(t, err)
	logFile, err := os.OpenFile(os.Getenv(envLog), os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	defer logFile.Close()
	appendLog := func(term int64, what string, at time.Time) {
		_, err := fmt.Fprintf(logFile, "%d %s %d\n", term, what, at.UnixNano()) // one write(2) with O_APPEND
		require.NoError(t, err)
	}

	rdb := redistest.NewClient(t, &redis.Options{
		Addr:                     os.Getenv(envAddr),
		DialTimeout:              time.Second,
		ReadTimeout:              2 * time.Second,
		WriteTimeout:             2 * time.Second,
		ContextTimeoutEnabled:    true,
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
	locks, err := lock.New(rdb)
	require.NoError(t, err)
	defer locks.Close()
	e, err := election.New(locks.Locker(), name,
		election.WithRedis(rdb), election.WithIdentity(os.Getenv(envID)), election.WithTTL(ttl),
		election.WithCallbacks(election.Callbacks{
			OnStoppedLeading: func(l election.Leader, cause error) { say("stopped", l.Term, cause) },
		}),
		election.WithObserver(keyward.ObserverFunc(func(_ context.Context, e keyward.Event) {
			if e.Kind == keyward.Error {
				say("error", e.Fence, e.Err)
			}
		})))
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resign := make(chan struct{}, 1)
	stdinDone := make(chan struct{})
	go func() {
		defer close(stdinDone)
		defer cancel() // stdin closed: shut down
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			if in.Text() == "resign" {
				resign <- struct{}{}
			}
		}
	}()

	say("ready", 0)
	err = e.Run(ctx, func(leaderCtx context.Context) error {
		term := election.TermFrom(leaderCtx)
		appendLog(term, "begin", time.Now())
		say("leading", term)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-resign:
				return nil
			case <-leaderCtx.Done():
			case <-tick.C:
			}
			now := time.Now()
			// Err, not Done: after a pause past the lease, Err reports the loss before any timer has run.
			if leaderCtx.Err() != nil {
				say("cancelled", term, context.Cause(leaderCtx))
				return leaderCtx.Err()
			}
			appendLog(term, "valid", now)
		}
	})
	say("exited", 0, err)
	<-stdinDone
}

// assertCleanExit checks what a candidate's Run returned when its ctx ended: ctx's error and no other, from Run
// when the candidate led (it resigned cleanly), from its campaign when it did not (ended before or while its lock
// client waited).
func assertCleanExit(t *testing.T, r report) {
	t.Helper()
	assert.Contains(t, []string{`election "report": run: context canceled`, `election "report": campaign: context canceled`,
		`election "report": campaign: lock "report": obtain: context canceled`},
		r.details, "%s exited", r.from.id)
}

// A helper is one candidate process.
type helper struct {
	id     string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *lockedBuffer
}

// A report is one line a helper printed.
type report struct {
	from    *helper
	what    string // ready, leading, cancelled, stopped, error, exited
	term    int64
	details string
}

// processes runs the candidate processes of one test against one redis-server.
type processes struct {
	t       *testing.T
	srv     *redistest.Server
	ttl     time.Duration
	log     string
	reports chan report
	pending []report // received, not yet taken by an await
	seen    []report // every report received, for failure messages
}

func startProcesses(t *testing.T, ttl time.Duration) *processes {
	p := &processes{
		t: t,
		// Keyspace notifications for sorted sets only, so that waiting can wait for the lock's queue; the
		// election and the lock do not use them.
		srv:     redistest.Start(t, redistest.WithNotify("Kz")),
		ttl:     ttl,
		log:     t.TempDir() + "/leaders.log",
		reports: make(chan report, 4096),
	}
	require.NoError(t, os.WriteFile(p.log, nil, 0o600))
	return p
}

// spawn starts a candidate named id and waits until it runs.
func (p *processes) spawn(id string) *helper {
	t := p.t
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		envHelper+"=candidate", envAddr+"="+p.srv.Addr(), envLog+"="+p.log, envTTL+"="+p.ttl.String(), envID+"="+id)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // never outlive the test binary
	h := &helper{id: id, cmd: cmd, stderr: &lockedBuffer{}}
	cmd.Stderr = h.stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	h.stdin = stdin
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())

	read := make(chan struct{})
	go func() {
		defer close(read)
		out := bufio.NewScanner(stdout)
		for out.Scan() {
			if r, ok := parseReport(h, out.Text()); ok {
				p.reports <- r
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-read
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("stderr of %s:\n%s", id, h.stderr.String())
		}
	})
	p.await(id+" ready", func(r report) bool { return r.from == h && r.what == "ready" })
	return h
}

func parseReport(h *helper, line string) (report, bool) {
	rest, ok := strings.CutPrefix(line, helperPrefix)
	if !ok {
		return report{}, false
	}
	f := strings.SplitN(rest, " ", 3)
	if len(f) < 2 {
		return report{}, false
	}
	term, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return report{}, false
	}
	r := report{from: h, what: f[0], term: term}
	if len(f) == 3 {
		r.details = f[2]
	}
	return r, true
}

// await returns the first report that match accepts and no earlier await took.
func (p *processes) await(desc string, match func(report) bool) report {
	p.t.Helper()
	timeout := time.NewTimer(awaitTimeout)
	defer timeout.Stop()
	for {
		if i := slices.IndexFunc(p.pending, match); i >= 0 {
			r := p.pending[i]
			p.pending = slices.Delete(p.pending, i, i+1)
			return r
		}
		select {
		case r := <-p.reports:
			p.seen = append(p.seen, r)
			p.pending = append(p.pending, r)
		case <-timeout.C:
			var got []string
			for _, r := range p.seen {
				got = append(got, fmt.Sprintf("%s: %s %d %s", r.from.id, r.what, r.term, r.details))
			}
			require.FailNowf(p.t, "no report", "waiting for %s; reports so far:\n%s", desc, strings.Join(got, "\n"))
		}
	}
}

// leading waits until a candidate other than those in not leads a term after term.
func (p *processes) leading(term int64, not ...*helper) report {
	p.t.Helper()
	return p.await(fmt.Sprintf("a term after %d", term), func(r report) bool {
		return r.what == "leading" && r.term > term && !slices.Contains(not, r.from)
	})
}

// waiting waits until n candidate processes wait in the lock's queue: woken by the queue's keyspace
// notifications, each checked after the subscription is confirmed.
func (p *processes) waiting(n int64) {
	t := p.t
	t.Helper()
	ctx := withTimeout(t, awaitTimeout)
	rdb := p.srv.Client(t)
	queue := keys.For(name).Queue
	ps := rdb.Subscribe(ctx, keys.KeyspaceChannel(0, queue))
	defer ps.Close()
	_, err := ps.Receive(ctx) // confirmed
	require.NoError(t, err)
	for {
		count, err := rdb.ZCard(ctx, queue).Result()
		require.NoError(t, err)
		if count == n {
			return
		}
		_, err = ps.ReceiveMessage(ctx)
		require.NoError(t, err, "waiting for %d processes in the queue, %d there", n, count)
	}
}

// exit closes h's stdin, so that it shuts down, and waits until its Run has returned.
func (p *processes) exit(h *helper) report {
	p.t.Helper()
	require.NoError(p.t, h.stdin.Close())
	return p.await(h.id+" exited", func(r report) bool { return r.from == h && r.what == "exited" })
}

func (h *helper) send(line string) error {
	_, err := io.WriteString(h.stdin, line+"\n")
	return err
}

func (h *helper) signal(sig syscall.Signal) error { return h.cmd.Process.Signal(sig) }

// checkLog checks the leadership intervals in the shared log and returns the terms it holds, in order. Each
// term's interval runs from its "begin" (taken after it was elected) to its last "valid" (a time at which its
// leader had checked that its lease had not run out): no two may overlap. Since every time is taken on the safe
// side of the fact it stands for, a correct election passes however slow the machine.
func (p *processes) checkLog() []int64 {
	t := p.t
	data, err := os.ReadFile(p.log)
	require.NoError(t, err)
	begin, end := map[int64]int64{}, map[int64]int64{}
	for line := range strings.Lines(string(data)) {
		var term, at int64
		var what string
		_, err := fmt.Sscanf(line, "%d %s %d", &term, &what, &at)
		require.NoError(t, err, "log line %q", line)
		switch what {
		case "begin":
			require.NotContains(t, begin, term, "term %d began twice", term)
			begin[term] = at
			end[term] = max(end[term], at)
		case "valid":
			end[term] = max(end[term], at)
		}
	}
	var terms []int64
	for term := range end {
		require.Contains(t, begin, term, "term %d has no beginning", term)
		terms = append(terms, term)
	}
	slices.Sort(terms)
	for i := 1; i < len(terms); i++ {
		prev, cur := terms[i-1], terms[i]
		assert.Less(t, end[prev], begin[cur], "term %d (until %s) overlaps term %d (from %s): two leaders at once",
			prev, time.Unix(0, end[prev]).Format(time.StampNano), cur, time.Unix(0, begin[cur]).Format(time.StampNano))
	}
	return terms
}

// observer watches the election from the test process, as a dashboard would.
type observer struct {
	mu      sync.Mutex
	seen    []election.Leader
	changed chan struct{}
}

func (p *processes) observe() *observer {
	t := p.t
	ctx, cancel := context.WithCancel(context.Background())
	e := newCandidate(t, p.srv.Client(t), "observer")
	changes, err := e.Observe(ctx)
	require.NoError(t, err)
	o := &observer{changed: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for l := range changes {
			o.mu.Lock()
			o.seen = append(o.seen, l)
			o.mu.Unlock()
			select {
			case o.changed <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return o
}

// saw waits until the observer has seen a vacancy after term last, and returns what it saw.
func (o *observer) saw(t *testing.T, last int64) []election.Leader {
	t.Helper()
	timeout := time.NewTimer(awaitTimeout)
	defer timeout.Stop()
	for {
		o.mu.Lock()
		seen := slices.Clone(o.seen)
		o.mu.Unlock()
		if n := len(seen); n > 0 && seen[n-1].Identity == "" && seen[n-1].Term == last {
			return seen
		}
		select {
		case <-o.changed:
		case <-timeout.C:
			require.FailNowf(t, "observer", "no vacancy after term %d; saw %+v", last, seen)
		}
	}
}

// assertTermsInclude checks that the terms the test saw begin are in the log, in order. The log may hold more:
// on a machine slow enough to miss a renewal for a whole lease, a leader loses its term and campaigns again.
func assertTermsInclude(t *testing.T, terms []int64, want ...int64) {
	t.Helper()
	i := 0
	for _, term := range terms {
		if i < len(want) && term == want[i] {
			i++
		}
	}
	assert.Equal(t, len(want), i, "terms %v in the log %v, in order", want, terms)
}

// checkObserved checks that the observer saw every term, in order, each vacancy right after its own term.
func checkObserved(t *testing.T, seen []election.Leader, terms []int64) {
	t.Helper()
	require.NotEmpty(t, seen)
	assert.Equal(t, election.Leader{}, seen[0], "first, nobody led")
	var elected []int64
	for i, l := range seen[1:] {
		if l.Identity != "" {
			// The same term again after its vacancy: its record lapsed (a renewal that came at the very end of
			// the lease, on a stalled machine) and was written again. Seen truthfully; not a new term.
			if n := len(elected); n == 0 || elected[n-1] != l.Term {
				elected = append(elected, l.Term)
			}
			continue
		}
		if assert.Positive(t, i, "a vacancy before any term") {
			assert.Equal(t, seen[i].Term, l.Term, "the vacancy of term %d follows it", l.Term)
		}
	}
	assert.Equal(t, terms, elected, "every term, in order")
}

func TestProcessesFailOverWhenTheLeaderResigns(t *testing.T) {
	// A lease of a minute: every fail-over below must come from a resignation, never from an expiry.
	p := startProcesses(t, time.Minute)
	obs := p.observe()
	helpers := []*helper{p.spawn("a"), p.spawn("b"), p.spawn("c")}

	leader := p.leading(0)
	for range 3 {
		p.waiting(2) // the two others wait for the lock: the resignation must wake one of them
		require.NoError(t, leader.from.send("resign"))
		next := p.leading(leader.term, leader.from)
		p.await("the resigned term's end", func(r report) bool {
			return r.from == leader.from && r.what == "stopped" && r.term == leader.term
		})
		leader = next
	}

	// A clean shutdown (Run's ctx ends) resigns too.
	exited := p.exit(leader.from)
	assertCleanExit(t, exited)
	last := p.leading(leader.term, leader.from)
	for _, h := range helpers {
		if h != leader.from && h != last.from { // the one still waiting, then the leader: no more terms
			assertCleanExit(t, p.exit(h))
		}
	}
	assertCleanExit(t, p.exit(last.from))

	rdb := p.srv.Client(t)
	ctx := withTimeout(t, 10*time.Second)
	assert.Zero(t, rdb.Exists(ctx, name, recordKey).Val(), "every leader resigned: no lock, no record left")
	terms := p.checkLog()
	require.Len(t, terms, 5)
	assert.Equal(t, last.term, terms[4])
	checkObserved(t, obs.saw(t, last.term), terms)
}

func TestProcessesFailOverWhenTheLeaderIsKilled(t *testing.T) {
	p := startProcesses(t, time.Second)
	obs := p.observe()
	for _, id := range []string{"a", "b", "c"} {
		p.spawn(id)
	}

	first := p.leading(0)
	require.NoError(t, first.from.signal(syscall.SIGKILL)) // no resignation, no release
	second := p.leading(first.term, first.from)
	require.NoError(t, second.from.signal(syscall.SIGKILL))
	third := p.leading(second.term, first.from, second.from)

	assertCleanExit(t, p.exit(third.from))
	terms := p.checkLog()
	assertTermsInclude(t, terms, first.term, second.term, third.term)
	checkObserved(t, obs.saw(t, terms[len(terms)-1]), terms)
}

func TestProcessesPausedLeaderFindsItsTermOver(t *testing.T) {
	p := startProcesses(t, time.Second)
	obs := p.observe()
	p.spawn("a")
	p.spawn("b")

	first := p.leading(0)
	require.NoError(t, first.from.signal(syscall.SIGSTOP)) // a pause longer than the lease: GC, a frozen VM…
	second := p.leading(first.term, first.from)
	require.NoError(t, first.from.signal(syscall.SIGCONT))

	woke := p.await("the paused leader's first check", func(r report) bool {
		return r.from == first.from && r.what == "cancelled"
	})
	assert.Equal(t, first.term, woke.term)
	assert.Contains(t, woke.details, election.ErrLost.Error(), "its leaderCtx was cancelled: lost")
	stopped := p.await("the paused leader's term's end", func(r report) bool {
		return r.from == first.from && r.what == "stopped"
	})
	assert.Contains(t, stopped.details, election.ErrLost.Error())

	assertCleanExit(t, p.exit(second.from))
	third := p.leading(second.term, second.from) // the paused one campaigned again, and leads now
	assert.Equal(t, first.from, third.from)
	assertCleanExit(t, p.exit(first.from))

	terms := p.checkLog() // no "valid" of the first term after the second began: checked here
	assertTermsInclude(t, terms, first.term, second.term, third.term)
	checkObserved(t, obs.saw(t, terms[len(terms)-1]), terms)
}

// lockedBuffer is a bytes.Buffer safe for the concurrent writes of os/exec and reads of the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
