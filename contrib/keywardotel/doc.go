// Package keywardotel records what keyward's locks, semaphores and elections do as OpenTelemetry metrics and
// spans: how long calls wait for a lock, how long locks are held, how often they are lost and why, how many
// callers wait now, which process leads an election. It is a module of its own, so that the library does not
// depend on OpenTelemetry; it needs only the OpenTelemetry API (the SDK is the application's choice).
//
// New returns an Observer; pass it to the WithObserver option of every client whose locks should be recorded:
//
//	obs, err := keywardotel.New() // the global MeterProvider and TracerProvider
//	if err != nil {
//		return err
//	}
//	locks, err := lock.New(rdb, lock.WithObserver(obs))
//	sem, err := semaphore.New(rdb, "exports", 4, semaphore.WithObserver(obs))
//	leader, err := election.New(locks.Locker(), "scheduler", election.WithObserver(obs))
//
// # Metrics
//
// Every instrument has the attribute keyward.source (lock, redlock, semaphore, election, ratelimit, keyspace)
// unless said otherwise, and keyward.key when the key label (WithKeyLabel) gives one: by default (DefaultKeyLabel)
// a semaphore's or an election's name, and no key for the locks of lock and redlock and for rate limiters, whose
// keys may be unbounded (per user, per cache entry, per address). Durations are in seconds.
//
//	name                      kind           unit         attributes (besides source, key)     driven by
//	keyward.acquire.duration  histogram      s            keyward.op, keyward.outcome,         Ended (not of Do)
//	                                                      error.type (outcome error only)
//	keyward.hold.duration     histogram      s            keyward.end (released, lost)         the Released or Lost
//	                                                                                           that ends a holding
//	keyward.held              updowncounter  {lock}       -                                    Obtained +1, that end -1
//	keyward.waiters           updowncounter  {waiter}     -                                    WaitStarted +1, WaitEnded -1
//	keyward.lost              counter        {lock}       keyward.reason (expired, taken,      Lost
//	                                                      unknown)
//	keyward.refresh.failures  counter        {failure}    -                                    RefreshFailed
//	keyward.errors            counter        {error}      keyward.during (release, cleanup,    Released with an unknown
//	                                                      background)                          outcome, failed CleanedUp,
//	                                                                                           Error
//	keyward.watch.reconnects  counter        {reconnect}  keyward.source only                  Reconnected
//	keyward.election.leader   updowncounter  {leader}     keyward.key only                     election Obtained +1,
//	                                                                                           its end -1
//	keyward.election.term     gauge          {term}       keyward.key only                     election Obtained (the
//	                                                                                           term), its end (0)
//	keyward.election.changes  counter        {change}     keyward.key, keyward.change          election Obtained, its end
//	                                                      (obtained, released, lost)
//
// keyward.acquire.duration answers both "how long do calls wait for this lock" (outcome obtained: the wait until
// it was obtained) and "how many acquisitions, by outcome" (its count): obtained; not_obtained (a Try… that
// found no room, keyward.ErrNotObtained); cancelled (the call's ctx ended first); error, with error.type the
// keyward sentinel the error matches (invalid, closed, no_permission, wrong_type, read_only, out_of_memory,
// quorum, not_held) or _OTHER. Do is not recorded there: its own obtain (acquire) is a call of its own, recorded
// with op obtain (acquire), and Do's time includes its fn's. An election's campaign is recorded with op campaign.
// A rate limiter's calls are recorded with op allow, reserve or wait: a refused Allow as not_obtained, a Wait
// with the time it slept until its turn.
//
// keyward.held counts the locks (lock, redlock) and semaphore permits this process holds now; elections have
// keyward.election.leader instead: 1 while this process leads, 0 after (it is there at 0 from a candidate's first
// campaign on). Which replica leads is the one whose gauge is 1: the process is told apart by the resource
// attributes of its MeterProvider (service.instance.id). The term is a gauge of its own, not an attribute: there
// is a new one at every election. A holding ends once, at its first Lost or at the Released that settles it (nil,
// or the lock found not held); a Released after a Lost, a second Released, and a Released whose outcome is unknown
// (a timeout: the library still holds the lock until a retried release or its deadline settles it) do not count
// it off again. A loss's keyward.reason is expired when the holder's own validity deadline passed before a
// refresh succeeded (refreshes failing, a paused process, no auto-refresh), taken when Redis was found no longer
// holding it for this holder (the key gone or another's, a redlock held on fewer than a majority, a later term),
// and unknown otherwise.
//
// # Spans
//
// Each call (TryObtain, Obtain, Do, TryAcquire, Acquire, each campaign) has a span named "keyward.<source> <op>",
// e.g. "keyward.lock obtain", of kind internal, with keyward.source, keyward.op and keyward.key (the whole key:
// spans are not aggregated). The call runs on the span's context, so its Redis commands are children of it when
// go-redis is traced too (redisotel), Do's own obtain is a child of Do's span, and Do's fn runs under it. When the
// call ends the span gets keyward.outcome, keyward.wait (seconds until obtained) and keyward.fence (the fencing
// token, or the term), and, for outcome error only, error.type and an error status: not_obtained and cancelled
// are normal outcomes. A wait is shown by the events keyward.wait_started and keyward.wait_ended; a clean-up by
// keyward.cleaned_up. There is one span per call, not one per internal retry: the retries are Redis commands,
// which a go-redis tracer shows under the call's span.
//
// A call that waits links to the spans of the holders it waited for: those that held the lock (permit,
// leadership) when the wait began and when it ended, and the one that gave it up last while it waited (the one
// that handed it over); a Try… that finds the lock taken links to its holders. A holder is known when its call
// ran in this process with this Observer (for Do, the link goes to Do's span, which lasts as long as the lock is
// held); a link has keyward.link=holder and the holder's keyward.fence; a span has 8 links at most. A holder in
// another process is not known: Redis stores no trace context with a lock.
//
// Released, Lost, RefreshFailed and Error have no span of their own; they are events of the span in the context
// they come with, if it records (a Release on a traced request's context shows in its trace, and a release on
// Do's context in Do's span). Background events come with no span.
//
// # Cost
//
// Observe runs on the goroutine where the event happened and never blocks: it updates instruments and a table of
// what this process holds (for keyward.held and the links), under a mutex held only for a map operation. The
// table holds at most the locks, permits and terms held at once, and an entry per key waited for now: each
// holding ends with a Lost or a Released event (a lock nobody releases is lost at its validity deadline), which
// removes it, and each wait with a WaitEnded. A call with metrics and spans costs about 10 µs and 30 allocations
// of the Observer's and the SDK's (BenchmarkCall), against a Redis round trip of 100 µs and more. Semaphore permits without fencing
// tokens (semaphore.WithFencing) cannot be told apart; they are counted by their events alone and have no holder
// links.
package keywardotel
