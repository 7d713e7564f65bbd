// Package acl holds the least-privilege Redis ACL rules keyward needs, one per feature, as they are documented
// in the README ("Permissions (Redis ACL)") and docs/DESIGN.md. The tests of each feature create exactly this
// user on a real server and run the feature's main paths as it; a test of this package checks that the documents
// quote each rule verbatim, so the documents, the tests and the code cannot drift apart.
//
// Each rule is the argument list of ACL SETUSER after the user's name, for keys and channels under the prefix
// "app:" (WithPrefix("app:")); replace "app:" with your prefix, and "secret" with the password. With the
// prefix P, a lock named N has the key PN; the names derived from it (fencing counter, queue, release channel,
// an election's record, a semaphore's reservations and per-process channels) start with "{PN}" (see
// internal/keys), so "~P*" and "~{P*" cover every key, and "&{P*:released" every channel but the probe's.
package acl

import "strings"

// User is the user name the documented rules are given for.
const User = "app"

// Password is the password the documented rules set.
const Password = "secret"

// Prefix is the key prefix the documented rules are written for.
const Prefix = "app:"

// Lock is the rule for lock.Client: TryObtain, Obtain (waiting in line, hand-over), Release, Refresh, TTL,
// Guard (WATCH/MULTI/EXEC/UNWATCH and the GET of the lock key; add the commands and keys of your own guarded
// writes), and the pub/sub connection its waiters share (SUBSCRIBE, UNSUBSCRIBE, PING; PUBLISH on keyward:probe:*
// for the probe).
const Lock = "reset on >secret ~app:* ~{app:* &{app:*:released &keyward:probe:* " +
	"+evalsha +eval +get +set +del +pexpire +pttl +time +zadd +zrem +zscore +zcard +zpopmin " +
	"+publish +subscribe +unsubscribe +ping +watch +multi +exec +unwatch"

// Redlock is the rule for redlock.Client, on each of its servers: the lock's scripts (and the fence raise),
// and the watcher's commands; it has no Guard.
const Redlock = "reset on >secret ~app:* ~{app:* &{app:*:released &keyward:probe:* " +
	"+evalsha +eval +get +set +del +pexpire +pttl +time +zadd +zrem +zscore +zcard +zpopmin " +
	"+publish +subscribe +unsubscribe +ping"

// Semaphore is the rule for semaphore.Semaphore: TryAcquire, Acquire (waiting in line, hand-over), Release,
// Refresh, and its watcher. With WithFencing, add SemaphoreFencing.
const Semaphore = "reset on >secret ~app:* ~{app:* &{app:*:released &keyward:probe:* " +
	"+evalsha +eval +pexpire +pexpireat +pttl +time +zadd +zrem +zscore +zcard +zrange " +
	"+zremrangebyscore +publish +subscribe +unsubscribe +ping"

// SemaphoreFencing is what a semaphore with WithFencing needs besides Semaphore: the fencing counter
// "{P<name>}:fence" is read and set by the scripts.
const SemaphoreFencing = "+get +set"

// Election is the rule for election.Election on a lock.Client: the lock's scripts (campaigning is obtaining
// the lock), the record "{P<name>}:leader" (written and deleted by scripts, read with MULTI/GET/PTTL/EXEC),
// and the watcher its observers use.
const Election = "reset on >secret ~app:* ~{app:* &{app:*:released &keyward:probe:* " +
	"+evalsha +eval +get +set +del +pexpire +pttl +time +zadd +zrem +zscore +zcard +zpopmin " +
	"+publish +subscribe +unsubscribe +ping +multi +exec"

// RateLimit is the rule for ratelimit.Limiter: Allow, Reserve, Cancel and Wait are each one script on the
// limiter's one key "P<name>" (it reads TIME and the key, and writes the key with SET … PX); no channel.
const RateLimit = "reset on >secret ~app:* +evalsha +eval +get +set +time"

// KeyspaceNotifications is what to add to a rule so that waiters also wake on keyspace notifications (a key
// deleted by another tool, expired, evicted) on a server that sends them, in database 0: CONFIG GET, through
// which the Watcher learns whether the server sends them, and the keyspace channels of the keys. Without it,
// waiters rely on release messages and their timers.
const KeyspaceNotifications = "+config|get &__keyspace@0__:app:* &__keyspace@0__:{app:*"

// Args returns rule as the arguments of ACL SETUSER after the user name.
func Args(rule string) []string { return strings.Fields(rule) }

// Command returns the full command that creates the user of rule, as the documents show it.
func Command(rule string) string { return "ACL SETUSER " + User + " " + rule }

// Without returns rule without the permission perm (such as "+zadd"), for tests that show each one is needed.
func Without(rule, perm string) string {
	var out []string
	for _, f := range Args(rule) {
		if f != perm {
			out = append(out, f)
		}
	}
	return strings.Join(out, " ")
}

// Commands returns the commands rule allows ("+evalsha", ...), in order.
func Commands(rule string) []string {
	var out []string
	for _, f := range Args(rule) {
		if strings.HasPrefix(f, "+") {
			out = append(out, f)
		}
	}
	return out
}
