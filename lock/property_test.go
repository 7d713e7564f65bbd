package lock_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"pgregory.net/rapid"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// A step is one action of the state machine test.
type step struct {
	Kind  stepKind
	Actor int
	Ms    int // ttl or duration in ms
}

type stepKind int

const (
	stepObtain stepKind = iota
	stepRefresh
	stepTTL
	stepRelease
	stepSleep
	stepKeyDeleted
	stepRestart
	stepKinds
)

func (k stepKind) String() string {
	return [...]string{"obtain", "refresh", "ttl", "release", "time passes", "key deleted", "server restarted empty"}[k]
}

func (s step) String() string { return fmt.Sprintf("%v(actor %d, %d ms)", s.Kind, s.Actor, s.Ms) }

const actors = 3

// TestLockStateMachine drives TryObtain, Refresh, TTL, Release, time passing, a key deleted behind the holders'
// backs and a server restarted empty, in random orders drawn by rapid, against a model of the lock, on miniredis
// following the clock of a synctest bubble (each run in a bubble of its own; rapid shrinks a failing run to a
// minimal list of steps). After each step it checks the key on the server, each holder's Lost channel, and that
// fences only grow.
func TestLockStateMachine(t *testing.T) {
	stepGen := rapid.Custom(func(rt *rapid.T) step {
		return step{
			Kind:  stepKind(rapid.IntRange(0, int(stepKinds)-1).Draw(rt, "kind")),
			Actor: rapid.IntRange(0, actors-1).Draw(rt, "actor"),
			Ms:    rapid.IntRange(1, 2500).Draw(rt, "ms"),
		}
	})
	rapid.Check(t, func(rt *rapid.T) {
		ttl := time.Duration(rapid.IntRange(50, 2000).Draw(rt, "ttl ms")) * time.Millisecond
		steps := rapid.SliceOfN(stepGen, 1, 50).Draw(rt, "steps")
		var err error
		synctest.Test(t, func(t *testing.T) { err = runSteps(ttl, steps) })
		if err != nil {
			rt.Fatal(err)
		}
	})
}

// lockModel is what the lock key and its holders should look like.
type lockModel struct {
	holder    int       // actor whose value is in the key, -1 for none
	expiry    time.Time // when the key expires on the server
	lastFence int64
	held      map[int]*heldLock // by actor
}

type heldLock struct {
	l     *lock.Lock
	until time.Time // validity deadline: start + ttl − drift
	lost  bool      // found taken or expired by a refresh or TTL
}

// drift is the default drift margin: 1 % of the ttl + 2 ms.
func drift(ttl time.Duration) time.Duration { return ttl/100 + 2*time.Millisecond }

// keyAlive reports whether the key is on the server: true before its expiry, false after; at the exact
// millisecond sure is false and the caller learns which from the outcome.
func (s *lockModel) keyAlive(now time.Time) (alive, sure bool) {
	if s.holder < 0 {
		return false, true
	}
	return now.Before(s.expiry), !now.Equal(s.expiry)
}

func (h *heldLock) valid(now time.Time) bool { return !h.lost && now.Before(h.until) }

// runSteps runs steps in the current synctest bubble and returns the first difference from the model.
func runSteps(ttl time.Duration, steps []step) (err error) {
	m := miniredis.NewMiniRedis()
	defer m.Close()
	rdb := redistest.SynctestClient(m)
	defer rdb.Close()
	locks, err := lock.New(rdb)
	if err != nil {
		return err
	}
	ctx := context.Background()
	const key = "k"
	s := &lockModel{holder: -1, held: map[int]*heldLock{}}
	defer func() {
		for _, h := range s.held {
			_ = h.l.Release(ctx)
		}
	}()

	for i, st := range steps {
		fail := func(format string, args ...any) error {
			return fmt.Errorf("step %d %v: %s", i, st, fmt.Sprintf(format, args...))
		}
		now := time.Now()
		alive, sure := s.keyAlive(now)
		h := s.held[st.Actor]
		d := time.Duration(st.Ms) * time.Millisecond
		switch st.Kind {
		case stepObtain:
			if h != nil {
				continue // holds a lock already
			}
			l, err := locks.TryObtain(ctx, key, ttl)
			if !sure {
				alive = err != nil
			}
			if alive {
				if !errors.Is(err, lock.ErrNotObtained) {
					return fail("want ErrNotObtained, got %v", err)
				}
				continue
			}
			if err != nil {
				return fail("the key is free, got %v", err)
			}
			if l.Fence() <= s.lastFence {
				return fail("fence %d after %d", l.Fence(), s.lastFence)
			}
			if want := now.Add(ttl - drift(ttl)); !l.Until().Equal(want) {
				return fail("Until %v, want %v", l.Until(), want)
			}
			s.lastFence = l.Fence()
			s.holder, s.expiry = st.Actor, now.Add(ttl)
			s.held[st.Actor] = &heldLock{l: l, until: l.Until()}

		case stepRefresh:
			if h == nil {
				continue
			}
			err := h.l.Refresh(ctx, d)
			if d <= drift(d) {
				if !errors.Is(err, lock.ErrInvalid) {
					return fail("a ttl within the drift margin: want ErrInvalid, got %v", err)
				}
				continue
			}
			ok := h.valid(now) && alive && s.holder == st.Actor
			if !sure && h.valid(now) && s.holder == st.Actor {
				ok = err == nil
			}
			switch {
			case ok && err != nil:
				return fail("want a refresh, got %v", err)
			case ok:
				s.expiry, h.until = now.Add(d), now.Add(d-drift(d))
				if !h.l.Until().Equal(h.until) {
					return fail("Until %v, want %v", h.l.Until(), h.until)
				}
			case !errors.Is(err, lock.ErrNotHeld):
				return fail("want ErrNotHeld, got %v", err)
			case h.valid(now) && !errors.Is(err, lock.ErrLost):
				return fail("a valid lease found gone must be lost, got %v", err)
			default:
				h.lost = true
			}

		case stepTTL:
			if h == nil {
				continue
			}
			got, err := h.l.TTL(ctx)
			if !sure {
				alive = err == nil
			}
			if !h.valid(now) || !alive || s.holder != st.Actor {
				if !errors.Is(err, lock.ErrLost) {
					return fail("want ErrLost, got %v, %v", got, err)
				}
				h.lost = true
				continue
			}
			if want := s.expiry.Sub(now).Truncate(time.Millisecond); err != nil || got != want {
				return fail("want %v, got %v, %v", want, got, err)
			}

		case stepRelease:
			if h == nil {
				continue
			}
			ours := alive && s.holder == st.Actor
			err := h.l.Release(ctx)
			delete(s.held, st.Actor)
			if s.holder == st.Actor && (alive || !sure) {
				s.holder = -1 // deleted by the release, or expired
			}
			switch {
			case !h.valid(now):
				if !errors.Is(err, lock.ErrLost) {
					return fail("a lost lease must report its loss, got %v", err)
				}
			case !sure:
				if err != nil && !errors.Is(err, lock.ErrNotHeld) {
					return fail("got %v", err)
				}
			case !ours && !errors.Is(err, lock.ErrNotHeld):
				return fail("want ErrNotHeld, got %v", err)
			case ours && err != nil:
				return fail("want a release, got %v", err)
			}

		case stepSleep:
			time.Sleep(d)
			synctest.Wait() // let the leases' deadline timers run

		case stepKeyDeleted:
			// Something other than the holder's release deletes the key (an operator's DEL). The release would
			// have left the holder's fence in the fencing counter; without it, the next fence is above the
			// holder's only once the server's clock has moved past it (the clock stands still in the bubble until
			// time is let pass; a fence runs ahead of the clock by the holders that came within its µs).
			if ahead := time.UnixMicro(s.lastFence + 1).Sub(time.Now()); ahead > 0 {
				time.Sleep(ahead)
				synctest.Wait() // let the leases' deadline timers run
			}
			m.Del(key)
			s.holder = -1

		case stepRestart:
			// A restart takes time; the fencing counter is then gone and starts over from the server's clock.
			time.Sleep(time.Second)
			synctest.Wait()
			m.FlushAll()
			s.holder = -1
		}

		// Invariants.
		now = time.Now()
		if alive, sure := s.keyAlive(now); sure {
			got, err := m.Get(key)
			switch {
			case alive && (err != nil || got != s.held[s.holder].l.Value()):
				return fail("the key holds %q (%v), not its holder's token", got, err)
			case !alive && m.Exists(key):
				return fail("the key %q exists, nobody holds it", got)
			}
		}
		for a, h := range s.held {
			select {
			case <-h.l.Lost():
				if h.valid(now) {
					return fail("actor %d: Lost closed while valid", a)
				}
				if !errors.Is(h.l.Err(), lock.ErrLost) {
					return fail("actor %d: Err %v", a, h.l.Err())
				}
			default:
				if !h.valid(now) {
					return fail("actor %d: Lost still open after its deadline %v", a, h.until)
				}
			}
		}
	}
	return nil
}
