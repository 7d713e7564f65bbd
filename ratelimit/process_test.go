package ratelimit_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/slot"
	"github.com/keyward/keyward/ratelimit"
)

// The test binary runs itself as the processes of TestProcesses: these variables tell a child what to do.
const (
	helperRole = "KEYWARD_RATELIMIT_ROLE" // "waiters"
	helperAddr = "KEYWARD_RATELIMIT_ADDR" // the redis-server's address
)

const (
	processes        = 4
	goroutinesPerOne = 8
	waitsPerOne      = 20
)

// processLimit is the limit of TestProcesses: 500 a second, bursts of 20.
var processLimit = ratelimit.PerSecond(500).WithBurst(20)

// An admission is one event let through: its tokens, the server's time for them (µs, the bound is stated on
// it), when Wait returned (µs of the wall clock, the same clock as the server's on this machine), and the end of
// its reservation's interval (µs: the order in which reservations reached the server).
type admission struct {
	n                 int
	at, returned, end int64
}

// TestHelperProcess is not a test: it is the code of the child processes, which run the test binary again with
// -test.run=^TestHelperProcess$ and the role in the environment.
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperRole)
	if role == "" {
		t.Skip("the child process of TestProcesses")
	}
	require.Equal(t, "waiters", role)
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv(helperAddr)})
	defer rdb.Close()
	counted := &calls{}
	rdb.AddHook(counted)
	lim, err := ratelimit.New(rdb, "shared", processLimit)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	var wg sync.WaitGroup
	for range goroutinesPerOne {
		wg.Go(func() {
			for range waitsPerOne {
				var a admission
				err := lim.Wait(slot.With(ctx, func(n int, at, _, end int64) { a.n, a.at, a.end = n, at, end }))
				a.returned = time.Now().UnixMicro()
				if !assert.NoError(t, err) {
					return
				}
				mu.Lock()
				fmt.Fprintf(out, "admitted %d %d %d %d\n", a.n, a.at, a.returned, a.end)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Fprintf(out, "calls %d %d\n", counted.commands.Load(), counted.scripts.Load())
}

// excess returns, over the admissions sorted by their time, the most tokens let through in a window [at_i, at_j]
// beyond what its length allows at one per interval: max over i ≤ j of (tokens of i..j) − (at_j − at_i) /
// interval. The limit's bound is that it never exceeds the burst.
func excess(adms []admission, interval time.Duration) float64 {
	s := slices.Clone(adms)
	slices.SortFunc(s, func(a, b admission) int { return int(a.at - b.at) })
	iv := float64(interval.Microseconds())
	// With c_k the tokens of the first k admissions: max over i ≤ j of c_j − c_(i−1) − (at_j − at_i)/iv, as
	// max over j of (c_j − at_j/iv) − min over i ≤ j of (c_(i−1) − at_i/iv).
	var most float64
	lowest, c := 0.0, 0.0
	for k, a := range s {
		if v := c - float64(a.at)/iv; k == 0 || v < lowest {
			lowest = v
		}
		c += float64(a.n)
		most = max(most, c-float64(a.at)/iv-lowest)
	}
	return most
}

func TestExcess(t *testing.T) {
	ms := func(ats ...int64) []admission {
		var as []admission
		for _, at := range ats {
			as = append(as, admission{n: 1, at: at * 1000})
		}
		return as
	}
	assert.InDelta(t, 0, excess(nil, time.Millisecond), 1e-9)
	assert.InDelta(t, 1, excess(ms(0, 1, 2, 3), time.Millisecond), 1e-9, "one per interval: one token in a window of length 0")
	assert.InDelta(t, 3, excess(ms(5, 5, 5), time.Millisecond), 1e-9, "three at once")
	assert.InDelta(t, 5, excess(ms(0, 0, 0, 1, 2, 3, 3, 3), time.Millisecond), 1e-9, "8 in a window of 3 intervals")
	assert.InDelta(t, 3, excess(ms(0, 10, 10, 10, 50), time.Millisecond), 1e-9)
}

// TestProcesses runs processes whose goroutines wait for the same limiter in a loop, and checks on the times the
// server gave their tokens that no window let more through than the limit's bound (burst + length / interval),
// that no Wait returned before its tokens' time, and that each Wait cost one call.
func TestProcesses(t *testing.T) {
	srv := redistest.Start(t)
	type result struct {
		adms  []admission
		calls []int64
		err   error
	}
	results := make([]result, processes)
	var wg sync.WaitGroup
	for i := range processes {
		cmd, lines, stderr := redistest.Child(t, helperRole+"=waiters", helperAddr+"="+srv.Addr())
		wg.Go(func() {
			r := &results[i]
			for lines.Scan() {
				f := strings.Fields(lines.Text())
				var v []int64
				for _, s := range f[1:] {
					n, _ := strconv.ParseInt(s, 10, 64)
					v = append(v, n)
				}
				switch {
				case len(f) == 5 && f[0] == "admitted":
					r.adms = append(r.adms, admission{n: int(v[0]), at: v[1], returned: v[2], end: v[3]})
				case len(f) == 3 && f[0] == "calls":
					r.calls = v
				}
			}
			if err := cmd.Wait(); err != nil {
				r.err = fmt.Errorf("%w\n%s", err, stderr)
			}
		})
	}
	wg.Wait()

	var all []admission
	for i, r := range results {
		require.NoError(t, r.err, "process %d", i)
		require.Len(t, r.adms, goroutinesPerOne*waitsPerOne, "process %d", i)
		require.Len(t, r.calls, 2, "process %d", i)
		assert.LessOrEqual(t, r.calls[1], int64(goroutinesPerOne*waitsPerOne+goroutinesPerOne),
			"process %d: one script per Wait (and, for each of the first calls, the EVAL that loads it)", i)
		all = append(all, r.adms...)
	}
	interval := processLimit.Interval()
	e := excess(all, interval)
	t.Logf("%d admissions; most beyond one per interval in a window: %.2f (burst %d)", len(all), e, processLimit.Burst)
	assert.LessOrEqual(t, e, float64(processLimit.Burst), "no window let more through than burst + length / interval")
	assert.Greater(t, e, float64(processLimit.Burst)/2, "the burst was used: the check had something to check")
	first, last := all[0].at, all[0].at
	for _, a := range all {
		assert.GreaterOrEqual(t, a.returned, a.at, "no Wait returns before its tokens' time")
		first, last = min(first, a.at), max(last, a.at)
	}
	// Waiting in line, they used the rate: 640 events at 500/s, 20 at once.
	span := time.Duration(last-first) * time.Microsecond
	want := time.Duration(len(all)-processLimit.Burst) * interval
	assert.InDelta(t, want, span, float64(50*time.Millisecond), "let through at the limit's rate, not slower")
}
