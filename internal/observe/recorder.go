package observe

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/keyward/keyward"
)

// A Recorder is an Observer that keeps every event it hears, in order, for the tests of every package: they read
// what was heard (All, Kinds, Of, Take) and wait for an event of a kind (Wait). Its zero value is ready to use and
// it is safe for concurrent use. Observe never blocks.
//
// Wait blocks on a channel that the next event closes, never on a timer: in a testing/synctest bubble a waiting
// goroutine is durably blocked, so time moves on while it waits. The channel belongs to the bubble of the
// goroutine that made it (the first call, and then each Observe), so a Recorder waited on in a bubble should hear
// its events there.
type Recorder struct {
	mu      sync.Mutex
	events  []keyward.Event
	taken   int           // how many events Take has returned
	changed chan struct{} // closed, and replaced, by each event
}

// Observe keeps e and wakes the goroutines waiting in Wait.
func (r *Recorder) Observe(_ context.Context, e keyward.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	changed := r.changed
	r.changed = make(chan struct{})
	r.mu.Unlock()
	if changed != nil {
		close(changed)
	}
}

// All returns the events heard so far, in order.
func (r *Recorder) All() []keyward.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// Kinds returns the kinds of the events heard so far, in order.
func (r *Recorder) Kinds() []keyward.EventKind { return Kinds(r.All()) }

// Of returns the events of kind heard so far, in order.
func (r *Recorder) Of(kind keyward.EventKind) []keyward.Event { return Select(r.All(), kind) }

// Take returns the events heard since the last Take (since the first event, the first time), in order. All still
// returns them.
func (r *Recorder) Take() []keyward.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	es := slices.Clone(r.events[r.taken:])
	r.taken = len(r.events)
	return es
}

// Wait returns the first event of kind heard, waiting for it until ctx is done; then it returns an error that
// matches ctx's cause and names the kinds heard.
func (r *Recorder) Wait(ctx context.Context, kind keyward.EventKind) (keyward.Event, error) {
	for {
		r.mu.Lock()
		if i := slices.IndexFunc(r.events, func(e keyward.Event) bool { return e.Kind == kind }); i >= 0 {
			e := r.events[i]
			r.mu.Unlock()
			return e, nil
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return keyward.Event{}, fmt.Errorf("no %v event; heard %v: %w", kind, r.Kinds(), context.Cause(ctx))
		}
	}
}

// Kinds returns the kinds of es, in order.
func Kinds(es []keyward.Event) []keyward.EventKind {
	var ks []keyward.EventKind
	for _, e := range es {
		ks = append(ks, e.Kind)
	}
	return ks
}

// Select returns the events of es of kind, in order.
func Select(es []keyward.Event, kind keyward.EventKind) []keyward.Event {
	var of []keyward.Event
	for _, e := range es {
		if e.Kind == kind {
			of = append(of, e)
		}
	}
	return of
}
