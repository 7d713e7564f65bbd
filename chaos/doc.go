// Package chaos is keyward's fault harness: it runs worker OS processes that take a lock and update shared
// storage under it while faults are injected (a holder paused past its ttl, a slow or reset connection, a
// partition, a lost pub/sub connection, a Redis server restarted empty), merges what every worker logged, and
// checks the history for the properties a lock must keep under those faults.
//
// A worker ([RunWorker]) is the test binary re-executed (TestChaosWorker in this package). In the single-node
// phases it runs several goroutines that take the lock through its one client (its in-process queue, hand-overs
// and cohorts), some of them with Do; each loops: obtain
// the lock (lock/ or redlock/) → a deliberately non-atomic read-modify-write of a counter on a separate storage redis-server (GET,
// a short pause, SET) → a fenced write to that storage (a script that refuses a fencing token not larger than
// the largest it accepted) → release. It logs one [Record] per attempt, with CLOCK_MONOTONIC readings ([Mono]),
// which compare across processes on one host.
//
// A [Rig] owns the servers (the storage server and the lock servers, each reached through an in-process
// toxiproxy), starts the workers of a [Phase], runs its fault injection on the test goroutine and stops them.
// [Check] reads the merged history and returns a [Verdict]: lost updates, overlapping critical sections,
// overlapping validity intervals, fence order, stale writes accepted by the fenced store, releases that found
// the lock gone, the longest hand-off gap after a release while someone waited (a lost wake-up), and a second
// opinion from porcupine with a fenced-mutex model ([Linearizable]).
//
// The schedules list the phases with the verdict each must reach: [Schedule] for the single-node lock (lock/),
// [RedlockSchedule] for Redlock (redlock/) over three independent nodes, [DeploymentSchedule] for the lock on a
// Sentinel group and on a Cluster through their failovers (the workers reach those directly, with go-redis
// failover and cluster clients; [Rig.Prepare] starts the deployments once for all their phases, and
// [FailoverTable] adds when each failover switched, the hand-off gap after it and the holders it cost their
// lock). TestChaos runs the short schedule in every `go test` and the full one when KEYWARD_CHAOS=full (make
// chaos); docs/RELIABILITY.md has the numbers.
package chaos
