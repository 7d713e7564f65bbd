package benchstat

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// GuardSize is how many bytes of memory a Guard needs.
const GuardSize = 24

// A Guard checks mutual exclusion from inside the critical section, independently of any lock: holders call
// Enter when their lock is obtained and Leave before they release it. It counts overlaps (a holder entered while
// another was inside) and keeps a counter that holders increment by a read before the critical section and a
// write after it, the way a careless read-modify-write would: every overlap that matters shows up as a lost
// update (Count smaller than the number of critical sections).
//
// A Guard lives in memory it is given, so that holders in several processes can share one: a MAP_SHARED mapping
// of the same file works across processes on one host.
type Guard struct {
	inside, overlaps, count *atomic.Int64
}

// NewGuard returns a Guard over mem, which must hold at least GuardSize bytes, 8-byte aligned (a fresh mapping,
// or make([]byte, GuardSize) on 64-bit platforms), and starts zeroed. Guards over the same memory share their
// counts. mem must stay alive and mapped while the Guard is used.
func NewGuard(mem []byte) (*Guard, error) {
	if len(mem) < GuardSize {
		return nil, fmt.Errorf("benchstat: a guard needs %d bytes, got %d", GuardSize, len(mem))
	}
	if uintptr(unsafe.Pointer(&mem[0]))%8 != 0 {
		return nil, fmt.Errorf("benchstat: guard memory is not 8-byte aligned")
	}
	word := func(i int) *atomic.Int64 { return (*atomic.Int64)(unsafe.Pointer(&mem[8*i])) }
	return &Guard{inside: word(0), overlaps: word(1), count: word(2)}, nil
}

// Enter records that a holder entered its critical section, and returns the counter as it read it, for Leave.
func (g *Guard) Enter() int64 {
	if g.inside.Add(1) != 1 {
		g.overlaps.Add(1)
	}
	return g.count.Load()
}

// Leave records that the holder that read seen in Enter leaves its critical section: it writes seen + 1.
func (g *Guard) Leave(seen int64) {
	g.count.Store(seen + 1)
	g.inside.Add(-1)
}

// Overlaps returns how many times a holder entered while another was inside.
func (g *Guard) Overlaps() int64 { return g.overlaps.Load() }

// Count returns the counter: the number of critical sections, less the lost updates.
func (g *Guard) Count() int64 { return g.count.Load() }
