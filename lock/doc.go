// Package lock is a distributed lock on one Redis server (or a Sentinel- or Cluster-managed deployment reached
// through one client).
//
// A lock is a key set with SET NX PX to a value that only its holder knows: 128 random bits, followed by the
// holder's host and process id. Release and refresh are Lua scripts that act only while the key still holds that
// value, so a holder whose lock expired can never delete or extend the lock of the next holder. Every
// acquisition also hands out a fencing token, larger than every token handed out for that key before, which
// storage can use to refuse the writes of a holder that was paused past its ttl.
//
//	locks, err := lock.New(rdb)                       // rdb: your redis.UniversalClient
//	l, err := locks.TryObtain(ctx, "report", time.Minute, lock.WithAutoRefresh())
//	if errors.Is(err, lock.ErrNotObtained) {
//		return nil // another replica runs the report
//	}
//	defer l.Release(ctx)
//	select {
//	case <-l.Lost(): // the lock could not be kept: stop working
//	...
//	}
//
// Options given to [New] hold for every lock of the Client; [WithAutoRefresh], an [ObtainOption], is given to one
// call. [WithObserver] and [WithLogger] report what happens to the Client's locks, also in the background (an
// auto-refresh that failed, a lock lost). Errors name the key and match a sentinel of this package (also
// ErrClosed after [Client.Close]), or, for a call whose ctx ended, ctx's error and its cause.
//
// What a Redis lock can promise: while a holder's [Lock.Until] has not passed, no other client of the same
// server obtained the lock, provided the server did not lose the key (a failover to a replica that had not
// received it, or a restart without persistence) and clocks did not drift more than the drift margin. Work that
// must stay correct even then should check the lock's fencing token in the storage it writes to, or write
// through [Lock.Guard] when that storage is the same Redis.
package lock
