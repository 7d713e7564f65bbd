package ratelimit_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/slot"
	"github.com/keyward/keyward/ratelimit"
)

// restartLimit is the limit of the restart tests: 20 a second (one per 50 ms, longer than a restart takes here),
// bursts of 10.
var restartLimit = ratelimit.PerSecond(20).WithBurst(10)

// around runs take in goroutines until the server was restarted (without persistence: its state is lost) and as
// long again, and returns the admissions take let through. take returns an error when it let nothing through;
// errors while the server is down are expected, and the goroutine tries again a millisecond later.
func around(t *testing.T, srv *redistest.Server, goroutines int, take func(ctx context.Context) error) []admission {
	t.Helper()
	var mu sync.Mutex
	var adms []admission
	var stop atomic.Bool
	var failed atomic.Int64
	more := make(chan struct{}, 1) // an admission was recorded
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for !stop.Load() {
				var a admission
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err := take(slot.With(ctx, func(n int, at, _, end int64) { a.n, a.at, a.end = n, at, end }))
				cancel()
				if err != nil {
					failed.Add(1)
					time.Sleep(time.Millisecond) // the server is down: try again
					continue
				}
				if a.n == 0 {
					continue // refused
				}
				mu.Lock()
				adms = append(adms, a)
				mu.Unlock()
				select {
				case more <- struct{}{}:
				default:
				}
			}
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(adms)
	}
	// reach waits until n admissions were recorded.
	reach := func(n int) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for count() < n {
			select {
			case <-more:
			case <-deadline:
				stop.Store(true)
				t.Fatalf("%d admissions after 30 s, want %d", count(), n)
			}
		}
	}
	reach(20)
	before := count()
	start := time.Now()
	srv.Restart(t)
	restarted := time.Since(start)
	reach(before + 20)
	stop.Store(true)
	wg.Wait()
	t.Logf("%d admissions, %d before the restart (which took %v), %d failed calls", len(adms), before,
		restarted.Round(time.Millisecond), failed.Load())
	return adms
}

// A restart without persistence loses the limiter's time. Processes that ask with a fresh Limiter (no memory of
// an earlier reservation) start afresh: at most one burst more than the bound, in the windows that span it.
func TestRestartWithoutPersistenceFreshLimiters(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	adms := around(t, srv, 4, func(ctx context.Context) error {
		lim, err := ratelimit.New(rdb, "api", restartLimit) // no memory: a new process each time
		require.NoError(t, err)
		_, err = lim.Allow(ctx)
		return err
	})
	e := excess(adms, restartLimit.Interval())
	t.Logf("most beyond one per interval in a window: %.2f (burst %d)", e, restartLimit.Burst)
	assert.Greater(t, e, float64(restartLimit.Burst), "the restart lost the state: a burst came again")
	assert.LessOrEqual(t, e, float64(2*restartLimit.Burst), "at most one burst more than the bound")
}

// A Limiter that waited in line remembers the end of the latest reservation it saw; after the restart the server
// starts no reservation before it. Its waiters keep their pace: no window lets more through than the bound.
func TestRestartWithoutPersistenceKeepsTheLine(t *testing.T) {
	srv := redistest.Start(t)
	lim := newLimiter(t, redis.UniversalClient(srv.Client(t)), "api", restartLimit)
	adms := around(t, srv, 8, func(ctx context.Context) error { return lim.Wait(ctx) })
	e := excess(adms, restartLimit.Interval())
	t.Logf("most beyond one per interval in a window: %.2f (burst %d)", e, restartLimit.Burst)
	assert.LessOrEqual(t, e, float64(restartLimit.Burst), "no window let more through than the bound")
	require.NotEmpty(t, adms)
}
