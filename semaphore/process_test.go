package semaphore_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
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
	"github.com/keyward/keyward/internal/token"
	"github.com/keyward/keyward/semaphore"
)

// The test binary runs itself as the processes of TestProcesses and TestCrashedProcess: these variables tell a
// child what to do.
const (
	helperRole  = "KEYWARD_SEMAPHORE_ROLE"  // "holders" or "crash"
	helperAddr  = "KEYWARD_SEMAPHORE_ADDR"  // the redis-server's address
	helperLimit = "KEYWARD_SEMAPHORE_LIMIT" // the semaphore's limit
)

const (
	processes        = 4
	goroutinesPerOne = 8
	roundsPerOne     = 20
	processLimit     = 3
)

// monotonic reads CLOCK_MONOTONIC, which every process on the machine shares (time.Now's monotonic reading is
// only comparable within one process).
func monotonic() int64 {
	d, err := redistest.Monotonic()
	if err != nil {
		panic(err)
	}
	return int64(d)
}

// TestHelperProcess is not a test: it is the code of the child processes, which run the test binary again with
// -test.run=^TestHelperProcess$ and the role in the environment.
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(helperRole)
	if role == "" {
		t.Skip("the child process of TestProcesses and TestCrashedProcess")
	}
	limit, err := strconv.Atoi(os.Getenv(helperLimit))
	require.NoError(t, err)
	rdb := redis.NewClient(&redis.Options{Addr: os.Getenv(helperAddr), PoolSize: 4 * goroutinesPerOne})
	defer rdb.Close()
	sem, err := semaphore.New(rdb, "shared", limit)
	require.NoError(t, err)
	defer sem.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	switch role {
	case "crash":
		_, err := sem.Acquire(ctx, 500*time.Millisecond)
		require.NoError(t, err)
		fmt.Println("held")
		select {} // until killed
	case "holders":
		var mu sync.Mutex
		out := bufio.NewWriter(os.Stdout)
		defer out.Flush()
		var wg sync.WaitGroup
		for range goroutinesPerOne {
			wg.Go(func() {
				for range roundsPerOne {
					p, err := sem.Acquire(ctx, 10*time.Second)
					if !assert.NoError(t, err) {
						return
					}
					start := monotonic()
					time.Sleep(rand.N(2 * time.Millisecond)) // the work
					end := monotonic()
					// A release that finds the permit held proves it was counted on the server all along.
					if !assert.NoError(t, p.Release(ctx)) {
						return
					}
					mu.Lock()
					fmt.Fprintf(out, "span %d %d\n", start, end)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		st := sem.Stats()
		fmt.Fprintf(out, "stats %d %d %d\n", st.Tries, st.FailedTries, st.HandOffs)
	default:
		t.Fatalf("unknown role %q", role)
	}
}

// span is one holder's interval on CLOCK_MONOTONIC: from Acquire returning to Release being called.
type span struct{ start, end int64 }

// maxOverlap returns the largest number of spans that overlap at one instant. A span that ends at the instant
// another starts does not overlap it.
func maxOverlap(spans []span) int {
	type edge struct {
		at    int64
		delta int
	}
	edges := make([]edge, 0, 2*len(spans))
	for _, s := range spans {
		edges = append(edges, edge{s.start, +1}, edge{s.end, -1})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if a.at != b.at {
			return int(a.at - b.at)
		}
		return a.delta - b.delta // ends first
	})
	n, most := 0, 0
	for _, e := range edges {
		n += e.delta
		most = max(most, n)
	}
	return most
}

func TestMaxOverlap(t *testing.T) {
	tests := []struct {
		name  string
		spans []span
		want  int
	}{
		{"none", nil, 0},
		{"one", []span{{1, 5}}, 1},
		{"touching", []span{{1, 5}, {5, 9}}, 1},
		{"nested", []span{{1, 10}, {2, 3}, {4, 8}, {5, 6}}, 3},
		{"chain", []span{{1, 4}, {3, 6}, {5, 8}}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, maxOverlap(tt.spans))
		})
	}
}

// TestProcesses runs processes that each contend with goroutines for a semaphore, acquiring, holding for a
// random time and releasing in a loop, and checks on the holders' own intervals (CLOCK_MONOTONIC, shared by the
// processes) that no more than limit held a permit at any instant.
func TestProcesses(t *testing.T) {
	srv := redistest.Start(t)
	type result struct {
		spans []span
		stats string
		err   error
	}
	results := make([]result, processes)
	var wg sync.WaitGroup
	for i := range processes {
		cmd, lines, stderr := redistest.Child(t, helperRole+"=holders", helperAddr+"="+srv.Addr(), helperLimit+"="+strconv.Itoa(processLimit))
		wg.Go(func() {
			r := &results[i]
			for lines.Scan() {
				f := strings.Fields(lines.Text())
				switch {
				case len(f) == 3 && f[0] == "span":
					start, _ := strconv.ParseInt(f[1], 10, 64)
					end, _ := strconv.ParseInt(f[2], 10, 64)
					r.spans = append(r.spans, span{start, end})
				case len(f) == 4 && f[0] == "stats":
					r.stats = strings.Join(f[1:], " ")
				}
			}
			if err := cmd.Wait(); err != nil {
				r.err = fmt.Errorf("%w\n%s", err, stderr)
			}
		})
	}
	wg.Wait()

	var spans []span
	for i, r := range results {
		require.NoError(t, r.err, "process %d", i)
		assert.Len(t, r.spans, goroutinesPerOne*roundsPerOne, "process %d: every acquisition was released in time", i)
		spans = append(spans, r.spans...)
		t.Logf("process %d: tries, failed tries, hand-offs: %s", i, r.stats)
	}
	most := maxOverlap(spans)
	assert.LessOrEqual(t, most, processLimit, "never more than limit holders at once")
	assert.Greater(t, most, 1, "permits were held concurrently: the check had something to check")
	assert.Zero(t, srv.Client(t).Exists(context.Background(), "shared", "{shared}:queue", "{shared}:reserved").Val(),
		"every permit was released, nobody is left in line, no place is reserved")
}

// TestCrashedProcess kills a process that holds the only permit: the permit is reclaimed after its ttl.
func TestCrashedProcess(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	cmd, lines, stderr := redistest.Child(t, helperRole+"=crash", helperAddr+"="+srv.Addr(), helperLimit+"=1")
	require.True(t, lines.Scan(), "the child says it holds the permit: %s", stderr)
	require.Equal(t, "held", lines.Text())
	held := holders(t, rdb, "shared")
	require.Len(t, held, 1)
	pid, ok := token.Parse(held[0]).PID()
	require.True(t, ok)
	require.Equal(t, cmd.Process.Pid, pid, "the permit's metadata names its process")

	require.NoError(t, cmd.Process.Kill())
	_ = cmd.Wait()
	ctx := withTimeout(t, 30*time.Second)
	p, err := newSem(t, rdb, "shared", 1).Acquire(ctx, time.Minute)
	require.NoError(t, err, "the dead process's permit expired and was reclaimed")
	assert.Equal(t, []string{p.Value()}, holders(t, rdb, "shared"))
	require.NoError(t, p.Release(ctx))
}
