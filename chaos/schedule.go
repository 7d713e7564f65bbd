package chaos

import (
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

func expect(name string, holds func(Result) bool) Expectation {
	return Expectation{Name: name, Holds: holds}
}

func verdictIs(name string, f func(v Verdict) bool) Expectation {
	return expect(name, func(r Result) bool { return f(r.Verdict) })
}

// safety are the properties every phase must keep whatever the fault, as long as the server keeps its data.
var safety = []Expectation{
	verdictIs("0 stale writes accepted", func(v Verdict) bool { return v.StaleAccepted == 0 }),
	verdictIs("fences in real-time order", func(v Verdict) bool { return v.FenceViolations == 0 }),
	verdictIs("no section under an expired lock", func(v Verdict) bool { return v.SectionsExpired == 0 }),
	verdictIs("0 validity overlaps", func(v Verdict) bool { return v.ValidityOverlaps == 0 }),
	verdictIs("no key lost under a valid holder", func(v Verdict) bool { return v.KeyLostWhileValid == 0 }),
	verdictIs("ambiguous acquires cleaned up", func(v Verdict) bool { return v.OwnKeyLeftAfterError == 0 }),
	verdictIs("no acquire that took the lock reported refused",
		func(v Verdict) bool { return v.OwnKeyLeftAfterRefusal == 0 }),
	verdictIs("porcupine: not illegal", func(v Verdict) bool { return v.Linearizable != NotLinear }),
	verdictIs("storage without errors", func(v Verdict) bool { return v.StoreErrors == 0 }),
}

// quorumSafety is safety for Redlock phases: a failed Redlock attempt releases what it took when the nodes'
// late answers arrive, after the call returned, so the worker's look at the key right after the error may come
// first; leftovers are reported in the table, not asserted.
var quorumSafety = func() []Expectation {
	var out []Expectation
	for _, e := range safety {
		if e.Name != "ambiguous acquires cleaned up" && e.Name != "no acquire that took the lock reported refused" {
			out = append(out, e)
		}
	}
	return out
}()

// faultFree are the properties of a phase whose faults must not disturb mutual exclusion at all.
var faultFree = []Expectation{
	// A section that stalls past its ttl (a loaded machine is a pause too) may be overlapped: that is the
	// pause phase's business. Without such a stall, there must be no overlap and no lost update.
	verdictIs("overlaps only after a section overran its validity",
		func(v Verdict) bool { return v.Overlaps <= v.Overran }),
	verdictIs("lost updates only after a section overran its validity",
		func(v Verdict) bool { return v.LostUpdates == 0 || v.Overran > 0 }),
	verdictIs("progress", func(v Verdict) bool { return v.Sections > 0 }),
	verdictIs("no obtain waited out (20 ttl)", func(v Verdict) bool { return v.TimedOut == 0 }),
}

var injected = expect("faults injected", func(r Result) bool { return r.Faults > 0 })

func with(sets ...[]Expectation) []Expectation {
	var out []Expectation
	for _, s := range sets {
		out = append(out, s...)
	}
	return out
}

// wakeTTL is the ttl and claim window of the wake-up phase; wakeGap bounds its hand-off gaps: far below a lost
// wake-up's cost (wakeTTL), far above a hand-off's (milliseconds; tens under the race detector on a loaded
// machine).
const (
	wakeTTL = 2 * time.Second
	wakeGap = 400 * time.Millisecond
)

// Schedule returns the single-node (lock/) phases, sized by s.
func Schedule(s Settings) []*Phase {
	ttl := s.TTL
	return []*Phase{
		{
			Name: "baseline", Fault: "none", Do: true,
			Expect: with(safety, faultFree, []Expectation{
				verdictIs("0 errors", func(v Verdict) bool { return v.Errors == 0 }),
				verdictIs("porcupine: ok", func(v Verdict) bool { return v.Linearizable == Linear }),
			}),
		},
		{
			// The lost-wake-up detector. A long ttl and as long a claim window: a waiter that misses the release
			// meant for it waits for its timer, at the holder's remaining ttl, and the other process for the
			// reservation it does not claim; the lock lies idle for seconds where a hand-off takes milliseconds.
			// Replies to the lock commands come 5 ms late while the watchers hear releases directly, so a release
			// that lands after a waiter's try was answered by the server reaches the waiter before that answer
			// does; rests of 10–50 ms make processes leave the Redis queue and come back with a try that fails.
			Name: "wake-up",
			Fault: "none but replies 5 ms late (the watchers direct); ttl and claim window 2 s; 2 workers of " +
				"3 goroutines, Obtain and Do",
			TTL: wakeTTL, ClaimWindow: wakeTTL, Hold: time.Millisecond, Rest: 10 * time.Millisecond,
			RestJitter: 40 * time.Millisecond, Workers: 2, Goroutines: 3, Do: true, DirectWatch: true,
			Inject: func(r *PhaseRun) {
				r.AddToxic(Toxic{Name: "latency", Type: "latency", Stream: "downstream",
					Attributes: map[string]any{"latency": 5}})
			},
			Expect: with(safety, faultFree, []Expectation{
				verdictIs("0 errors", func(v Verdict) bool { return v.Errors == 0 }),
				verdictIs("hand-offs to waiters", func(v Verdict) bool { return v.HandOffs > 0 }),
				verdictIs(fmt.Sprintf("no lost wake-up: every hand-off gap ≤ %v", wakeGap),
					func(v Verdict) bool { return v.MaxHandOffGap <= wakeGap }),
			}),
		},
		{
			Name: "pause-holder", Fault: "SIGSTOP the holder (pid from the token) for 3×ttl",
			Inject: func(r *PhaseRun) {
				for r.Remaining() > 4*ttl {
					r.PauseHolder(3 * ttl)
					r.Sleep(ttl)
				}
			},
			Expect: with(safety, []Expectation{injected,
				verdictIs("a holder was caught paused", func(v Verdict) bool { return v.PausedHolders > 0 }),
				verdictIs("paused holders told: Release ErrNotHeld",
					func(v Verdict) bool { return v.PausedHoldersToldLost == v.PausedHolders }),
				verdictIs("paused holders told: Lost closed",
					func(v Verdict) bool { return v.PausedHoldersLostFired == v.PausedHolders }),
			}),
		},
		{
			Name: "latency", Fault: "toxiproxy latency 1.5×ttl on every reply",
			Inject: func(r *PhaseRun) {
				r.AddToxic(Toxic{Name: "latency", Type: "latency", Stream: "downstream",
					Attributes: map[string]any{"latency": (ttl + ttl/2).Milliseconds()}})
			},
			Expect: with(safety, []Expectation{injected,
				verdictIs("late replies seen as expired", func(v Verdict) bool { return v.ExpiredOnArrival > 0 }),
			}),
		},
		{
			Name: "reset-peer", Fault: "toxiproxy reset_peer on every reply, 1 s on / 0.5 s off",
			Try: true, AmbiguousReleases: true,
			Inject: func(r *PhaseRun) {
				for r.Remaining() > 0 {
					r.AddToxic(Toxic{Name: "reset", Type: "reset_peer", Stream: "downstream",
						Attributes: map[string]any{"timeout": 0}})
					r.Sleep(time.Second)
					r.RemoveToxic("reset")
					r.Sleep(time.Second / 2)
				}
			},
			Expect: with(safety, []Expectation{injected,
				verdictIs("lost replies reported as errors", func(v Verdict) bool { return v.Errors > 0 }),
			}),
		},
		{
			Name: "flaky", Fault: "toxiproxy limit_data: each connection cut after 1 kB of replies",
			Try: true, AmbiguousReleases: true,
			Inject: func(r *PhaseRun) {
				r.AddToxic(Toxic{Name: "flaky", Type: "limit_data", Stream: "downstream",
					Attributes: map[string]any{"bytes": 1024}})
			},
			Expect: with(safety, []Expectation{injected}),
		},
		{
			Name: "timeout", Fault: "toxiproxy timeout: replies dropped, 3 s on / 1 s off",
			Try: true, AmbiguousReleases: true,
			Inject: func(r *PhaseRun) {
				for r.Remaining() > 0 {
					// Longer than go-redis's whole retry budget (4 reads of 2×ttl each), so attempts fail instead
					// of being retried into the next healthy window.
					r.AddToxic(Toxic{Name: "timeout", Type: "timeout", Stream: "downstream",
						Attributes: map[string]any{"timeout": 0}})
					r.Sleep(3 * time.Second) // in the short schedule: the whole phase
					r.RemoveToxic("timeout")
					r.Sleep(time.Second)
				}
			},
			Expect: with(safety, []Expectation{injected,
				verdictIs("lost replies reported as errors", func(v Verdict) bool { return v.Errors > 0 }),
			}),
		},
		{
			Name: "partition", Fault: "cut the holder off from the lock server for 3×ttl",
			Minority: true, AmbiguousReleases: true,
			Inject: func(r *PhaseRun) {
				r.Note("partition method: %s", r.rig.PartitionMethod)
				for r.Remaining() > 4*ttl {
					r.CutMinority(3 * ttl)
					r.Sleep(ttl)
				}
			},
			Expect: with(safety, []Expectation{injected}),
		},
		{
			Name: "pubsub-kill", Fault: "CLIENT KILL TYPE pubsub every 100 ms", Do: true,
			Inject: func(r *PhaseRun) {
				for r.Remaining() > 0 {
					r.KillPubSub()
					r.Sleep(100 * time.Millisecond)
				}
			},
			Expect: with(safety, faultFree, []Expectation{injected}),
		},
		{
			Name: "restart-empty", Fault: "kill -9 the lock server and restart it empty, every 1 s",
			Inject: func(r *PhaseRun) {
				for r.Remaining() > 0 {
					r.Sleep(time.Second)
					if r.Remaining() > 0 {
						r.RestartLock()
					}
				}
			},
			Expect: []Expectation{injected,
				verdictIs("0 stale writes accepted", func(v Verdict) bool { return v.StaleAccepted == 0 }),
				verdictIs("fences never go backwards", func(v Verdict) bool { return v.FenceViolations == 0 }),
				verdictIs("no section under an expired lock", func(v Verdict) bool { return v.SectionsExpired == 0 }),
				verdictIs("porcupine (with resets): not illegal", func(v Verdict) bool { return v.Linearizable != NotLinear }),
				verdictIs("storage without errors", func(v Verdict) bool { return v.StoreErrors == 0 }),
			},
		},
	}
}

// RedlockSchedule returns the Redlock phases (three independent nodes), sized by s; the short schedule has only
// the minority kill and Kleppmann's restart.
func RedlockSchedule(s Settings) []*Phase {
	phases := redlockPhases(s.TTL)
	if s.Short {
		return []*Phase{phases[0], phases[3]}
	}
	return phases
}

func redlockPhases(ttl time.Duration) []*Phase {
	return []*Phase{
		{
			Name: "redlock-kill-minority", Fault: "kill -9 one node of 3, down 4×ttl, back empty",
			Redlock: true,
			Inject: func(r *PhaseRun) {
				for r.Remaining() > 0 {
					r.KillNode(0)
					r.Sleep(4 * ttl) // down at least a ttl before it serves again: Redlock's assumption
					r.RestartNode(0)
					r.Sleep(2 * ttl)
				}
			},
			Expect: with(quorumSafety, faultFree, []Expectation{injected}),
		},
		{
			Name: "redlock-pause-node", Fault: "SIGSTOP one node of 3 for 4×ttl",
			Redlock: true,
			Inject: func(r *PhaseRun) {
				for r.Remaining() > 0 {
					r.PauseNode(1)
					r.Sleep(4 * ttl)
					r.ResumeNode(1)
					r.Sleep(2 * ttl)
				}
			},
			Expect: with(quorumSafety, faultFree, []Expectation{injected}),
		},
		{
			Name: "redlock-kill-majority", Fault: "kill -9 two nodes of 3, down 4×ttl, back empty",
			Redlock: true,
			Inject: func(r *PhaseRun) {
				for r.Remaining() > 0 {
					r.KillNode(0)
					r.KillNode(1)
					r.Sleep(4 * ttl)
					r.RestartNode(0)
					r.RestartNode(1)
					r.Sleep(4 * ttl)
				}
			},
			// Obtain rides out an outage until its ctx ends (retrying a try that got no majority): the waiters get
			// the lock once the nodes are back, and none fails.
			Expect: with(quorumSafety, []Expectation{injected,
				verdictIs("Obtain rode out the outages: 0 errors", func(v Verdict) bool { return v.Errors == 0 }),
				verdictIs("progress", func(v Verdict) bool { return v.Sections > 0 }),
				verdictIs("no obtain waited out (20 ttl)", func(v Verdict) bool { return v.TimedOut == 0 }),
			}),
		},
		{
			Name: "redlock-restart-empty", Fault: "node 2 stalled, restart node 0 empty under a holder, resume node 2",
			Redlock: true, Hold: 200 * time.Millisecond,
			Inject: func(r *PhaseRun) {
				// Kleppmann's scenario: the holder's majority is {0, 1}; node 0 forgets the key at once, and the
				// next client finds a majority {0, 2} free while the holder still trusts its lock.
				for r.Remaining() > 2*ttl {
					r.PauseNode(2)
					if r.WaitHolder() {
						r.RestartNode(0)
					}
					r.ResumeNode(2)
					r.Sleep(2 * ttl)
				}
			},
			Expect: []Expectation{injected,
				verdictIs("0 stale writes accepted", func(v Verdict) bool { return v.StaleAccepted == 0 }),
				verdictIs("fences in real-time order", func(v Verdict) bool { return v.FenceViolations == 0 }),
				verdictIs("no section under an expired lock", func(v Verdict) bool { return v.SectionsExpired == 0 }),
				verdictIs("storage without errors", func(v Verdict) bool { return v.StoreErrors == 0 }),
			},
		},
	}
}

// Table formats results as a Markdown table: one row per phase.
func Table(results []Result) string {
	var b strings.Builder
	b.WriteString("| phase | fault | faults | attempts | sections (past validity) | expired on arrival | errors | overlaps | " +
		"validity overlaps | lost updates | stale writes accepted | fence violations | releases not held (within validity) | " +
		"own key left (error / refused) | paused holders told (Lost fired) | porcupine | max wait | hand-offs (max gap) | verdict |\n")
	b.WriteString("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|---|\n")
	for _, r := range results {
		v := r.Verdict
		verdict := "pass"
		if len(r.Failed) > 0 {
			verdict = "FAIL: " + strings.Join(r.Failed, "; ")
		}
		paused := "–"
		if v.PausedHolders > 0 {
			paused = fmt.Sprintf("%d/%d (%d)", v.PausedHoldersToldLost, v.PausedHolders, v.PausedHoldersLostFired)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d (%d) | %d | %d | %d | %d | %d | %d | %d | %d (%d) | %d / %d | %s | %s | %s | %d (%s) | %s |\n",
			r.Phase.Name, r.Phase.Fault, r.Faults, v.Attempts, v.Sections, v.Overran, v.ExpiredOnArrival,
			v.Errors+v.TimedOut, v.Overlaps, v.ValidityOverlaps, v.LostUpdates, v.StaleAccepted,
			v.FenceViolations, v.ReleaseNotHeld, v.ReleaseNotHeldValid, v.OwnKeyLeftAfterError, v.OwnKeyLeftAfterRefusal, paused,
			v.Linearizable, v.MaxWait.Round(time.Millisecond), v.HandOffs, v.MaxHandOffGap.Round(time.Millisecond), verdict)
	}
	return b.String()
}

// DeploymentSchedule returns the failover phases: the single-node lock (lock/) on a Sentinel group and on a
// Cluster, through failovers, sized by s. Short and full schedules have the same phases; each runs at least one
// failover.
func DeploymentSchedule(s Settings) []*Phase {
	ttl := s.TTL
	// Waiters keep acquiring: no obtain waits longer than the long holder's section, plus the slowest failover's
	// switch, plus a few ttl.
	progress := func(long LongHolder) []Expectation {
		return []Expectation{
			verdictIs("progress", func(v Verdict) bool { return v.Sections > 0 }),
			verdictIs("no obtain waited out", func(v Verdict) bool { return v.TimedOut == 0 }),
			expect("max wait ≤ the long section + the slowest switch + 4 ttl", func(r Result) bool {
				var slowest time.Duration
				for _, f := range r.Failovers {
					slowest = max(slowest, f.Switch)
				}
				return r.Verdict.MaxWait <= long.Hold+slowest+4*ttl
			}),
		}
	}
	fenced := []Expectation{injected,
		verdictIs("0 stale writes accepted", func(v Verdict) bool { return v.StaleAccepted == 0 }),
		verdictIs("fences in real-time order", func(v Verdict) bool { return v.FenceViolations == 0 }),
		verdictIs("no section under an expired lock", func(v Verdict) bool { return v.SectionsExpired == 0 }),
		verdictIs("storage without errors", func(v Verdict) bool { return v.StoreErrors == 0 }),
	}
	// The long holder takes the lock for 6 ttl, refreshing it, every 4 ttl, and each failover starts while it
	// holds: its refreshes must reach the new master.
	refreshing := LongHolder{Hold: 6 * ttl, AutoRefresh: true, Rest: 4 * ttl}
	stranded := LongHolder{TTL: 32 * ttl, Hold: 20 * ttl, Rest: 2 * ttl}
	return []*Phase{
		{
			Name: "sentinel-failover", Fault: "SENTINEL FAILOVER (the replica in sync first) while a holder refreshes",
			Deploy: SentinelGroup, LongHolder: refreshing,
			Inject: func(r *PhaseRun) {
				for first := true; first || r.Remaining() > 0; first = false {
					r.WaitHolder0()
					r.FailoverSentinel()
					r.Sleep(2 * ttl)
				}
			},
			Expect: with(fenced, progress(refreshing)),
		},
		{
			Name: "sentinel-failover-lagging",
			Fault: "replica stopped, a long holder takes the lock on the master, master killed -9, replica promoted " +
				"(the old master back empty as a replica)",
			Deploy: SentinelGroup,
			// Its lock outlives the failover (about 3 s: the sentinels see the master down after 1.5 s), so that
			// it still holds it when the others take it on the promoted replica, which never had it.
			LongHolder: stranded,
			Inject: func(r *PhaseRun) {
				for first := true; first || r.Remaining() > 0; first = false {
					// Start while another worker holds the lock and worker 0 rests: it takes the lock on the
					// master after the replica stopped following, a moment later.
					r.WaitHolderOtherThan(0)
					r.FailoverSentinelLagging(func(master *redis.Client) {
						r.StrandHolder(master, 0, 23*ttl) // at worst, worker 0 held it already: its next turn
					})
					r.Sleep(2 * ttl)
				}
			},
			Expect: with(fenced, progress(stranded), []Expectation{
				expect("a holder stranded on the old master", func(r Result) bool { return r.Stranded > 0 }),
				verdictIs("porcupine (with the rollbacks as resets): not illegal",
					func(v Verdict) bool { return v.Linearizable != NotLinear }),
			}),
		},
		{
			Name: "cluster-failover", Fault: "CLUSTER FAILOVER of the lock key's shard while a holder refreshes",
			Deploy: RedisCluster, LongHolder: refreshing,
			Inject: func(r *PhaseRun) {
				for first := true; first || r.Remaining() > 0; first = false {
					r.WaitHolder0()
					r.FailoverCluster()
					// A master does not vote for a replica of the same master twice within 2 × cluster-node-timeout
					// (4 s): the next failover but one of the shard (same direction) must come later than that, or
					// it stalls with the master's writes paused until the manual failover times out (5 s).
					r.Sleep(2 * time.Second)
				}
			},
			Expect: with(safety, fenced, progress(refreshing)),
		},
	}
}
