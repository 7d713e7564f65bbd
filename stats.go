package keyward

// Stats are counts of a lock client's or a semaphore's work since it was made, for monitoring and benchmarks.
// lock.Client, redlock.Client and semaphore.Semaphore return the same shape. Events as they happen go to an
// Observer instead.
type Stats struct {
	// Tries counts acquire attempts sent to Redis (the plain tries, and the tries of waiters).
	Tries int64
	// FailedTries counts those that found the lock taken (or the semaphore full).
	FailedTries int64
	// HandOffs counts locks or permits a release passed to a waiter of this client within its round trip: handed
	// over (lock, semaphore: the waiter makes no try of its own), or reserved for it on a majority (redlock: the
	// waiter claims the reservation with a try, which no other process can take from it).
	HandOffs int64
}
