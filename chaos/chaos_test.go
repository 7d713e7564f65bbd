package chaos_test

import (
	"context"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keyward/keyward/chaos"
)

// TestMain checks for leaked goroutines. toxiproxy's stub goroutines are ignored: when a proxy is stopped
// while a toxic is being added or removed, toxiproxy v2.12.0 can leave a stub blocked on a channel send that
// nothing will read (link.go / toxics.(*ToxicStub).Run); it has no way to end them.
//
// A worker of a Sentinel phase also ignores the goroutines of a sentinel subscription that go-redis's failover
// client opens after it was closed: a dial in flight (the pool keeps dialing a master that died) asks the sentinels
// for the master again, and go-redis v9 then makes a new sentinel client and subscription without checking that
// the failover client was closed (sentinelFailover.MasterAddr → setSentinel), which nothing can close afterwards.
// Seen once in the lagging failover phase, whose old master is down while the workers stop.
func TestMain(m *testing.M) {
	opts := []goleak.Option{goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run")}
	if cfg, ok, err := chaos.ConfigFromEnv(); ok && err == nil && cfg.SentinelMaster != "" {
		opts = append(opts,
			goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9.(*sentinelFailover).listen"),
			goleak.IgnoreTopFunction("github.com/redis/go-redis/v9.(*channel).initHealthCheck.func1"),
			goleak.IgnoreAnyFunction("github.com/redis/go-redis/v9.(*channel).initMsgChan.func1"))
	}
	goleak.VerifyTestMain(m, opts...)
}

// TestChaosWorker is the worker process: TestChaos re-executes the test binary with -test.run=^TestChaosWorker$
// and the worker's configuration in KEYWARD_CHAOS_WORKER. It runs until its stdin is closed.
func TestChaosWorker(t *testing.T) {
	cfg, ok, err := chaos.ConfigFromEnv()
	if !ok {
		t.Skip("runs only as a worker process started by TestChaos")
	}
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdinClosed := make(chan struct{})
	go func() {
		defer close(stdinClosed)
		_, _ = io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop the worker
		cancel()
	}()
	err = chaos.RunWorker(ctx, cfg)
	_ = os.Stdin.Close() // unblocks the reader if the worker ended on its own
	<-stdinClosed
	require.NoError(t, err)
	settle(3 * time.Second)
}

// settle waits, at most d, until no goroutine but the test's own is left. go-redis's Close does not cancel a
// dial in flight (one towards a server cut off by a partition ends only at its dial timeout), and it offers no
// event for its end, so the worker looks again every 50 ms before goleak checks at exit.
func settle(d time.Duration) {
	deadline := time.Now().Add(d)
	for goleak.Find() != nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
}

// TestChaos runs the fault schedule against real redis-servers, with worker processes, and asserts each
// phase's expected verdict. The short schedule runs by default; KEYWARD_CHAOS=full runs the full one (make
// chaos). KEYWARD_CHAOS_TABLE=path also writes the verdict table there;
// KEYWARD_CHAOS_PHASES=a,b runs only the phases named; KEYWARD_CHAOS_PHASE_LEN=300ms sets the phases' length.
func TestChaos(t *testing.T) {
	set, name := chaos.ShortSettings(), "short"
	if os.Getenv("KEYWARD_CHAOS") == "full" {
		set, name = chaos.FullSettings(), "full"
	}
	if d := os.Getenv("KEYWARD_CHAOS_PHASE_LEN"); d != "" { // shorter phases, to record a small history
		var err error
		set.PhaseLen, err = time.ParseDuration(d)
		require.NoError(t, err, "KEYWARD_CHAOS_PHASE_LEN")
	}
	start := time.Now()
	rig := chaos.NewRig(t, set)
	var phases []*chaos.Phase
	only := os.Getenv("KEYWARD_CHAOS_PHASES") // a comma-separated subset, for debugging
	for _, p := range slices.Concat(chaos.Schedule(set), chaos.RedlockSchedule(set), chaos.DeploymentSchedule(set)) {
		if only == "" || slices.Contains(strings.Split(only, ","), p.Name) {
			phases = append(phases, p)
		}
	}
	var results []chaos.Result
	for i, p := range phases {
		if p.Deploy != chaos.SingleNode && (i == 0 || phases[i-1].Deploy == chaos.SingleNode) {
			// The Sentinel group and the Cluster, shared by their phases (which come last): started only now, so
			// that they do not run beside the other phases.
			rig.Prepare(t, phases[i:])
		}
		t.Run(p.Name, func(t *testing.T) {
			res := rig.Run(t, p)
			results = append(results, res)
			for _, n := range res.Notes {
				t.Log(n)
			}
			assert.Empty(t, res.Failed, "phase %s: expectations that did not hold\n%s%s", p.Name,
				chaos.Table([]chaos.Result{res}), chaos.FailoverTable([]chaos.Result{res}))
		})
	}
	table := chaos.Table(results)
	if ft := chaos.FailoverTable(results); strings.Count(ft, "\n") > 2 {
		table += "\nFailovers:\n\n" + ft
	}
	t.Logf("%s schedule: %d workers, ttl %v, phases of %v, partitions by %s; %v in all\n\n%s", name,
		set.Workers, set.TTL, set.PhaseLen, rig.PartitionMethod, time.Since(start).Round(time.Second), table)
	if path := os.Getenv("KEYWARD_CHAOS_TABLE"); path != "" {
		require.NoError(t, os.WriteFile(path, []byte(table), 0o644))
	}
}
