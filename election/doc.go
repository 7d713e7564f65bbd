// Package election makes one replica of many the leader: the one that runs the nightly report, drains the
// queue, sends the reminders. Leadership is holding a keyward lock named after the election, so it works on one
// Redis ([github.com/keyward/keyward/lock]) or on a Redlock quorum alike, through [keyward.Locker].
//
// The loop a service puts in main:
//
//	locks, err := lock.New(rdb)                       // rdb: your redis.UniversalClient
//	e, err := election.New(locks.Locker(), "reminders",
//		election.WithRedis(rdb))                      // so that others can see who leads (Leader, Observe)
//	err = e.Run(ctx, func(leaderCtx context.Context) error {
//		// Only the leader gets here. leaderCtx is cancelled, with a cause matching ErrLost, the moment the
//		// leadership is lost; storage that must refuse a late leader's writes is given
//		// election.TermFrom(leaderCtx).
//		return sendReminders(leaderCtx)
//	})
//
// Run campaigns, runs fn while this replica leads, cancels fn's context when the leadership is lost, and
// campaigns again, until ctx ends; then it resigns, so that another replica leads within a few round trips, and
// returns ctx's error.
// [Election.Campaign] is the same one step at a time: it returns a [Leadership] (its term number, a Done
// channel, Resign). [Election.Leader] tells anyone who leads now, and [Election.Observe] streams every change.
// [WithObserver] (or [WithLogger]) hears this candidate's terms obtained, released and lost, and the errors
// Campaign and Run ride out.
//
// Campaigning costs no polling: a waiting candidate is woken by the lock's release message, or by a timer at the
// leader's remaining lease when the leader died without releasing (kill -9, a lost machine), so a crashed leader
// is replaced within the lease ttl plus a few milliseconds, and a resigning one within a few round trips.
//
// What it promises: while a leader's lease has not run out on its own monotonic clock, no other candidate of
// the same election leads (with the guarantees and limits of the lock underneath). A leader that was paused (GC,
// SIGSTOP) past its lease finds, on waking, that leaderCtx.Err() reports the loss before it can act again — but
// it may have checked just before the pause; work that must stay correct even then passes the term number to
// storage that refuses terms smaller than the largest it has seen.
package election
