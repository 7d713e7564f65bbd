package keywardotel

import (
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// A holding is a lock, permit or leadership this process holds, from its Obtained event to the event that ends
// it: the first Lost, or the first Released that settles it (see settles; for an election, any Released).
type holding struct {
	attrs attribute.Set     // the metric attributes it was counted with, to take it off with the same
	span  trace.SpanContext // the span of the call that obtained it; invalid when unknown
}

// sourceKey names what is held: a lock key, a semaphore or an election, in a package.
type sourceKey struct{ source, key string }

// holdings are the locks, permits and leaderships this process holds now, by what they are and by fence (a lock's
// fencing token, a permit's, a term). A holding without a fence (a semaphore's permit without WithFencing) cannot
// be told from another of the same semaphore, so it is not kept here; Observer counts those by the events alone.
//
// The table holds at most what is held at once: every holding the library hands out ends with a Lost or a
// Released event (a lock nobody releases is lost at its validity deadline), and that removes it.
type holdings struct {
	mu sync.Mutex
	m  map[sourceKey]map[int64]*holding
}

// add records h as held under sk and fence, and reports whether it was new (the same Obtained heard twice is not).
func (hs *holdings) add(sk sourceKey, fence int64, h *holding) bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.m == nil {
		hs.m = map[sourceKey]map[int64]*holding{}
	}
	byFence := hs.m[sk]
	if byFence == nil {
		byFence = map[int64]*holding{}
		hs.m[sk] = byFence
	}
	if _, dup := byFence[fence]; dup {
		return false
	}
	byFence[fence] = h
	return true
}

// remove takes the holding of sk and fence off the table and returns it; nil when it is not there (ended before,
// or obtained before the observer was plugged in).
func (hs *holdings) remove(sk sourceKey, fence int64) *holding {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	byFence := hs.m[sk]
	h := byFence[fence]
	if h == nil {
		return nil
	}
	delete(byFence, fence)
	if len(byFence) == 0 {
		delete(hs.m, sk)
	}
	return h
}

// maxLinks is how many holders a call's span links to at most (a semaphore has as many holders as permits).
const maxLinks = 8

// holders returns links to the spans of the calls that obtained what sk names and hold it now (at most maxLinks),
// each with the holder's fence.
func (hs *holdings) holders(sk sourceKey) []trace.Link {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	var out []trace.Link
	for fence, h := range hs.m[sk] {
		if h.span.IsValid() {
			out = append(out, trace.Link{SpanContext: h.span, Attributes: []attribute.KeyValue{
				AttrLink.String("holder"), AttrFence.Int64(fence)}})
			if len(out) == maxLinks {
				break
			}
		}
	}
	return out
}

// size returns how many holdings the table keeps (for tests).
func (hs *holdings) size() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	n := 0
	for _, byFence := range hs.m {
		n += len(byFence)
	}
	return n
}

// latest returns the largest fence held under sk (the term this process leads an election with), 0 when none.
func (hs *holdings) latest(sk sourceKey) int64 {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	var top int64
	for fence := range hs.m[sk] {
		if fence > top {
			top = fence
		}
	}
	return top
}
