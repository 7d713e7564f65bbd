package redlock

import (
	"testing"
	"time"
)

// A waiter on three nodes tries again once the events since its last try leave the lock free for it on a
// majority (freed there, or reserved for its Client), and not before; a reservation for another process tells
// when its claim window ends; any other event wakes it at once; events before the try count for nothing.
func TestEarsWakeWhenAMajorityIsFreeForTheWaiter(t *testing.T) {
	ws := &watches{wake: make(chan struct{}, 1), id: "me",
		seq: make([]int64, 3), last: make([]view, 3), until: make([]time.Time, 3)}
	e := ws.listen(2)

	step := func(what string, want bool) time.Time {
		t.Helper()
		got, until := e.ready()
		if got != want {
			t.Fatalf("%s: ready = %v, want %v", what, got, want)
		}
		return until
	}

	step("nothing heard", false)
	ws.note(0, freed, time.Time{})
	step("freed on one node of three", false)
	ws.note(0, freed, time.Time{})
	step("freed twice on the same node", false)
	end := time.Now().Add(20 * time.Millisecond)
	ws.note(1, reserved, end)
	if until := step("and reserved for another process on a second", false); !until.Equal(end) {
		t.Fatalf("claim window ends at %v, want %v", until, end)
	}
	ws.note(2, mine, time.Time{})
	step("and reserved for this Client on the third", true)

	// A try answers everything heard before it.
	e.mark()
	step("after the try", false)
	ws.note(1, mine, time.Time{})
	ws.note(2, freed, time.Time{})
	step("reserved for this Client on one node, freed on another", true)

	e.mark()
	ws.note(0, reserved, time.Now().Add(time.Second))
	ws.note(1, reserved, time.Now().Add(time.Second))
	step("reserved for another process on a majority", false)

	e.mark()
	ws.other()
	step("a reconnection", true)
}
