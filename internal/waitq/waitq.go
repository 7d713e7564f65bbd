// Package waitq is the in-process line of waiters that lock, redlock and semaphore share. The goroutines of one
// client (a lock or Redlock Client, a Semaphore) that wait for the same key stand in a Line in arrival order, and
// only the first of them contends at Redis; the others wait on their wake channel for their turn, or for a holder
// of the same client to hand them what it holds.
//
// What is the same everywhere lives here: the order, the contender, removal, the wake channel, the rule of who
// may be handed a lock or permit, the backoff of a waiter whose tries fail without an answer, and the margin of
// the timers waiters set. What each protocol does with its turn (Redis queues, reservations, cohorts, the
// hand-over scripts, subscriptions) stays in its package.
//
// Nothing here locks: a Line and the fields of its Entries marked so are guarded by their owner's mutex.
package waitq

import (
	"math/rand/v2"
	"slices"
	"time"

	"github.com/keyward/keyward/internal/retry"
)

// Signal sends on ch, whose capacity is 1, unless a signal is already pending there: a wake-up is never lost and
// never blocks the sender.
func Signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Late returns d plus a millisecond, so that a key whose remaining ttl was d has expired on the server when a
// timer set to it fires, plus a random jitter below a millisecond, so that the waiters of processes whose timers
// were set by the same event do not all try at once.
func Late(d time.Duration) time.Duration {
	return d + time.Millisecond + rand.N(time.Millisecond)
}

// Entry is one goroutine's place in a Line; the packages embed it in their waiter types. Make one with NewEntry.
type Entry struct {
	wake chan struct{} // capacity 1: became the contender, was handed something, or must look again

	// Guarded by the owner's mutex. A release by a holder of the same client hands what it holds to the first
	// waiter that is not Trying (see Line.NextForHandOver), and marks it Handing while its script runs; a waiter
	// that is Handing does not try. A waiter with a try on its way must not be handed a lock or permit: the try
	// would find the hand-over's value, its own, and take it a second time (two holders of one value), or fail
	// and leave the waiter without what it was handed (held by nobody, and refreshed for ever by an
	// auto-refresh).

	// Trying: an acquire with this waiter's value is on its way to Redis.
	Trying bool
	// Handing: a release is handing this waiter a lock or permit right now.
	Handing bool
	// Abandoned: the waiter gave up while Handing was set; the releasing holder releases what it hands over.
	Abandoned bool
	// MaybeHeld: a release whose answer was lost may have handed this waiter a lock or permit; a waiter that
	// gives up releases its value.
	MaybeHeld bool

	// Only the waiter's own goroutine uses these.

	// Failed is the error of the waiter's last try when it failed without an answer (the server restarting, a
	// dropped connection); nil after an answer. RetryAt is when the waiter tries again after it.
	Failed  error
	RetryAt time.Time
	backoff retry.Backoff // spaces out tries that fail
}

// NewEntry returns an Entry ready to join a Line.
func NewEntry() Entry { return Entry{wake: make(chan struct{}, 1)} }

// Wake returns the channel the waiter waits on for its turn, a hand-over, or a reason to look again.
func (e *Entry) Wake() <-chan struct{} { return e.wake }

// Signal wakes the waiter (see Signal).
func (e *Entry) Signal() { Signal(e.wake) }

// Fail records a try that failed with err, which may pass: the next try waits a backoff (retry.Backoff: 10 ms
// doubling to 1 s, jittered), until RetryAt.
func (e *Entry) Fail(err error) {
	e.Failed = err
	e.RetryAt = time.Now().Add(e.backoff.Next())
}

// Answered records a try that got an answer: the backoff starts over.
func (e *Entry) Answered() {
	e.Failed = nil
	e.backoff.Reset()
}

// BackingOff reports whether the waiter's last try failed without an answer and its backoff has not passed.
func (e *Entry) BackingOff() bool {
	return e.Failed != nil && time.Now().Before(e.RetryAt)
}

func (e *Entry) entry() *Entry { return e }

// Member is a package's waiter type: a pointer to a struct that embeds Entry.
type Member interface {
	comparable
	entry() *Entry
}

// Line is the waiters for one key in arrival order. The first is the one that may contend, unless its owner says
// otherwise (a holder of the same client will hand it the lock). The zero Line is empty and ready to use.
type Line[W Member] struct {
	waiters []W
}

// Add puts w at the end of the line and reports whether it is first.
func (l *Line[W]) Add(w W) (first bool) {
	l.waiters = append(l.waiters, w)
	return len(l.waiters) == 1
}

// Len returns how many wait.
func (l *Line[W]) Len() int { return len(l.waiters) }

// First returns the first waiter, or the zero W (nil) when nobody waits.
func (l *Line[W]) First() W {
	if len(l.waiters) == 0 {
		var none W
		return none
	}
	return l.waiters[0]
}

// Remove takes w out of the line and returns the place it had (0 for the first), or -1 when it was not in it.
func (l *Line[W]) Remove(w W) int {
	i := slices.Index(l.waiters, w)
	if i >= 0 {
		l.waiters = slices.Delete(l.waiters, i, i+1)
	}
	return i
}

// SignalFirst wakes the first waiter, if any: it may be the contender now.
func (l *Line[W]) SignalFirst() {
	if len(l.waiters) > 0 {
		l.waiters[0].entry().Signal()
	}
}

// NextForHandOver returns the first waiter that may be handed a lock or permit — it is neither Trying nor already
// being handed one — marked Handing; the zero W (nil) when there is none. The caller clears Handing when its
// release has answered.
func (l *Line[W]) NextForHandOver() W {
	for _, w := range l.waiters {
		if e := w.entry(); !e.Trying && !e.Handing {
			e.Handing = true
			return w
		}
	}
	var none W
	return none
}
