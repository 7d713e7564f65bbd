package waitq

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/keyward/keyward/internal/retry"
)

// waiter is a package's waiter type, as lock, redlock and semaphore declare theirs.
type waiter struct {
	Entry
	name string
}

func newWaiter(name string) *waiter { return &waiter{Entry: NewEntry(), name: name} }

// woken reports whether w has a wake-up pending, and takes it.
func woken(w *waiter) bool {
	select {
	case <-w.Wake():
		return true
	default:
		return false
	}
}

func TestLineKeepsArrivalOrder(t *testing.T) {
	var l Line[*waiter]
	if l.First() != nil || l.Len() != 0 {
		t.Fatalf("the zero Line: First %v, Len %d; want nil, 0", l.First(), l.Len())
	}
	a, b, c := newWaiter("a"), newWaiter("b"), newWaiter("c")
	if !l.Add(a) {
		t.Error("the first waiter added is not first")
	}
	if l.Add(b) || l.Add(c) {
		t.Error("a later waiter is reported first")
	}
	if l.Len() != 3 || l.First() != a {
		t.Fatalf("Len %d, First %v; want 3, a", l.Len(), l.First().name)
	}
	if i := l.Remove(b); i != 1 {
		t.Errorf("Remove(b) = %d; want its place, 1", i)
	}
	if i := l.Remove(b); i != -1 {
		t.Errorf("Remove of a waiter not in line = %d; want -1", i)
	}
	if i := l.Remove(a); i != 0 || l.First() != c {
		t.Errorf("Remove(a) = %d, then First %v; want 0, c", i, l.First().name)
	}
	l.Remove(c)
	if l.First() != nil || l.Len() != 0 {
		t.Errorf("emptied: First %v, Len %d; want nil, 0", l.First(), l.Len())
	}
	if !l.Add(b) {
		t.Error("a waiter added to an emptied line is not first")
	}
}

func TestSignalKeepsOneWakeUpAndNeverBlocks(t *testing.T) {
	w := newWaiter("w")
	w.Signal()
	w.Signal() // must not block: one wake-up is already pending
	if !woken(w) {
		t.Fatal("no wake-up after Signal")
	}
	if woken(w) {
		t.Error("two wake-ups kept; want one")
	}

	ch := make(chan struct{}, 1)
	Signal(ch)
	Signal(ch)
	if len(ch) != 1 {
		t.Errorf("%d signals pending on a channel; want 1", len(ch))
	}
}

func TestSignalFirstWakesOnlyTheFirst(t *testing.T) {
	var l Line[*waiter]
	l.SignalFirst() // nobody waits: nothing happens
	a, b := newWaiter("a"), newWaiter("b")
	l.Add(a)
	l.Add(b)
	l.SignalFirst()
	if !woken(a) || woken(b) {
		t.Error("SignalFirst did not wake exactly the first waiter")
	}
	l.Remove(a)
	l.SignalFirst()
	if !woken(b) {
		t.Error("SignalFirst did not wake the new first waiter")
	}
}

func TestNextForHandOverSkipsWaitersTryingOrBeingHanded(t *testing.T) {
	var l Line[*waiter]
	if l.NextForHandOver() != nil {
		t.Fatal("an empty line has a waiter to hand over to")
	}
	a, b, c := newWaiter("a"), newWaiter("b"), newWaiter("c")
	l.Add(a)
	l.Add(b)
	l.Add(c)
	a.Trying = true // its try is on its way: a hand-over would race it
	if n := l.NextForHandOver(); n != b || !b.Handing {
		t.Fatalf("NextForHandOver = %v (Handing %v); want b, marked Handing", n, b.Handing)
	}
	if n := l.NextForHandOver(); n != c {
		t.Fatalf("a second NextForHandOver = %v; want c: b is being handed one already", n)
	}
	if n := l.NextForHandOver(); n != nil {
		t.Fatalf("NextForHandOver = %v; want nil: a tries, b and c are being handed one", n.name)
	}
	a.Trying, b.Handing = false, false
	if n := l.NextForHandOver(); n != a {
		t.Errorf("NextForHandOver = %v; want a, whose try has ended", n.name)
	}
}

func TestBackoffAfterFailedTries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWaiter("w")
		if w.BackingOff() || w.Failed != nil {
			t.Fatal("a new waiter backs off")
		}
		errDown := errors.New("connection refused")
		step := retry.First
		for range 10 {
			w.Fail(errDown)
			if w.Failed != errDown {
				t.Fatalf("Failed = %v; want the try's error", w.Failed)
			}
			// Each delay is drawn from the upper half of its step: First doubling up to Max.
			if d := time.Until(w.RetryAt); d < step/2 || d > step {
				t.Fatalf("a failed try waits %v; want within [%v, %v]", d, step/2, step)
			}
			if !w.BackingOff() {
				t.Fatal("not backing off right after a failed try")
			}
			time.Sleep(time.Until(w.RetryAt) - time.Nanosecond)
			if !w.BackingOff() {
				t.Fatal("the backoff ended early")
			}
			time.Sleep(time.Nanosecond)
			if w.BackingOff() {
				t.Fatal("still backing off at RetryAt")
			}
			step = min(2*step, retry.Max)
		}
		w.Answered()
		if w.Failed != nil || w.BackingOff() {
			t.Fatal("Answered left the waiter failed")
		}
		w.Fail(errDown)
		if d := time.Until(w.RetryAt); d > retry.First {
			t.Errorf("after an answer a failed try waits %v; want the backoff started over (≤ %v)", d, retry.First)
		}
	})
}

func TestLateIsAfterTheExpiryWithAJitter(t *testing.T) {
	const d = 5 * time.Millisecond
	seen := map[time.Duration]bool{}
	for range 1000 {
		l := Late(d)
		if l < d+time.Millisecond || l >= d+2*time.Millisecond {
			t.Fatalf("Late(%v) = %v; want within [%v, %v)", d, l, d+time.Millisecond, d+2*time.Millisecond)
		}
		seen[l] = true
	}
	if len(seen) < 100 {
		t.Errorf("Late gave %d distinct values in 1000 calls; want a jitter", len(seen))
	}
}
