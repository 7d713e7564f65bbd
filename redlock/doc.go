// Package redlock is a distributed lock held on a majority of N independent Redis nodes (the Redlock algorithm),
// for locks that must outlive the crash of any minority of their servers. For one server, or a deployment that
// Sentinel or Cluster fails over, use [github.com/keyward/keyward/lock], which has the same API.
//
//	locks, err := redlock.New([]redis.UniversalClient{rdbA, rdbB, rdbC}) // independent servers, odd N
//	defer locks.Close()
//	l, err := locks.TryObtain(ctx, "report", time.Minute, redlock.WithAutoRefresh())
//	if errors.Is(err, redlock.ErrNotObtained) {
//		return nil // another replica runs the report
//	}
//	defer l.Release(ctx)
//	store.Write(l.Fence(), data) // storage that refuses fences smaller than the largest it has seen
//
// Obtain waits (without polling) until the lock is free, in a turn order kept on the nodes that is fair across
// processes; Do runs a function under the lock and cancels its context if the lock is lost.
//
// Each operation goes to every node at once, each node bounded by a node timeout much smaller than the ttl
// ([WithNodeTimeout]), and is decided as soon as a majority has answered: a dead or stalled minority costs no
// time. An acquire succeeds when a majority took the lock (SET NX PX of a random token, as the single-node lock
// does) and validity is left: the lock is trusted until (time before sending) + ttl − drift. A failed attempt
// releases the lock wherever it may have taken it, also on nodes that answer late or whose answer was lost.
//
// Every lock carries a fencing token that is larger than the token of every earlier holder of the key. The nodes
// of the majority agree on it in the acquire's own round trip in the common case, and a majority of the nodes
// that hold the lock remember it before it is handed out, which makes it monotonic across holders (see
// [Lock.Fence]).
//
// What Redlock promises, and under which assumptions: while a holder's [Lock.Until] has not passed, no other
// client obtained the lock, provided that clocks run at the same rate within the drift margin ([WithDrift]), and
// that a node that loses its data (a restart without fsync'd persistence) stays away for at least the longest
// ttl in use before it serves again. A process that pauses (GC, SIGSTOP) can still act after its lock expired;
// storage that checks the fencing token refuses its writes. docs/DESIGN.md has the argument.
//
// Errors have the shape they have in every package of keyward: ErrNotObtained when others hold the lock, an
// ErrQuorum error with a [keyward.NodeError] for each node that failed (errors.As tells which node, errors.Is finds
// its cause, e.g. ErrNoPermission), an error matching the context's error and its cause when ctx ended, and one
// matching ErrClosed for a new acquisition after [Client.Close] (locks already held stay usable until released).
// The Client's options ([Option]) are given to New; the only per-call option ([ObtainOption]) is
// [WithAutoRefresh]. [WithObserver] and [WithLogger] hear what the Client does, and [Client.Stats] counts it.
//
// The lock key on every node is the key itself, as for the single-node lock: a redsync mutex and a redlock
// lock on the same key and nodes exclude each other.
package redlock
