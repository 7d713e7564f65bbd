package chaos

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/redistest"
)

// Deployment is the Redis deployment a phase's lock lives on.
type Deployment int

const (
	// SingleNode: the lock server behind toxiproxy (or the Redlock nodes, for a Redlock phase).
	SingleNode Deployment = iota
	// SentinelGroup: redistest's Sentinel group (a master, a replica, three sentinels); the workers' lock client
	// is a go-redis failover client.
	SentinelGroup
	// RedisCluster: redistest's Cluster (three masters with a replica each); the workers' lock client is a
	// go-redis cluster client.
	RedisCluster
)

// String names the deployment as the verdict tables do.
func (d Deployment) String() string {
	switch d {
	case SingleNode:
		return "single node"
	case SentinelGroup:
		return "Sentinel group"
	case RedisCluster:
		return "Cluster"
	}
	return fmt.Sprintf("Deployment(%d)", int(d))
}

// LongHolder describes worker 0's locks in a phase that has one: a job that holds the lock far longer than the
// others do, across the faults.
type LongHolder struct {
	// TTL is its locks' ttl (the phase's when zero); Hold the length of its sections.
	TTL, Hold time.Duration
	// AutoRefresh keeps its locks alive by refreshing them (Hold may then exceed TTL).
	AutoRefresh bool
	// Rest is how long it waits before each attempt (the first too), so that the others get their turns.
	Rest time.Duration
}

// A Failover is one failover of a phase, as the rig saw it.
type Failover struct {
	// Took is how long it took, from its start until the deployment had settled again (the rig's waits
	// included: the replica in sync, the old master rejoined).
	Took time.Duration
	// Switch is how long after its start the switch came: the first sentinel named the new master, or the
	// Cluster replica took the role of master. 0: not seen.
	Switch time.Duration
	// Gap is the hand-off gap after the switch: from the later of the switch and the moment the holder at the
	// switch gave the lock up (called Release, or its validity ended), to the next obtain's return; from the
	// switch itself when the next obtain came before that (the holder's lock was lost in the failover).
	Gap time.Duration
	// Kept counts the holders at the switch whose Release found their lock (with auto-refresh: refreshed
	// through the failover); Lost those whose Release found it gone, or whose Lost fired.
	Kept, Lost int
}

// failoverSpan is one failover: its span, and the Mono reading of its switch (0: not seen).
type failoverSpan struct {
	Span
	switched int64
}

// Prepare starts the deployments that phases need (a Sentinel group, a Cluster), once each, shared by those
// phases: a rig takes seconds to start, a failover leaves it settled for the next phase. It must run on the
// test's goroutine, before Run; everything is stopped in t.Cleanup.
func (g *Rig) Prepare(t testing.TB, phases []*Phase) {
	t.Helper()
	for _, p := range phases {
		switch {
		case p.Deploy == SentinelGroup && g.Sentinel == nil:
			g.Sentinel = redistest.StartSentinel(t)
			g.sentinelClient = g.Sentinel.Client(t)
		case p.Deploy == RedisCluster && g.Cluster == nil:
			g.Cluster = redistest.StartCluster(t)
			g.clusterClient = g.Cluster.Client(t)
		}
	}
}

// FailoverSentinel runs a clean failover of the Sentinel group (SENTINEL FAILOVER once the replica is in sync,
// see redistest.SentinelGroup.Failover) and waits until the group has settled again.
func (r *PhaseRun) FailoverSentinel() {
	from := Mono()
	stop := r.watchSwitch(r.sentinelSwitched())
	r.rig.Sentinel.Failover(r.t)
	r.failovers = append(r.failovers, failoverSpan{Span{From: from, To: Mono()}, stop()})
	r.faults++
}

// FailoverSentinelLagging promotes the replica after it missed writes (redistest.SentinelGroup.FailoverLagging):
// the replica stopped, writes called with a client of the master, the master killed (-9), the replica
// promoted, the old master back as an empty replica. What the workers did on the master after the replica
// stopped is lost: lock keys, refreshes, releases, the fencing counter's increments. The span counts as a reset
// for porcupine (the lock's state went back in time).
func (r *PhaseRun) FailoverSentinelLagging(writes func(master *redis.Client)) {
	from := Mono()
	stop := r.watchSwitch(r.sentinelSwitched())
	r.rig.Sentinel.FailoverLagging(r.t, writes)
	span := Span{From: from, To: Mono()}
	r.failovers = append(r.failovers, failoverSpan{span, stop()})
	r.resets = append(r.resets, span)
	r.faults++
}

// FailoverCluster runs CLUSTER FAILOVER on the replica of the lock key's shard (redistest.Cluster.Failover: the
// master stops writes until the replica has them all) and waits until the cluster has settled again.
func (r *PhaseRun) FailoverCluster() {
	from := Mono()
	replica := r.rig.Cluster.ReplicaOf(r.key)
	if replica == nil {
		r.t.Fatalf("chaos: %s: the shard of %q has no replica", r.phase.Name, r.key)
	}
	c := redis.NewClient(&redis.Options{Addr: replica.Addr(), MaxRetries: -1})
	defer c.Close()
	stop := r.watchSwitch(func(ctx context.Context) bool {
		role, err := c.Do(ctx, "ROLE").Slice()
		return err == nil && len(role) > 0 && role[0] == "master"
	})
	r.rig.Cluster.Failover(r.t, r.key)
	r.failovers = append(r.failovers, failoverSpan{Span{From: from, To: Mono()}, stop()})
	r.faults++
}

// sentinelSwitched returns a probe that reports whether a sentinel names another master than the current one:
// the moment go-redis failover clients are told to switch (+switch-master).
func (r *PhaseRun) sentinelSwitched() func(ctx context.Context) bool {
	old := r.rig.Sentinel.Master()
	if old == nil {
		r.t.Fatalf("chaos: %s: no sentinel names a master", r.phase.Name)
	}
	var sentinels []*redis.SentinelClient
	for _, addr := range r.rig.Sentinel.SentinelAddrs() {
		sentinels = append(sentinels, redis.NewSentinelClient(&redis.Options{Addr: addr, MaxRetries: -1}))
	}
	r.t.Cleanup(func() {
		for _, sc := range sentinels {
			_ = sc.Close()
		}
	})
	return func(ctx context.Context) bool {
		for _, sc := range sentinels {
			hp, err := sc.GetMasterAddrByName(ctx, redistest.SentinelMasterName).Result()
			if err == nil && len(hp) == 2 && net.JoinHostPort(hp[0], hp[1]) != old.Addr() {
				return true
			}
		}
		return false
	}
}

// watchSwitch polls probe every millisecond, in a goroutine, until it reports true or stop is called; stop
// returns the Mono reading at which it first did (0: not seen).
func (r *PhaseRun) watchSwitch(probe func(ctx context.Context) bool) (stop func() int64) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int64, 1)
	go func() {
		for ctx.Err() == nil {
			pctx, pcancel := context.WithTimeout(ctx, 100*time.Millisecond)
			ok := probe(pctx)
			pcancel()
			if ok {
				done <- Mono()
				return
			}
			sleep(ctx, time.Millisecond) // observation's pace
		}
		done <- 0
	}()
	return func() int64 {
		cancel()
		return <-done
	}
}

// WaitHolder0 waits until worker 0 holds the lock, for at most the rest of the phase, and reports whether it
// does.
func (r *PhaseRun) WaitHolder0() bool {
	w, _ := r.waitHolder(0)
	return w != nil
}

// WaitHolderOtherThan waits until a worker other than worker id holds the lock, for at most the rest of the
// phase, and reports whether one does.
func (r *PhaseRun) WaitHolderOtherThan(id int) bool {
	for r.Remaining() > 0 {
		if w, _ := r.holder(); w != nil && w.id != id {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return false
}

// StrandHolder, given a client of a master whose replica stopped following it, waits (for at most d) until
// worker id takes the lock there, with a value the key did not hold when it was called: a lock the replica will
// never see. It reports whether it saw one. (If worker id held the lock already, that takes its next turn.)
func (r *PhaseRun) StrandHolder(master *redis.Client, id int, d time.Duration) bool {
	_, before := r.holderOn(master)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if w, v := r.holderOn(master); w != nil && w.id == id && v != before {
			r.stranded++
			// Pacing, not synchronisation: the master stays up a moment, so that the acquire's reply reaches
			// the worker (killing it at once can reset the connection with the reply still unsent).
			time.Sleep(50 * time.Millisecond)
			return true
		}
		time.Sleep(time.Millisecond)
	}
	r.Note("no holder stranded on the old master within %v", d)
	return false
}

// failovers measures each failover against the history (see Failover).
func failovers(records []Record, spans []failoverSpan) []Failover {
	held := slices.DeleteFunc(slices.Clone(records), func(r Record) bool { return !r.HasLock() })
	slices.SortFunc(held, func(a, b Record) int { return cmp64(a.Start, b.Start) })
	end := func(r *Record) int64 { // the validity interval's end, as the checker sees it
		if r.RelCall > 0 {
			return min(r.Until, r.RelCall)
		}
		return r.Until
	}
	out := make([]Failover, len(spans))
	for i, s := range spans {
		f := &out[i]
		f.Took = time.Duration(s.To - s.From)
		if s.switched == 0 {
			continue
		}
		f.Switch = time.Duration(s.switched - s.From)
		free, next := s.switched, int64(0)
		for j := range held {
			r := &held[j]
			if r.Start < s.switched && end(r) > s.switched { // holding at the switch
				free = max(free, end(r))
				switch {
				case r.Release == Released && !r.LostFired:
					f.Kept++
				case r.Release == ReleaseNotHeld || r.Release == ReleaseLost || r.LostFired:
					f.Lost++
				}
			}
			if next == 0 && r.Start > s.switched {
				next = r.Start
			}
		}
		switch {
		case next == 0: // nobody obtained the lock after the switch
		case next < free:
			f.Gap = time.Duration(next - s.switched)
		default:
			for j := range held {
				if held[j].Start >= free {
					f.Gap = time.Duration(held[j].Start - free)
					break
				}
			}
		}
	}
	return out
}

// FailoverTable formats the failovers of the results that have some as a Markdown table: one row per phase.
func FailoverTable(results []Result) string {
	var b strings.Builder
	b.WriteString("| phase | deployment | failovers | each took (switch after) | hand-off gap after each switch | holders at a switch: kept / lost | " +
		"max wait | validity overlaps | keys lost under a valid holder | fenced writes refused | stale writes accepted | fence violations | stranded holders |\n")
	b.WriteString("|---|---|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range results {
		if len(r.Failovers) == 0 {
			continue
		}
		var took, gaps []string
		kept, lost := 0, 0
		for _, f := range r.Failovers {
			took = append(took, fmt.Sprintf("%s (%s)", roundDuration(f.Took), roundDuration(f.Switch)))
			gaps = append(gaps, roundDuration(f.Gap))
			kept += f.Kept
			lost += f.Lost
		}
		v := r.Verdict
		fmt.Fprintf(&b, "| %s | %v | %d | %s | %s | %d / %d | %s | %d | %d | %d | %d | %d | %d |\n",
			r.Phase.Name, r.Phase.Deploy, len(r.Failovers), strings.Join(took, ", "), strings.Join(gaps, ", "),
			kept, lost, roundDuration(v.MaxWait), v.ValidityOverlaps, v.KeyLostWhileValid, v.Rejected,
			v.StaleAccepted, v.FenceViolations, r.Stranded)
	}
	return b.String()
}

// roundDuration prints d to the millisecond.
func roundDuration(d time.Duration) string { return d.Round(time.Millisecond).String() }
