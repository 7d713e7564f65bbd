package semaphore

import (
	"context"
	"fmt"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/script"
)

// leaveQueueLocked starts taking this Semaphore out of the Redis queue; leaveQueue, called without s.mu, finishes.
// No try of this Semaphore starts in between: a try that queued it again could land on the server first and be
// undone by the leave, leaving it waiting outside the line.
func (s *Semaphore) leaveQueueLocked() {
	s.line.queued = false
	s.leaving++
}

// leaveQueue takes this Semaphore out of the Redis queue, passing on a place reserved for it, so that the next
// process does not wait for a claim that will not come.
func (s *Semaphore) leaveQueue(ctx context.Context) {
	g := s.giveBack("")
	g.Waiter = s.id
	if _, err := script.SemaphoreRelease(ctx, s.rdb, s.keys, g); err != nil {
		// The queue forgets this Semaphore when its entry expires; until then a place may be reserved for it in
		// vain, for a claim window.
		s.emit(ctx, keyward.Event{Kind: keyward.Error,
			Err: fmt.Errorf("semaphore %q: leave the queue: %w", s.name, err)})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.leaving--
	s.waiters.SignalFirst()
}

// release is the release operation of every Permit of this Semaphore: it hands the permit to the first waiter of
// this Semaphore that is not trying at Redis (in the same round trip), else passes its place on through Redis,
// which reserves it for the next waiting process.
func (s *Semaphore) release(ctx context.Context, p *Permit) (bool, error) {
	s.mu.Lock()
	next := s.waiters.NextForHandOver() // marked Handing
	g := s.giveBackLocked(p.value)
	g.Waiter = s.id
	if next != nil {
		g.Successor, g.TTL, g.Cohort = next.a.value, next.a.ttl, s.cohort < s.opts.Cohort
	}
	// The Semaphore leaves the Redis queue when its last waiter is handed the permit. No try of this Semaphore can
	// be on its way then (that waiter is the contender, and does not try while it is being handed a permit), so
	// the line stays as the contender's tries left it.
	g.More = s.waiters.Len() > 1
	s.mu.Unlock()

	start := time.Now()
	res, err := script.SemaphoreRelease(ctx, s.rdb, s.keys, g)
	out := res.Outcome

	s.mu.Lock()
	var abandoned *Permit
	stray := false
	if next != nil {
		next.Handing = false
	}
	if err != nil {
		// Unknown outcome: the contender finds out where things stand with its next try, which renews the
		// permit the release may have handed to next.
		s.line.stale = true
		if next != nil {
			next.MaybeHeld = true
		}
	} else {
		if out == script.HandedOver && !g.More {
			s.line.queued = false
		}
		s.line.setFirst(res.First)
	}
	switch {
	case err == nil && out == script.HandedOver:
		np := s.newPermit(next.a, start, res.Fence)
		s.cohort++
		s.handOffs.Add(1)
		if next.Abandoned {
			abandoned = np
		} else {
			next.permit = np
			next.Signal()
		}
		s.removeLocked(next)
		if stray = s.waiters.Len() == 0 && s.line.queued; stray {
			// The process was kept in line for waiters that were served meanwhile by tries of their own.
			s.leaveQueueLocked()
		}
	default:
		if out == script.Released {
			s.cohort = 0
		}
		if next != nil {
			next.Signal() // the hand-off fell through: back to waiting, or contending
		}
	}
	s.mu.Unlock()
	if abandoned != nil {
		// Handed to a waiter that gave up meanwhile: nobody will use it.
		s.cleanedUp(ctx, abandoned.fence, abandoned.lease.Release(ctx))
	}
	if stray {
		s.leaveQueue(ctx)
	}
	return out != script.NotHeld, err
}

func (s *Semaphore) giveBackLocked(value string) script.SemaphoreGiveBack {
	return script.SemaphoreGiveBack{Value: value, Limit: s.limit, Window: s.opts.ClaimWindow, Publish: s.publish,
		Fencing: s.fencing}
}
