// Package semaphore is a distributed counting semaphore on Redis: at most N holders at a time, across every
// replica of a service, hold a permit — N concurrent calls to a rate-limited partner API, N heavy exports, N
// workers on a GPU pool. Each permit expires after its ttl unless it is refreshed, so a holder that crashed frees
// its place by itself.
//
//	sem, err := semaphore.New(rdb, "partner-api", 8) // rdb: your redis.UniversalClient; 8 calls at a time
//	defer sem.Close()
//	err = sem.Do(ctx, 30*time.Second, func(ctx context.Context) error {
//		return callPartner(ctx) // ctx is cancelled if the permit is lost
//	})
//
// or, holding the permit by hand:
//
//	p, err := sem.Acquire(ctx, time.Minute) // waits, woken by releases; TryAcquire does not wait
//	if err != nil {
//		return err
//	}
//	defer p.Release(ctx)
//
// How it works: the semaphore's key is a sorted set of the holders' random tokens scored by their expiry, in
// milliseconds of the server's clock. The acquire script reads the server's TIME, drops the expired holders, and
// adds the new one only while fewer than the limit remain, so the clocks of clients cannot make it admit more.
// Release and refresh act only on the permit's own token. Every key of one semaphore shares its cluster slot.
//
// Waiting costs no polling: waiting processes queue in Redis, and a release reserves its place for the first of
// them for a short claim window and wakes only it, with a message on that process's own channel (through the
// pub/sub connection the client shares with every lock, semaphore and election on it); a timer at the earliest
// expiry covers holders that crashed, and keyspace notifications a semaphore deleted by another tool. Within a
// process, Acquire calls of one Semaphore queue locally, only the first contends at Redis, and a release hands
// its permit to the next one in the same round trip.
//
// [WithObserver] (or [WithLogger]) hears what happens to the permits: obtained (with the wait), released, waits,
// auto-refreshes that failed, losses; [Semaphore.Stats] counts tries and hand-offs. Errors have keyward's shared
// shape: a call stopped by its ctx matches ctx's error and its cause; after [Semaphore.Close], taking a permit
// fails with an error matching ErrClosed.
//
// What a permit promises: while its [Permit.Until] has not passed, it is one of at most limit permits held on the
// server, provided the server did not lose the data (a failover to a replica that had not received it, a restart
// without persistence) and clocks did not drift more than the drift margin. Changing the limit never evicts a
// holder: a lowered limit admits no one new until fewer permits than it are held.
package semaphore
