package keyspace

import "sync"

// maxPending bounds the events a watch keeps until its owner takes them; past it, the events are replaced by
// one Reconnected event (something may have been missed: look again), so a slow owner costs memory only once.
const maxPending = 64

// A Watch is one waiter's registration for one key. Its owner waits on Ready and takes the events with Events.
type Watch struct {
	w        *Watcher
	key      string
	channels []string
	signal   chan struct{} // capacity 1: one pending signal covers any number of events

	mu      sync.Mutex
	pending []Event
	closed  bool
}

// Key returns the watched key.
func (wt *Watch) Key() string { return wt.key }

// Ready returns a channel that receives when events are pending.
func (wt *Watch) Ready() <-chan struct{} { return wt.signal }

// Events takes the pending events, oldest first.
func (wt *Watch) Events() []Event { return wt.take() }

func (wt *Watch) take() []Event {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	ev := wt.pending
	wt.pending = nil
	return ev
}

func (wt *Watch) deliver(e Event) {
	wt.mu.Lock()
	switch {
	case len(wt.pending) >= maxPending:
		wt.pending = append(wt.pending[:0], Event{Kind: Reconnected})
	default:
		wt.pending = append(wt.pending, e)
	}
	wt.mu.Unlock()
	select {
	case wt.signal <- struct{}{}:
	default:
	}
}

// Close ends the watch; the last watch of a channel unsubscribes it. Close is idempotent.
func (wt *Watch) Close() {
	wt.mu.Lock()
	if wt.closed {
		wt.mu.Unlock()
		return
	}
	wt.closed = true
	wt.mu.Unlock()
	wt.w.mu.Lock()
	defer wt.w.mu.Unlock()
	wt.w.removeLocked(wt)
}
