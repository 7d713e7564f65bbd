package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward/internal/benchstat"
)

// The kinds of load a worker can run on fresh keys (job.Kind).
const (
	kindSaturation = "saturation"
	kindMemory     = "memory"
)

// A contender is a row of the saturation and memory tables: one of libraries() under the name of its library,
// since these scenarios use only its try-acquire and release, in which the retry settings that tell the rows of
// one library apart play no part.
type contender struct {
	Label   string // the row's name
	Library string // the row of libraries() whose adapter it runs
}

// The rows of the saturation and memory scenarios, keyward's first.
var (
	saturationContenders = []contender{
		{"keyward lock", "keyward lock"},
		{"bsm/redislock", "bsm 100ms"},
		{"redsync", "redsync"},
		{"rueidislock", "rueidislock"},
	}
	memoryContenders = []contender{
		{"keyward lock", "keyward lock"},
		{"keyward redlock", "keyward redlock"},
		{"bsm/redislock", "bsm 100ms"},
		{"redsync", "redsync"},
	}
)

// failedInARow is how many failed tries in a row end a saturation load with an error. On a loaded machine a
// try fails now and then without anything holding the key: rueidislock gives a server 20 ms to answer, keyward's
// Redlock with a 1 s ttl 10 ms per node. The load counts those, and goes on.
const failedInARow = 10

// loadWorker is the worker process of a load (see job.Kind), and returns its exit code. Unlike the other jobs, it
// keeps the library open until the parent has read the servers (its stdin closes): the memory scenario reads
// them again a while after the last release, as from a process that goes on running.
func loadWorker(j job, out *json.Encoder, in *json.Decoder) int {
	var res result
	l, err := load(j, out, in, &res)
	if err != nil {
		res.Err = err.Error()
	}
	if err := out.Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var done struct{}
	_ = in.Decode(&done)
	if l != nil {
		_ = l.Close()
	}
	return 0
}

// load opens the library, warms up, says it is ready, and runs the load from the start the parent gives. It
// returns the library, open, to be closed by the caller.
func load(j job, out *json.Encoder, in *json.Decoder, res *result) (locker, error) {
	ctx := context.Background()
	res.FailedTries = -1
	if j.Goroutines <= 0 {
		return nil, fmt.Errorf("a %s load needs goroutines", j.Kind)
	}
	lib, ok := libraryNamed(j.Library)
	if !ok {
		return nil, fmt.Errorf("no library %q", j.Library)
	}
	l, err := lib.Open(j.Addrs)
	if err != nil {
		return nil, err
	}
	// Loads the scripts and dials a connection per goroutine: with keys of its own for a saturation load, with
	// the first names for a memory load.
	const warmUps = 3
	var retried, done atomic.Int64
	warmUp := func(g int, first bool) error {
		for i := range warmUps {
			if first != (g == 0 && i == 0) {
				continue
			}
			key, keyTTL := fmt.Sprintf("%s:warm-up:%d:%d", j.Key, g, i), ttl
			if j.Kind == kindMemory {
				n := int64(g*warmUps + i)
				if n >= int64(j.Names) {
					break
				}
				key, keyTTL = nameKey(j.Key, n), j.TTL
				done.Add(1)
			}
			if err := tryAgain(ctx, l, key, keyTTL, nil, &retried); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
		return nil
	}
	// The first pair alone (it loads the scripts), then the others.
	if err := warmUp(0, true); err != nil {
		return l, err
	}
	if err := inGoroutines(ctx, j.Goroutines, func(g int, _ func() bool) error { return warmUp(g, false) }); err != nil {
		return l, err
	}
	clock, err := benchstat.NewClock()
	if err != nil {
		return l, err
	}
	start, end, stop, err := readyThenGo(out, in, j.CPUProfile)
	if err != nil {
		return l, err
	}
	defer stop()
	time.Sleep(clock.Until(start))

	lat := make([][]time.Duration, j.Goroutines)
	var pair func(g int, stop func() bool) (int64, error)
	switch j.Kind {
	case kindSaturation:
		retried.Store(0) // the warm-up's are not the run's
		// Each goroutine takes and releases keys of its own, a new one each time, until the end. A key whose try
		// failed is counted and left: the next is as fresh.
		pair = func(g int, stop func() bool) (int64, error) {
			lat[g] = make([]time.Duration, 0, 1<<14)
			prefix := j.Key + ":" + strconv.Itoa(g) + ":"
			var n int64
			for i, failed := 0, 0; !stop() && clock.Now().Before(end); i++ {
				if err := tryPair(ctx, l, prefix+strconv.Itoa(i), ttl, &lat[g]); err != nil {
					if failed++; failed == failedInARow {
						return n, fmt.Errorf("%d tries in a row failed: %w", failed, err)
					}
					retried.Add(1)
					continue
				}
				n, failed = n+1, 0
			}
			return n, nil
		}
	case kindMemory:
		// The goroutines share the names after the warm-up's, each taken and released once (tried again, after a
		// pause, when the try failed).
		var next atomic.Int64
		next.Store(int64(j.Goroutines * warmUps))
		pair = func(g int, stop func() bool) (int64, error) {
			var n int64
			for !stop() {
				i := next.Add(1) - 1
				if i >= int64(j.Names) {
					break
				}
				if err := tryAgain(ctx, l, nameKey(j.Key, i), j.TTL, &lat[g], &retried); err != nil {
					return n, err
				}
				n++
			}
			return n, nil
		}
	default:
		return l, fmt.Errorf("no kind of load %q", j.Kind)
	}
	err = inGoroutines(ctx, j.Goroutines, func(g int, stop func() bool) error {
		n, err := pair(g, stop)
		done.Add(n)
		return err
	})
	res.Took = clock.Now().Sub(start)
	res.Done, res.Retried = done.Load(), retried.Load()
	all := slices.Concat(lat...)
	res.PairP50, res.PairP99 = benchstat.Quantile(all, 0.5), benchstat.Quantile(all, 0.99)
	return l, err
}

// inGoroutines runs f in n goroutines and returns the first error; stop tells the others to stop after it.
func inGoroutines(ctx context.Context, n int, f func(g int, stop func() bool) error) error {
	var (
		wg      sync.WaitGroup
		failed  atomic.Bool
		errOnce sync.Once
		first   error
	)
	stop := func() bool { return failed.Load() || ctx.Err() != nil }
	for g := range n {
		wg.Go(func() {
			if err := f(g, stop); err != nil {
				errOnce.Do(func() { first = err })
				failed.Store(true)
			}
		})
	}
	wg.Wait()
	return first
}

// tryAgain is tryPair, made again after a pause when it fails, for up to 3 × ttl: a try that failed may leave
// the key held on a node, until its ttl ends (keyward's Redlock releases the nodes of a failed try as best it
// can). retried counts the failed tries.
func tryAgain(ctx context.Context, l locker, key string, ttl time.Duration, lat *[]time.Duration, retried *atomic.Int64) error {
	var giveUp time.Time
	for try := 1; ; try++ {
		err := tryPair(ctx, l, key, ttl, lat)
		if err == nil {
			return nil
		}
		if try == 1 {
			giveUp = time.Now().Add(3 * ttl)
		}
		if time.Now().After(giveUp) {
			return fmt.Errorf("%d tries failed in %v: %w", try, 3*ttl, err)
		}
		retried.Add(1)
		time.Sleep(min(time.Duration(try)*10*time.Millisecond, 100*time.Millisecond))
	}
}

// tryPair takes the free lock key with the library's try-acquire and releases it, and appends the pair's
// latency to lat (if not nil).
func tryPair(ctx context.Context, l locker, key string, ttl time.Duration, lat *[]time.Duration) error {
	t0 := time.Now()
	release, err := l.Try(ctx, key, ttl)
	if err != nil {
		return fmt.Errorf("try-acquire %s: %w", key, err)
	}
	if err := release(ctx); err != nil {
		return fmt.Errorf("release %s: %w", key, err)
	}
	if lat != nil {
		*lat = append(*lat, time.Since(t0))
	}
	return nil
}

// nameKey is the i-th lock name of a memory load.
func nameKey(key string, i int64) string { return key + ":" + strconv.FormatInt(i, 10) }
