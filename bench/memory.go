package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// memoryTTL is the ttl of every lock of the memory scenario, and memoryGoroutines how many goroutines of one
// worker share its names.
const (
	memoryTTL        = time.Second
	memoryGoroutines = 16
	// memoryWait is how long after the last release the memory scenario looks again.
	memoryWait = 2*memoryTTL + 1500*time.Millisecond
	// clusterSlots bounds the state that may outlive the locks: O(1) per server, or per cluster slot.
	clusterSlots = 16384
)

// A memoryRun is the memory scenario for one library: Names distinct names, each taken (with the library's
// try-acquire, for memoryTTL) and released once, and what the servers hold before, right after, and memoryWait
// later. Each reading is per node, in the order of the library's nodes.
type memoryRun struct {
	Label   string
	Library library
	// Names is how many names were taken and released (the warm-up's among them), Took how long those after
	// the warm-up took.
	Names int64
	Took  time.Duration
	// Retried counts the tries that failed and were made again (see failedInARow).
	Retried int64
	// Before, After and Later are the servers' state before the worker connected, right after the last release,
	// and memoryWait after it (the worker gone).
	Before, After, Later []nodeMemory
	// Named counts the keys left Later whose name holds one of the lock names, summed over the nodes.
	Named int64
	Err   string
}

// nodeMemory is one server's DBSIZE and INFO memory used_memory.
type nodeMemory struct {
	Keys, UsedMemory int64
}

// MemoryLeft is how much more memory the servers use later than before.
func (m memoryRun) MemoryLeft() int64 { return sum(m.Later).UsedMemory - sum(m.Before).UsedMemory }

// sum adds the nodes up.
func sum(ns []nodeMemory) nodeMemory {
	var t nodeMemory
	for _, n := range ns {
		t.Keys += n.Keys
		t.UsedMemory += n.UsedMemory
	}
	return t
}

// LeftPerNode returns the most keys any node holds Later beyond what it held Before.
func (m memoryRun) LeftPerNode() int64 {
	var most int64
	for i := range m.Later {
		most = max(most, m.Later[i].Keys-m.Before[i].Keys)
	}
	return most
}

// Clean says whether the servers hold no state per name memoryWait after the last release: no key holds a
// lock name, and no node holds more new keys than there are cluster slots.
func (m memoryRun) Clean() bool { return m.Named == 0 && m.LeftPerNode() <= clusterSlots }

// memory runs the memory scenario for every library in memoryContenders, each on servers of its own, so that
// one library's wait for its last reading goes on while the next takes its names (one library at a time). A
// library that fails is reported, and the others go on.
func memory(ctx context.Context, r *rig, cfg config, errs *[]string) []memoryRun {
	var runs []memoryRun
	var pending []func() (memoryRun, error)
	singles := []int{0, 4, 5}
	for _, c := range memoryContenders {
		if !selected(cfg, c) {
			continue
		}
		lib, ok := libraryNamed(c.Library)
		if !ok {
			continue
		}
		nodes := r.nodes(lib)
		if lib.Nodes == 1 {
			if len(singles) == 0 {
				panic("bench: more single-node libraries in the memory scenario than servers for them")
			}
			nodes, singles = singles[:1], singles[1:]
		}
		pending = append(pending, r.memory(ctx, c.Label, lib, nodes, cfg.names))
	}
	for _, later := range pending {
		m, err := later()
		if err != nil {
			m.Err = err.Error()
			*errs = append(*errs, fmt.Sprintf("%s, memory: %s", m.Label, err))
		}
		fmt.Fprintf(os.Stderr, "%-16s %-12s %s\n", m.Label, "memory", m.progress())
		runs = append(runs, m)
	}
	return runs
}

func (m memoryRun) progress() string {
	if m.Err != "" {
		return "ERROR " + m.Err
	}
	b, a, l := sum(m.Before), sum(m.After), sum(m.Later)
	return fmt.Sprintf("%d names in %v (%d failed tries)  keys %d → %d → %d (%d naming a lock)  used_memory %s → %s → %s",
		m.Names, m.Took.Round(time.Millisecond), m.Retried, b.Keys, a.Keys, l.Keys, m.Named, sizeOf(b.UsedMemory),
		sizeOf(a.UsedMemory), sizeOf(l.UsedMemory))
}

// memory runs one library in the memory scenario, on the servers nodes, flushed: it takes the names, and
// returns the function that waits for the last reading and returns the run. The servers are read before the
// worker connects, right after its last release (still connected), and memoryWait after that, once it has
// exited: the buffers of a client's connections come and go with its traffic (half a MiB for the 16 of a
// worker), and would blur the figures of the state left behind.
func (r *rig) memory(ctx context.Context, label string, lib library, nodes []int, names int) func() (memoryRun, error) {
	m := memoryRun{Label: label, Library: lib}
	failed := func(err error) func() (memoryRun, error) { return func() (memoryRun, error) { return m, err } }
	addrs, admins, err := r.flushed(ctx, nodes)
	if err != nil {
		return failed(err)
	}
	if m.Before, err = readMemory(ctx, admins); err != nil {
		return failed(err)
	}
	const key = "bench-names"
	w, err := r.start(job{Kind: kindMemory, Library: lib.Name, Addrs: addrs, Key: key, Goroutines: memoryGoroutines,
		Names: names, TTL: memoryTTL})
	if err != nil {
		return failed(err)
	}
	defer w.kill()
	// A worker that hangs must not hang the benchmark.
	watchdog := time.AfterFunc(time.Duration(names)*time.Millisecond+time.Minute, func() { _ = w.cmd.Process.Kill() })
	defer watchdog.Stop()
	if err := w.ready(); err != nil {
		return failed(err)
	}
	if err := w.in.Encode(goMsg{Start: r.clock.Now().Add(50 * time.Millisecond).UnixNano()}); err != nil {
		return failed(w.fail("start", err, ""))
	}
	var res result
	if err := w.out.Decode(&res); err != nil || res.Err != "" {
		return failed(w.fail("run", err, res.Err))
	}
	released := time.Now()
	m.Names, m.Took, m.Retried = res.Done, res.Took, res.Retried
	if m.After, err = readMemory(ctx, admins); err != nil {
		return failed(err)
	}
	if err := w.finish(); err != nil {
		return failed(err)
	}
	done := make(chan error, 1)
	go func() {
		time.Sleep(time.Until(released.Add(memoryWait)))
		if m.Later, err = readMemory(ctx, admins); err != nil {
			done <- err
			return
		}
		for _, a := range admins {
			n, err := countKeys(ctx, a, "*"+key+":*")
			if err != nil {
				done <- err
				return
			}
			m.Named += n
		}
		done <- nil
	}()
	return func() (memoryRun, error) {
		err := <-done
		return m, err
	}
}

// readMemory reads DBSIZE and used_memory of each server.
func readMemory(ctx context.Context, admins []*redis.Client) ([]nodeMemory, error) {
	var ns []nodeMemory
	for _, a := range admins {
		keys, err := a.DBSize(ctx).Result()
		if err != nil {
			return nil, err
		}
		info, err := a.Info(ctx, "memory").Result()
		if err != nil {
			return nil, err
		}
		n := nodeMemory{Keys: keys, UsedMemory: -1}
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
				if n.UsedMemory, err = strconv.ParseInt(v, 10, 64); err != nil {
					return nil, fmt.Errorf("INFO memory: used_memory: %w", err)
				}
			}
		}
		if n.UsedMemory < 0 {
			return nil, fmt.Errorf("INFO memory has no used_memory")
		}
		ns = append(ns, n)
	}
	return ns, nil
}

// countKeys counts the keys whose name matches pattern, with SCAN.
func countKeys(ctx context.Context, rdb *redis.Client, pattern string) (int64, error) {
	var n int64
	iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		n++
	}
	return n, iter.Err()
}

// sizeOf shows a number of bytes in B, KiB or MiB.
func sizeOf(n int64) string {
	switch a := max(n, -n); {
	case a < 1<<10:
		return fmt.Sprintf("%d B", n)
	case a < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
}
