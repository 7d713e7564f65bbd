// Package keywardgocron runs gocron v2 jobs on several instances of a service, each tick on one instance only,
// with keyward's locks on Redis.
//
// Two ways, as gocron offers them:
//
//   - [NewLocker] makes a gocron.Locker: at every tick each instance tries the job's lock, once, without waiting;
//     the one that gets it runs the job, the others skip the tick.
//   - [NewElector] makes a gocron.Elector: the instances campaign in a keyward election, and only the leader's
//     scheduler runs jobs.
//
// A service's main, with one Redis:
//
//	locks, err := lock.New(rdb) // rdb: your redis.UniversalClient
//	locker, err := keywardgocron.NewLocker(locks.Locker(lock.WithAutoRefresh()))
//	s, err := gocron.NewScheduler(gocron.WithDistributedLocker(locker))
//	_, err = s.NewJob(gocron.DurationJob(time.Minute), gocron.NewTask(locker.Job(report)),
//		gocron.WithName("report"))
//	s.Start()
//	...
//	err = s.Shutdown()
//	err = locker.Close(ctx)
//
// # What a Locker guarantees
//
// A run holds the job's lock from before the job function starts until it has returned. The lock is keyward's:
// no other instance obtains it meanwhile (with the guarantees of the lock package, or of redlock on a quorum).
//
// Auto-refresh: the keyward Locker given to NewLocker must be built with auto-refresh (lock.WithAutoRefresh,
// redlock.WithAutoRefresh), so that a run keeps its lock however long it lasts. The adapter refreshes nothing
// itself: keeping a lock alive (refreshing at a third of the ttl, retrying failures until the validity deadline,
// declaring the loss) is what the library's lease already does, once for one node and for a quorum; a second
// copy here would differ from it in the details that matter. The keyward.Locker interface cannot tell whether
// its locks auto-refresh, so this is a documented requirement, shown in the examples; with a Locker that does not
// refresh, a run longer than the ttl loses its lock, which the context of a job wrapped by [Locker.Job] reports
// by its cancellation, and Unlock by its error.
//
// Exactly once per tick: gocron fires the same tick on every instance at about the same time, each by its own
// clock. An instance whose tick fires late by more than a quick job takes to run would find the lock free
// again, and run the tick a second time. A run therefore holds its lock for at least the minimum hold
// ([WithMinHold], as ShedLock's lockAtLeastFor; [DefaultMinHold] unless set): Unlock of a run that was shorter
// sets the lock's ttl to the rest of the hold and a second, so that the key expires soon after even if the
// process dies, and releases it when the hold is over. (It cannot just leave the key to expire: the auto-refresh
// goes on until the lock is released.) On a Redlock quorum a tick runs at most once: tries that arrive together
// can split the nodes so that none gets a majority, and then every instance skips the tick; where every tick must
// run, use one Redis or an Elector.
//
// Fencing: gocron passes the same context, the job's, to Lock, to the job function and to Unlock, and a context
// cannot carry a value that was added after it was made. [Locker.Job] wraps a job function: it finds the run's lock
// by the job's context and gives the function a context with the lock's fencing token ([FenceFrom]), cancelled
// the moment the lock is lost.
//
// Errors match keyward's sentinels (errors.Is): a tick another instance runs is keyward.ErrNotObtained, which
// gocron passes to the job's AfterLockError listener; a nil Locker or an invalid option is keyward.ErrInvalid;
// calls after Close are keyward.ErrClosed.
//
// # What an Elector guarantees
//
// [Elector.IsLeader] answers from the leadership itself each time gocron asks: nil while this instance holds it
// and its lease has not run out by the local clock, an error matching [ErrNotLeader] otherwise. A leader that
// loses the leadership (its lease ran out, Redis gave it to another after a failure) turns to not leading at
// once, and campaigns again in the background. [Elector.Job] gives a job the term number as its fencing token and
// cancels its context when the leadership ends. Close resigns, so that another instance leads within a few round
// trips.
package keywardgocron
