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
//
// It also keeps, per key that calls of this process wait for, how many wait and the holding that ended last while
// they waited (the one that handed the lock over, typically), so that a waiter links to the holder it waited for
// even when that holder obtained the lock after the wait began, or was heard releasing it before the wait ended.
// Those entries go when the last waiter stops waiting.
type holdings struct {
	mu      sync.Mutex
	m       map[sourceKey]map[int64]*holding
	waiting map[sourceKey]int
	prev    map[sourceKey]endedHolding
	seq     uint64 // counts the holdings that ended while calls waited
}

// An endedHolding is a link to the holding that ended last while calls waited, and when it ended (seq).
type endedHolding struct {
	link trace.Link
	seq  uint64
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
	if hs.waiting[sk] > 0 && h.span.IsValid() {
		hs.seq++
		hs.prev[sk] = endedHolding{link: holderLink(h.span, fence), seq: hs.seq}
	}
	return h
}

// startWait notes that a call waits for what sk names, and returns links to its holders now and the position
// the wait began at.
func (hs *holdings) startWait(sk sourceKey) ([]trace.Link, uint64) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.waiting == nil {
		hs.waiting, hs.prev = map[sourceKey]int{}, map[sourceKey]endedHolding{}
	}
	hs.waiting[sk]++
	return hs.holdersLocked(sk), hs.seq
}

// endWait notes that a wait that began at since ended, and returns links to the holders of what sk names now and
// to the holding that ended last since the wait began.
func (hs *holdings) endWait(sk sourceKey, since uint64) []trace.Link {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.waiting[sk] <= 0 {
		return nil // a wait this Observer did not hear begin
	}
	links := hs.holdersLocked(sk)
	if p, ok := hs.prev[sk]; ok && p.seq > since {
		links = append(links, p.link)
	}
	if hs.waiting[sk]--; hs.waiting[sk] == 0 {
		delete(hs.waiting, sk)
		delete(hs.prev, sk)
	}
	return links
}

// holderLink returns a link to the span of a holder whose fence is fence.
func holderLink(span trace.SpanContext, fence int64) trace.Link {
	return trace.Link{SpanContext: span, Attributes: []attribute.KeyValue{AttrLink.String("holder"),
		AttrFence.Int64(fence)}}
}

// maxLinks is how many holders a call's span links to at most (a semaphore has as many holders as permits).
const maxLinks = 8

// holders returns links to the spans of the calls that obtained what sk names and hold it now (at most maxLinks),
// each with the holder's fence.
func (hs *holdings) holders(sk sourceKey) []trace.Link {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.holdersLocked(sk)
}

func (hs *holdings) holdersLocked(sk sourceKey) []trace.Link {
	var out []trace.Link
	for fence, h := range hs.m[sk] {
		if h.span.IsValid() {
			out = append(out, holderLink(h.span, fence))
			if len(out) == maxLinks {
				break
			}
		}
	}
	return out
}

// size returns how many entries the table keeps: holdings, and keys waited for (for tests).
func (hs *holdings) size() int {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	n := len(hs.waiting) + len(hs.prev)
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
