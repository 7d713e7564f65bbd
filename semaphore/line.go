package semaphore

import (
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/script"
	"github.com/keyward/keyward/internal/watch"
)

// line is what the contender knows of the semaphore, kept from one contender to the next. Guarded by
// Semaphore.mu.
type line struct {
	queued   bool                 // this Semaphore is in the Redis queue
	first    bool                 // first in it: the one told of reservations, which it watches
	stale    bool                 // something may have made room since the last try: try before waiting
	expiry   time.Time            // when enough permits expire to make room; zero for unknown
	backstop time.Time            // when to try anyway, if nothing else is known
	reserved map[string]time.Time // places reserved for other processes, until their windows end (when first)
	closed   bool                 // a watch was closed with its Watcher
	failed   error                // a watch ended because the server refused its subscription (a Failed event)
}

// setFirst records whether this Semaphore is first in the Redis queue; only the first watches reservations.
func (l *line) setFirst(first bool) {
	l.first = first
	if !first {
		clear(l.reserved)
	}
}

// learn records what a try that was answered at now told, for a waiter with ttl.
func (l *line) learn(st script.SemaphoreState, now time.Time, ttl time.Duration) {
	l.setFirst(st.First)
	l.know(st.SemaphoreWait, now)
	// A process that is not first relies on the first to watch reservations; should everyone ahead of it have
	// died, it looks again after the time the queue would keep its place.
	l.backstop = now.Add(script.QueueTTL(ttl))
}

// know records what a waiter needs to know to wait, learned at now.
func (l *line) know(w script.SemaphoreWait, now time.Time) {
	switch {
	case w.Room:
		l.stale = true
	case w.Wait >= 0:
		l.expiry = now.Add(w.Wait)
	default:
		l.expiry = time.Time{}
	}
	clear(l.reserved)
	if !l.first {
		return
	}
	for id, d := range w.Reserved {
		if l.reserved == nil {
			l.reserved = map[string]time.Time{}
		}
		l.reserved[id] = now.Add(d)
	}
}

// deadline returns when the contender must try even if no message comes: the earliest permit expiry that makes
// room or, for the first in line, the end of a reservation window (the process it was reserved for may be dead).
func (l *line) deadline() time.Time {
	d := l.expiry
	for _, until := range l.reserved {
		d = earliest(d, until)
	}
	if d.IsZero() {
		return l.backstop
	}
	return d
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// hearLocked takes what the watches reported, received at now.
func (s *Semaphore) hearLocked(now time.Time) {
	l := &s.line
	var events []watch.Event
	if s.watch != nil {
		events = append(s.watch.Events(), s.own.Events()...)
	}
	for _, e := range events {
		switch e.Kind {
		case watch.Released:
			m := script.ParseSemaphoreMessage(e.Payload)
			switch m.Kind {
			case script.SemaphoreReserved: // out of the queue, with a place to claim
				l.stale, l.queued = true, false
				l.setFirst(false)
			case script.SemaphoreFirst:
				l.setFirst(true)
				l.know(m.Wait, now)
			case script.SemaphoreClaimed:
				delete(l.reserved, m.Process)
				l.expiry = earliest(l.expiry, now.Add(m.Duration))
			default:
				l.stale = true
			}
		case watch.Closed:
			l.closed = true
		case watch.Failed:
			// The user's permission for the channel was taken away: waiting on timers alone would hide it.
			if l.failed = e.Err; l.failed == nil {
				l.failed = keyward.ErrNoPermission
			}
		default: // deleted, expired, evicted, or reconnected (messages may have been lost): look again
			l.stale = true
		}
	}
}
