// Package redistest holds test helpers that give tests a Redis to talk to.
//
// Two kinds are offered:
//
//   - Real redis-server processes (Start, StartN): each runs on its own free
//     loopback port in its own temporary directory, without persistence, and
//     can be killed, paused (SIGSTOP), resumed and restarted to inject the
//     failures a distributed lock has to survive. They need the redis-server
//     binary in $PATH (Debian package redis-server); without it the tests are
//     skipped loudly, or fail when CI=true (see Require).
//   - Real deployments: a Sentinel group (StartSentinel: a master, a
//     replica and three sentinels) and a Cluster (StartCluster: three
//     masters with a replica each), both with go-redis clients built from
//     go-redis' default options as users build them, and failovers that
//     return once the deployment has settled (SentinelGroup.Failover and
//     FailoverLagging, Cluster.Failover). These need redis-cli as well.
//   - In-memory miniredis instances (Miniredis, SynctestClient): fast, no
//     process, and usable inside a testing/synctest bubble with a fake clock.
//
// The config files of the deployments' servers are in testdata/ (embedded):
// data-node.conf, cluster-node.conf and sentinel.conf, each with what its
// settings are for.
//
// Every resource is released with t.Cleanup, so tests using these helpers
// can run under go.uber.org/goleak.
package redistest
