// Package keyward holds what keyward's packages share: the errors they return (matched with errors.Is), the
// per-node error of a quorum failure ([NodeError]), the [Lock] and [Locker] interfaces that both lock clients
// satisfy, the [Observer] hook and its events, and [Stats].
//
// keyward is a library of distributed locks on Redis, taking the go-redis client an application already has:
//
//   - [github.com/keyward/keyward/lock]: a lock on one Redis server, Sentinel group or Cluster, with fencing
//     tokens, auto-refresh, a signal when the lock is lost, FIFO waiting without polling, and guarded writes.
//   - [github.com/keyward/keyward/redlock]: the same API on a majority of independent Redis nodes (Redlock), for
//     locks that must survive the loss of any minority of their servers.
//   - [github.com/keyward/keyward/semaphore]: at most N holders at a time, each permit with its own ttl.
//   - [github.com/keyward/keyward/election]: one leader among many replicas, with a term that fences its writes,
//     and a way to observe who leads.
//   - [github.com/keyward/keyward/keyspace]: waiting without polling until a key of one's own may have changed
//     (a lock on it released, the key deleted, expired or evicted), on the pub/sub connection that every lock,
//     semaphore and election of the same client shares.
//
// The command github.com/keyward/keyward/cmd/keyward (a module of its own) runs a program under a lock from the
// shell, shows, releases and watches locks, and runs the demo.
//
// Every package returns the sentinels below (its own names for them are the same values), wrapped with the
// details of what went wrong, and wraps the Redis error it got, so both errors.Is(err, keyward.ErrWrongType) and
// the Redis error's text are available.
package keyward
