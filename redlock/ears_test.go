package redlock

import (
	"sync/atomic"
	"testing"
)

// A waiter on three nodes tries again when releases were heard on a majority, counting the nodes its own try
// released, and not before; its own releases' announcements count for nothing; any other event wakes it at once.
func TestEarsWakeAtAMajorityOfReleases(t *testing.T) {
	ws := &watches{wake: make(chan struct{}, 1)}
	ws.releases = make([]atomic.Int64, 3)
	ws.echoes = make([]atomic.Int64, 3)
	for i := range ws.echoes {
		ws.echoes[i].Store(1)
	}
	e := ws.listen(2)

	step := func(what string, want bool) {
		t.Helper()
		e.heard()
		if got := e.enough(); got != want {
			t.Fatalf("%s: enough = %v, want %v", what, got, want)
		}
	}

	// A try found the lock taken everywhere.
	e.restart(nil)
	step("nothing heard", false)
	ws.releases[0].Add(1)
	step("a release on one node of three", false)
	ws.releases[0].Add(1)
	step("a second release on the same node", false)
	ws.releases[2].Add(1)
	step("releases on two nodes of three", true)

	// A split try held node 1 and released it: its own announcement is no news, one release elsewhere is enough.
	e.heard()
	e.expect([]int{1})
	e.restart([]int{1})
	ws.releases[1].Add(1)
	step("its own release", false)
	ws.releases[0].Add(1)
	step("its own release and one on another node", true)

	// An expiry, a reconnection or a late confirmation: try at once.
	e.heard()
	e.restart(nil)
	ws.others.Add(1)
	step("another event", true)
}
