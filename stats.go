package keyward

// Stats are counts of a lock client's or a semaphore's work since it was made, for monitoring and benchmarks.
// lock.Client, redlock.Client and semaphore.Semaphore return the same shape. Events as they happen go to an
// Observer instead.
type Stats struct {
	// Tries counts acquire attempts sent to Redis (the plain tries, and the tries of waiters).
	Tries int64
	// FailedTries counts those that found the lock taken (or the semaphore full).
	FailedTries int64
	// HandOffs counts locks or permits handed to a waiter of this client within a release's round trip,
	// without a try of its own.
	HandOffs int64
}
