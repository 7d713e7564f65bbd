package keywardgocron_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/google/uuid"
	"github.com/jonboulle/clockwork"
	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/contrib/keywardgocron"
)

// The schedulers of a rig run one job, jobName, every interval of a fake clock they share: the test advances the
// clock tick by tick and waits, before the next tick, for what every scheduler did with the last one.
const (
	jobName  = "report"
	interval = time.Minute
	// minHold is the minimum hold of the rigs' Lockers: far above how late a scheduler of the rig runs its tick
	// after the first (a few goroutine switches), short enough for many ticks in a test.
	minHold = 250 * time.Millisecond
	// tickOffset is how far past each tick the fake clock stands (see rig.tick).
	tickOffset = time.Millisecond
)

// outcome is what one scheduler did with one tick: ran the job, or skipped it (err: why).
type outcome struct {
	inst string
	tick int
	ran  bool
	err  error
}

func (o outcome) String() string {
	if o.ran {
		return fmt.Sprintf("%s ran tick %d", o.inst, o.tick)
	}
	return fmt.Sprintf("%s skipped tick %d (%v)", o.inst, o.tick, o.err)
}

// ended is a run that ended: the cause of its context when the job function returned, nil if it was not cancelled.
type ended struct {
	inst  string
	tick  int
	cause error
}

// unlocked is the result of a run's Unlock.
type unlocked struct {
	inst string
	tick int
	err  error
}

// rig is a set of schedulers, one per instance, each with its own Redis clients, running the same job on a shared
// fake clock.
type rig struct {
	t     *testing.T
	clock *clockwork.FakeClock
	t0    time.Time

	outcomes chan outcome
	ends     chan ended
	unlocks  chan unlocked

	mu       sync.Mutex
	runs     map[int][]string      // the instances that ran each tick
	blocked  map[int]chan struct{} // ticks whose run waits until the channel is closed or its context ends
	unlocked map[int]chan struct{} // closed when the first Unlock of the tick has returned
	ticks    int                   // ticks the test advanced
	skips    int                   // outcomes that skipped a tick
	insts    map[string]*instance  // the instances started, by name
}

func newRig(t *testing.T) *rig {
	clock := clockwork.NewFakeClockAt(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	return &rig{
		t:        t,
		clock:    clock,
		t0:       clock.Now(),
		outcomes: make(chan outcome, 1024),
		ends:     make(chan ended, 1024),
		unlocks:  make(chan unlocked, 1024),
		runs:     map[int][]string{},
		blocked:  map[int]chan struct{}{},
		unlocked: map[int]chan struct{}{},
		insts:    map[string]*instance{},
	}
}

// now is the tick the fake clock is at.
func (r *rig) now() int { return int(r.clock.Since(r.t0) / interval) }

// instance is one scheduler of the rig.
type instance struct {
	name      string
	rdb       *redis.Client // its Redis client (the first, with Redlock)
	events    *events       // the Released and Lost events of its locks (a Locker's instance)
	locker    *keywardgocron.Locker
	elector   *keywardgocron.Elector
	scheduler gocron.Scheduler
	skip      []error // what its skips may match: ErrNotObtained (Locker) or ErrNotLeader (Elector) by default
	late      bool    // its Lock waits until the tick's run has ended and unlocked
	stopped   bool
}

// start starts inst's scheduler on the rig's clock, with its Locker (or Elector), running the rig's job.
func (r *rig) start(inst *instance) {
	t := r.t
	opts := []gocron.SchedulerOption{gocron.WithClock(r.clock)}
	var job func(ctx context.Context) error
	switch {
	case inst.locker != nil:
		opts = append(opts, gocron.WithDistributedLocker(&observedLocker{inner: inst.locker, r: r, inst: inst}))
		job = inst.locker.Job(r.job(inst))
		if inst.skip == nil {
			inst.skip = []error{keyward.ErrNotObtained}
		}
	case inst.elector != nil:
		opts = append(opts, gocron.WithDistributedElector(inst.elector), gocron.WithMonitor(skipMonitor{r, inst}))
		job = inst.elector.Job(r.job(inst))
		if inst.skip == nil {
			inst.skip = []error{keywardgocron.ErrNotLeader}
		}
	}
	r.mu.Lock()
	r.insts[inst.name] = inst
	r.mu.Unlock()
	s, err := gocron.NewScheduler(opts...)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.NewJob(gocron.DurationJob(interval), gocron.NewTask(job), gocron.WithName(jobName),
		gocron.WithEventListeners(gocron.AfterLockError(func(_ uuid.UUID, _ string, err error) {
			r.skipped(inst, err)
		})))
	if err != nil {
		t.Fatal(err)
	}
	inst.scheduler = s
	s.Start()
	t.Cleanup(func() { r.stop(inst) })
}

// stop shuts inst's scheduler down: its running job's context is cancelled, and Shutdown waits for it.
func (r *rig) stop(inst *instance) {
	if inst.stopped {
		return
	}
	inst.stopped = true
	if err := inst.scheduler.Shutdown(); err != nil {
		r.t.Errorf("%s: Shutdown: %v", inst.name, err)
	}
}

// job is the job function of inst: it records the run under the tick the clock is at and, if the test blocked the
// tick, waits until it is let go or its context ends.
func (r *rig) job(inst *instance) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		tick := r.now()
		if _, ok := keywardgocron.FenceFrom(ctx); !ok {
			r.t.Errorf("%s: the run of tick %d has no fence", inst.name, tick)
		}
		r.mu.Lock()
		r.runs[tick] = append(r.runs[tick], inst.name)
		block := r.blocked[tick]
		r.mu.Unlock()
		r.outcomes <- outcome{inst: inst.name, tick: tick, ran: true}
		if block != nil {
			select {
			case <-block:
			case <-ctx.Done():
			}
		}
		r.ends <- ended{inst: inst.name, tick: tick, cause: context.Cause(ctx)}
		return nil
	}
}

func (r *rig) skipped(inst *instance, err error) {
	r.mu.Lock()
	r.skips++
	r.mu.Unlock()
	r.outcomes <- outcome{inst: inst.name, tick: r.now(), err: err}
}

// block makes the run of the next tick wait until the returned function is called (or its context ends).
func (r *rig) block() (release func()) {
	ch := make(chan struct{})
	r.mu.Lock()
	r.blocked[r.ticks+1] = ch
	r.mu.Unlock()
	return sync.OnceFunc(func() { close(ch) })
}

// afterUnlock returns a channel that is closed when the first Unlock of tick has returned.
func (r *rig) afterUnlock(tick int) chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch, ok := r.unlocked[tick]
	if !ok {
		ch = make(chan struct{})
		r.unlocked[tick] = ch
	}
	return ch
}

// tick advances the clock to the next tick, once the n schedulers that run have each armed their timer, and
// returns their n outcomes, those that ran first. Every outcome must be of this tick, and every skip must match its
// instance's skip error.
func (r *rig) tick(n int) []outcome {
	t := r.t
	t.Helper()
	if err := r.clock.BlockUntilContext(within(t), n); err != nil {
		t.Fatalf("the %d schedulers did not arm their timers: %v", n, err)
	}
	r.ticks++
	if r.ticks == 1 {
		// From now on the clock stands a little past each tick, never on one. gocron does its bookkeeping of a
		// skipped tick (it drops the times scheduled up to now) after it has armed the next timer; done after the
		// clock moved on to the next tick, exactly, it drops that tick too, and then schedules the job at now
		// again, which a fake clock fires at once, over and over. A real clock has moved on by then.
		r.clock.Advance(tickOffset)
	}
	r.clock.Advance(interval)
	if r.now() != r.ticks {
		t.Fatalf("the clock is at tick %d, want %d", r.now(), r.ticks)
	}
	var got []outcome
	for range n {
		o := receive(t, r.outcomes, fmt.Sprintf("outcome of tick %d", r.ticks))
		if o.tick != r.ticks {
			t.Fatalf("an outcome of tick %d during tick %d: %v (this tick's so far: %v)", o.tick, r.ticks, o, got)
		}
		skip := r.instance(o.inst).skip
		if !o.ran && !slices.ContainsFunc(skip, func(e error) bool { return errors.Is(o.err, e) }) {
			t.Fatalf("%s skipped tick %d with %v, want an error matching one of %v", o.inst, o.tick, o.err, skip)
		}
		got = append(got, o)
	}
	slices.SortStableFunc(got, func(a, b outcome) int {
		switch {
		case a.ran == b.ran:
			return 0
		case a.ran:
			return -1
		}
		return 1
	})
	return got
}

func (r *rig) instance(name string) *instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.insts[name]
}

// ran returns the instances that ran in outcomes.
func ran(outcomes []outcome) []string {
	var names []string
	for _, o := range outcomes {
		if o.ran {
			names = append(names, o.inst)
		}
	}
	return names
}

// once advances one tick, checks that exactly one of the n schedulers ran it, waits until that run is over and
// (with a Locker) its lock released, and returns who ran it.
func (r *rig) once(n int) string {
	t := r.t
	t.Helper()
	outcomes := r.tick(n)
	names := ran(outcomes)
	if len(names) != 1 {
		t.Fatalf("tick %d ran %d times (%v), want once: %+v", r.ticks, len(names), names, outcomes)
	}
	e := receive(t, r.ends, "end of the run")
	if e.cause != nil {
		t.Fatalf("the run of tick %d by %s ended with %v", e.tick, e.inst, e.cause)
	}
	r.settle(names...)
	return names[0]
}

// settle waits until the locks of the runs by names are released: Unlock has returned without an error, and the
// lock client told of the release (at the end of the minimum hold). Runs under an Elector have nothing to settle.
func (r *rig) settle(names ...string) {
	t := r.t
	t.Helper()
	for _, name := range names {
		inst := r.instance(name)
		if inst.locker == nil {
			continue
		}
		u := receive(t, r.unlocks, "Unlock")
		if u.err != nil {
			t.Fatalf("%s: Unlock of tick %d: %v", u.inst, u.tick, u.err)
		}
	}
	for _, name := range names {
		inst := r.instance(name)
		if inst.locker == nil {
			continue
		}
		ev := inst.events.next(t)
		if ev.Kind != keyward.Released || ev.Err != nil {
			t.Fatalf("%s: %v event (err %v), want a clean release", inst.name, ev.Kind, ev.Err)
		}
	}
}

// check verifies the record of runs: no tick ran twice, and the ticks in want ran once; it returns how many runs
// there were.
func (r *rig) check(want ...int) int {
	t := r.t
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	total := 0
	for tick, names := range r.runs {
		total += len(names)
		if len(names) > 1 {
			t.Errorf("tick %d ran %d times: %v", tick, len(names), names)
		}
	}
	for _, tick := range want {
		if len(r.runs[tick]) != 1 {
			t.Errorf("tick %d ran %d times (%v), want once", tick, len(r.runs[tick]), r.runs[tick])
		}
	}
	return total
}

// report logs the rig's numbers.
func (r *rig) report(instances int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	runs := 0
	for _, names := range r.runs {
		runs += len(names)
	}
	r.t.Logf("%d instances, %d ticks, %d runs, %d skips", instances, r.ticks, runs, r.skips)
}

// observedLocker is an instance's Locker as its scheduler sees it: it tells the rig of every Unlock and, for a
// late instance, makes Lock wait until the tick's run has unlocked.
type observedLocker struct {
	inner *keywardgocron.Locker
	r     *rig
	inst  *instance
}

func (o *observedLocker) Lock(ctx context.Context, key string) (gocron.Lock, error) {
	tick := o.r.now()
	if o.inst.late {
		select {
		case <-o.r.afterUnlock(tick):
		case <-time.After(waitLimit):
			o.r.t.Errorf("%s: tick %d never unlocked", o.inst.name, tick)
		}
	}
	l, err := o.inner.Lock(ctx, key)
	if err != nil {
		return nil, err
	}
	return &observedLock{inner: l, o: o, tick: tick}, nil
}

type observedLock struct {
	inner gocron.Lock
	o     *observedLocker
	tick  int
	once  sync.Once
}

func (l *observedLock) Unlock(ctx context.Context) error {
	err := l.inner.Unlock(ctx)
	l.o.r.unlocks <- unlocked{inst: l.o.inst.name, tick: l.tick, err: err}
	l.once.Do(func() {
		ch := l.o.r.afterUnlock(l.tick)
		l.o.r.mu.Lock()
		defer l.o.r.mu.Unlock()
		select {
		case <-ch:
		default:
			close(ch)
		}
	})
	return err
}

// skipMonitor is a gocron.Monitor that tells the rig of the ticks an Elector's scheduler skipped.
type skipMonitor struct {
	r    *rig
	inst *instance
}

func (m skipMonitor) IncrementJob(_ uuid.UUID, _ string, _ []string, status gocron.JobStatus) {
	if status == gocron.Skip {
		m.r.skipped(m.inst, keywardgocron.ErrNotLeader)
	}
}

func (skipMonitor) RecordJobTiming(time.Time, time.Time, uuid.UUID, string, []string) {}
