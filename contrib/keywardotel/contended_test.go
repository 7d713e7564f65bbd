package keywardotel_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/contrib/keywardotel"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// A contended run on a real redis-server: 8 goroutines take turns on one key through two lock Clients (as two
// processes would, each with its own connections), 50 times each, and the metrics add up. `go test -v -run
// Contended` prints what was recorded.
func TestContended(t *testing.T) {
	const goroutines, rounds = 8, 50
	srv := redistest.Start(t)
	r := newRig(t, keywardotel.WithKeyLabel(keywardotel.KeyAsIs))
	var clients [2]*lock.Client
	for i := range clients {
		c, err := lock.New(srv.Client(t), lock.WithObserver(r.obs))
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, c.Close()) })
		clients[i] = c
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A sampler reads the gauges while the run goes on, as a scraper would.
	var maxWaiters, maxHeld int64
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			rd := r.read(t)
			maxWaiters = max(maxWaiters, rd.value("keyward.waiters", srcLock))
			maxHeld = max(maxHeld, rd.value("keyward.held", srcLock))
		}
	}()

	var inside, overlaps atomic.Int32
	var wg sync.WaitGroup
	start := time.Now()
	for g := range goroutines {
		wg.Go(func() {
			locks := clients[g%len(clients)]
			for range rounds {
				l, err := locks.Obtain(ctx, "hot", 10*time.Second)
				if !assert.NoError(t, err) {
					return
				}
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				time.Sleep(100 * time.Microsecond) // the work under the lock
				inside.Add(-1)
				assert.NoError(t, l.Release(ctx))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	<-sampled
	require.Zero(t, overlaps.Load(), "two holders at once")

	const total = goroutines * rounds
	rd := r.read(t)
	n, waited := rd.count("keyward.acquire.duration", srcLock, key("hot"), op("obtain"), outcome("obtained"))
	assert.EqualValues(t, total, n, "every Obtain obtained")
	all, _ := rd.count("keyward.acquire.duration")
	assert.EqualValues(t, total, all, "and nothing else was counted")
	n, heldFor := rd.count("keyward.hold.duration", srcLock, key("hot"), keywardotel.AttrEnd.String("released"))
	assert.EqualValues(t, total, n, "every lock was released")
	assert.Zero(t, rd.value("keyward.held", srcLock), "none is held now")
	assert.Zero(t, rd.value("keyward.waiters", srcLock), "nobody waits now")
	assert.Zero(t, rd.value("keyward.lost"))
	assert.Zero(t, keywardotel.Holdings(r.obs), "the table of holders is empty again")

	obtains := r.ended("keyward.lock obtain")
	assert.Len(t, obtains, total)
	var waits, linked int
	for _, s := range obtains {
		for _, e := range s.Events() {
			if e.Name == "keyward.wait_started" {
				waits++
				break
			}
		}
		if len(s.Links()) > 0 {
			linked++
		}
	}
	assert.Positive(t, waits, "some calls waited")
	assert.Equal(t, waits, linked, "every waiter links to the span of a holder it waited for (all are in this process)")
	assert.Positive(t, maxWaiters, "the sampler saw waiters")
	assert.LessOrEqual(t, maxWaiters, int64(goroutines))
	assert.LessOrEqual(t, maxHeld, int64(goroutines))
	t.Logf("%d goroutines × %d Obtain/Release of one key through 2 lock Clients on a real redis-server, %v; "+
		"waited in %.3fs in all, held %.3fs in all", goroutines, rounds, elapsed.Round(time.Millisecond), waited, heldFor)
	t.Logf("sampled every 2ms during the run: keyward.waiters peaked at %d, keyward.held at %d "+
		"(a hand-over's Obtained can be heard before the previous holder's Released)", maxWaiters, maxHeld)
	t.Logf("spans: %d \"keyward.lock obtain\", %d with a wait, %d linked to the holder's span", len(obtains), waits, linked)
	t.Logf("metrics recorded:\n%s", rd)
}
