package benchstat

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"
)

// Workload is one process's part of a contended benchmark: Goroutines goroutines each obtain one lock, hold it
// for Hold, release it and think for Think, in a loop, from Start until End.
type Workload struct {
	// Goroutines is how many goroutines contend in this process.
	Goroutines int
	// Hold is how long a holder keeps the lock: spent spinning (see Spin), not sleeping.
	Hold time.Duration
	// Think is how long a goroutine pauses between releasing the lock and asking for it again, sleeping: it
	// need not be exact, and 16 goroutines spinning would take the processors from Redis and the holder.
	Think time.Duration
	// Start and End bound the run on the workload's Clock: goroutines begin at Start and ask for the lock no
	// more from End on.
	Start, End time.Time
	// Grace is how long the waits still going on at End may go on. Locks obtained then are held, checked and
	// released like the others (their spans are outside the run's window); waits still going on after it are
	// given up. Cancelling every waiter at once is a load of its own that some libraries handle badly (a holder
	// reported its lock lost), which is not what a run measures.
	Grace time.Duration
	// FirstHolder is the Holder of the first goroutine's spans; the others follow it. Give each process of a
	// run its own range, so that holders are told apart across processes.
	FirstHolder int
}

// Obtain waits for the lock until it has it or ctx ends, and returns the function that releases it.
type Obtain func(ctx context.Context) (release func(context.Context) error, err error)

// Acquisitions are the measurements of a run, of one process or merged from several.
type Acquisitions struct {
	// Spans are the acquisitions, on the workload's Clock, also those of the grace period after End.
	Spans []Span
	// Waits[i] is how long the Obtain of Spans[i] took.
	Waits []time.Duration
	// Unfinished are the waits given up at the end of the grace period, as long as they had lasted.
	Unfinished []time.Duration
	// PerHolder counts the spans of each holder, from FirstHolder on: a holder that never got the lock counts 0.
	PerHolder map[int]int64
	// Discarded counts the locks obtained just as the grace period ended: released at once, not in Spans. The
	// servers saw them, so costs per acquisition count them.
	Discarded int64
}

// Merge returns the acquisitions of several processes as those of one run.
func Merge(parts ...Acquisitions) Acquisitions {
	var all Acquisitions
	all.PerHolder = map[int]int64{}
	for _, p := range parts {
		all.Spans = append(all.Spans, p.Spans...)
		all.Waits = append(all.Waits, p.Waits...)
		all.Unfinished = append(all.Unfinished, p.Unfinished...)
		all.Discarded += p.Discarded
		for h, n := range p.PerHolder {
			all.PerHolder[h] += n
		}
	}
	return all
}

// releaseTimeout bounds a release, which runs after End too.
const releaseTimeout = 5 * time.Second

// Run runs the workload with obtain and returns what it measured; guard checks mutual exclusion (give every
// process of a run the same Guard memory). Times come from clock. It returns the first error of obtain (other
// than the end of the run) or of a release; the run then stops.
//
// A wait is given up after the grace period by cancelling the context given to obtain. That context is not
// cancelled once obtain has returned, since some libraries tie the held lock to it; a lock that was obtained
// just as the grace period ended is released at once and not counted.
func (w Workload) Run(clock *Clock, guard *Guard, obtain Obtain) (Acquisitions, error) {
	stopping, stop := context.WithCancel(context.Background())
	defer stop()
	ended, end := context.WithCancel(context.Background())
	defer end()
	stopTimer := time.AfterFunc(clock.Until(w.End), stop)
	defer stopTimer.Stop()
	endTimer := time.AfterFunc(clock.Until(w.End)+w.Grace, end)
	defer endTimer.Stop()

	var (
		mu   sync.Mutex
		all  = Acquisitions{PerHolder: map[int]int64{}}
		errs []error
		wg   sync.WaitGroup
	)
	time.Sleep(clock.Until(w.Start))
	for g := range w.Goroutines {
		holder := w.FirstHolder + g
		wg.Go(func() {
			mine, err := w.loop(stopping, ended, clock, guard, obtain, holder)
			mu.Lock()
			defer mu.Unlock()
			all.Spans = append(all.Spans, mine.Spans...)
			all.Waits = append(all.Waits, mine.Waits...)
			all.Unfinished = append(all.Unfinished, mine.Unfinished...)
			all.Discarded += mine.Discarded
			all.PerHolder[holder] = int64(len(mine.Spans))
			if err != nil {
				errs = append(errs, err)
				stop()
				end()
			}
		})
	}
	wg.Wait()
	return all, errors.Join(errs...)
}

// loop is one goroutine of Run.
func (w Workload) loop(stopping, ended context.Context, clock *Clock, guard *Guard, obtain Obtain, holder int) (Acquisitions, error) {
	var mine Acquisitions
	for stopping.Err() == nil {
		call, cancel := context.WithCancel(context.Background())
		detach := context.AfterFunc(ended, cancel)
		t0 := clock.Now()
		release, err := obtain(call)
		acquired := clock.Now()
		if !detach() {
			// The grace period ended while obtain waited: what it obtained is not counted.
			if err == nil {
				mine.Discarded++
				err = releaseNow(release)
			} else {
				err = nil
				mine.Unfinished = append(mine.Unfinished, acquired.Sub(t0))
			}
			cancel()
			return mine, err
		}
		if err != nil {
			cancel()
			return mine, fmt.Errorf("holder %d: obtain: %w", holder, err)
		}
		seen := guard.Enter()
		Spin(w.Hold)
		guard.Leave(seen)
		releasing := clock.Now()
		err = releaseNow(release)
		released := clock.Now()
		cancel()
		if err != nil {
			return mine, fmt.Errorf("holder %d: release: %w", holder, err)
		}
		mine.Spans = append(mine.Spans, Span{Acquired: acquired, Releasing: releasing, Released: released, Holder: holder})
		mine.Waits = append(mine.Waits, acquired.Sub(t0))
		if w.Think > 0 && stopping.Err() == nil {
			time.Sleep(w.Think)
		}
	}
	return mine, nil
}

func releaseNow(release func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	return release(ctx)
}

// Spin keeps the processor busy for d without sleeping: time.Sleep rounds short sleeps up to the timer's
// granularity (a 200 µs sleep measured 1.1 ms on a loaded 2-core machine), which would hide a lock's own cost
// behind an inflated hold. It yields between checks, so other goroutines still run.
func Spin(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
		runtime.Gosched()
	}
}
