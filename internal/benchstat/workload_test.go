package benchstat_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/benchstat"
	"github.com/keyward/keyward/internal/redistest"
)

func TestClock(t *testing.T) {
	a, err := benchstat.NewClock()
	require.NoError(t, err)
	b, err := benchstat.NewClock()
	require.NoError(t, err)
	for _, tc := range []struct {
		name  string
		clock *benchstat.Clock
	}{
		{"first", a},
		{"second", b},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.clock.Now()
			reading, err := redistest.Monotonic()
			require.NoError(t, err)
			after := tc.clock.Now()
			mono := time.Unix(0, int64(reading))
			// Calibration error is far below a millisecond; the bound leaves room for a descheduled test.
			assert.WithinDuration(t, mono, before, 5*time.Millisecond)
			assert.False(t, after.Before(before), "the clock does not go back")
			now := time.Now()
			assert.Equal(t, tc.clock.At(now).Add(time.Second), tc.clock.At(now.Add(time.Second)))
			assert.InDelta(t, float64(time.Second), float64(tc.clock.Until(tc.clock.Now().Add(time.Second))), float64(5*time.Millisecond))
		})
	}
	assert.WithinDuration(t, a.Now(), b.Now(), time.Millisecond, "two clocks read the same CLOCK_MONOTONIC")
}

func TestGuard(t *testing.T) {
	// Each step is a holder (by index) entering or leaving.
	type step struct {
		holder int
		enter  bool
	}
	for _, tc := range []struct {
		name     string
		steps    []step
		overlaps int64
		count    int64
	}{
		{"one at a time", []step{{0, true}, {0, false}, {1, true}, {1, false}, {0, true}, {0, false}}, 0, 3},
		{"two inside: the second update is lost", []step{{0, true}, {1, true}, {0, false}, {1, false}}, 1, 1},
		{"three inside", []step{{0, true}, {1, true}, {2, true}, {2, false}, {1, false}, {0, false}}, 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := benchstat.NewGuard(make([]byte, benchstat.GuardSize))
			require.NoError(t, err)
			seen := map[int]int64{}
			for _, s := range tc.steps {
				if s.enter {
					seen[s.holder] = g.Enter()
				} else {
					g.Leave(seen[s.holder])
				}
			}
			assert.Equal(t, tc.overlaps, g.Overlaps())
			assert.Equal(t, tc.count, g.Count())
		})
	}
}

func TestNewGuardRefusesBadMemory(t *testing.T) {
	mem := make([]byte, 2*benchstat.GuardSize)
	for _, tc := range []struct {
		name string
		mem  []byte
	}{
		{"too short", mem[:benchstat.GuardSize-1]},
		{"misaligned", mem[1 : 1+benchstat.GuardSize]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := benchstat.NewGuard(tc.mem)
			assert.Error(t, err)
		})
	}
}

func TestGuardsShareMemory(t *testing.T) {
	mem := make([]byte, benchstat.GuardSize)
	a, err := benchstat.NewGuard(mem)
	require.NoError(t, err)
	b, err := benchstat.NewGuard(mem)
	require.NoError(t, err)
	seen := a.Enter()
	b.Leave(b.Enter())
	a.Leave(seen)
	assert.Equal(t, int64(1), b.Overlaps())
	assert.Equal(t, int64(1), b.Count(), "a's update overwrote b's")
}

// mutexLock is a correct in-process lock with the Obtain shape.
func mutexLock() benchstat.Obtain {
	ch := make(chan struct{}, 1)
	return func(ctx context.Context) (func(context.Context) error, error) {
		select {
		case ch <- struct{}{}:
			return func(context.Context) error { <-ch; return nil }, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func newGuard(t *testing.T) *benchstat.Guard {
	g, err := benchstat.NewGuard(make([]byte, benchstat.GuardSize))
	require.NoError(t, err)
	return g
}

func TestWorkloadRun(t *testing.T) {
	never := func(ctx context.Context) (func(context.Context) error, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	for _, tc := range []struct {
		name       string
		obtain     func() benchstat.Obtain
		goroutines int
		think      time.Duration
		spans      bool // some acquisitions happen
		unfinished int  // waits given up at the end, at least
	}{
		{"a correct lock, thinking", mutexLock, 4, time.Millisecond, true, 0},
		{"a lock nobody gets", func() benchstat.Obtain { return never }, 3, 0, false, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				clock, err := benchstat.NewClock()
				require.NoError(t, err)
				guard := newGuard(t)
				start := clock.Now().Add(10 * time.Millisecond)
				w := benchstat.Workload{Goroutines: tc.goroutines, Think: tc.think, Start: start, End: start.Add(100 * time.Millisecond), FirstHolder: 10}
				got, err := w.Run(clock, guard, tc.obtain())
				require.NoError(t, err)

				assert.Equal(t, tc.spans, len(got.Spans) > 0)
				assert.Len(t, got.Waits, len(got.Spans))
				assert.GreaterOrEqual(t, len(got.Unfinished), tc.unfinished)
				assert.Len(t, got.PerHolder, tc.goroutines)
				var total int64
				for h, n := range got.PerHolder {
					assert.GreaterOrEqual(t, h, 10)
					assert.Less(t, h, 10+tc.goroutines)
					total += n
				}
				assert.Equal(t, int64(len(got.Spans)), total)
				assert.Equal(t, int64(len(got.Spans)), guard.Count(), "no lost updates")
				assert.Zero(t, guard.Overlaps())
				for _, s := range got.Spans {
					assert.False(t, s.Acquired.Before(start))
					assert.False(t, s.Released.Before(s.Releasing))
				}
				if tc.think > 0 {
					// Each goroutine thinks after each acquisition, so it cannot have had more than the run allows.
					for _, n := range got.PerHolder {
						assert.LessOrEqual(t, n, int64(100*time.Millisecond/tc.think)+1)
					}
				}
			})
		})
	}
}

func TestWorkloadRunReportsErrors(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		name   string
		obtain benchstat.Obtain
	}{
		{"obtain fails", func(context.Context) (func(context.Context) error, error) { return nil, boom }},
		{"release fails", func(context.Context) (func(context.Context) error, error) {
			return func(context.Context) error { return boom }, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				clock, err := benchstat.NewClock()
				require.NoError(t, err)
				start := clock.Now()
				w := benchstat.Workload{Goroutines: 2, Start: start, End: start.Add(time.Hour)}
				_, err = w.Run(clock, newGuard(t), tc.obtain)
				assert.ErrorIs(t, err, boom, "the run stops at the first error, long before its end")
			})
		})
	}
}

// TestWorkloadGuardCatchesABrokenLock runs on the real clock: Spin yields but never blocks, so a fake clock
// would not advance while it spins.
func TestWorkloadGuardCatchesABrokenLock(t *testing.T) {
	clock, err := benchstat.NewClock()
	require.NoError(t, err)
	guard := newGuard(t)
	var mu sync.Mutex
	obtained := 0
	broken := func(context.Context) (func(context.Context) error, error) {
		mu.Lock()
		obtained++
		mu.Unlock()
		return func(context.Context) error { return nil }, nil
	}
	start := clock.Now()
	w := benchstat.Workload{Goroutines: 2, Hold: 5 * time.Millisecond, Start: start, End: start.Add(100 * time.Millisecond)}
	got, err := w.Run(clock, guard, broken)
	require.NoError(t, err)
	assert.Positive(t, guard.Overlaps(), "two holders spinning 5 ms each, yielding to each other, overlap")
	assert.Less(t, guard.Count(), int64(len(got.Spans)), "and lose updates")
	_, overlaps, _ := benchstat.Gaps(got.Spans)
	assert.Positive(t, overlaps, "the spans overlap too")
}

func TestWorkloadGrace(t *testing.T) {
	// Each goroutine's first Obtain takes 150 ms; the run ends after 100 ms. The goroutines' timers fire at the
	// same instant, so a mutex stands in for the lock: without one, the guard would see their sections overlap.
	var mu sync.Mutex
	slow := func(respectCtx bool) benchstat.Obtain {
		return func(ctx context.Context) (func(context.Context) error, error) {
			timer := time.NewTimer(150 * time.Millisecond)
			defer timer.Stop()
			if respectCtx {
				select {
				case <-timer.C:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			} else {
				<-timer.C
			}
			mu.Lock()
			return func(context.Context) error { mu.Unlock(); return nil }, nil
		}
	}
	for _, tc := range []struct {
		name                         string
		grace                        time.Duration
		respectCtx                   bool
		spans, unfinished, discarded int
	}{
		{"waits end within the grace period", 100 * time.Millisecond, true, 3, 0, 0},
		{"waits are given up at the end", 0, true, 0, 3, 0},
		{"a lock obtained after the end is discarded", 0, false, 0, 0, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				clock, err := benchstat.NewClock()
				require.NoError(t, err)
				guard := newGuard(t)
				start := clock.Now()
				end := start.Add(100 * time.Millisecond)
				w := benchstat.Workload{Goroutines: 3, Think: time.Millisecond, Start: start, End: end, Grace: tc.grace}
				got, err := w.Run(clock, guard, slow(tc.respectCtx))
				require.NoError(t, err)
				assert.Len(t, got.Spans, tc.spans)
				assert.Len(t, got.Unfinished, tc.unfinished)
				assert.Equal(t, int64(tc.discarded), got.Discarded)
				assert.Equal(t, int64(tc.spans), guard.Count(), "locks of the grace period are checked; discarded ones are not held")
				for _, s := range got.Spans {
					assert.True(t, s.Acquired.After(end), "acquired in the grace period, outside the window")
				}
				assert.Zero(t, benchstat.Summarize(got, start, end, 0).Acquisitions)
			})
		})
	}
}
