package keywardgocron_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/contrib/keywardgocron"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
	"github.com/keyward/keyward/redlock"
)

// lockerInstance returns an instance named name with its own go-redis client of srv (default options), lock.Client
// and Locker (auto-refresh, minHold unless opts say otherwise), and starts its scheduler.
func (r *rig) lockerInstance(srv *redistest.Server, name string, opts ...keywardgocron.Option) *instance {
	t := r.t
	t.Helper()
	rdb := client(t, srv, name)
	ev := newEvents(keyward.Released, keyward.Lost)
	locks, err := lock.New(rdb, lock.WithObserver(ev))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = locks.Close() })
	inst := &instance{name: name, rdb: rdb, events: ev}
	inst.locker = newGocronLocker(t, locks.Locker(lock.WithAutoRefresh()), opts...)
	return inst
}

func newGocronLocker(t *testing.T, kl keyward.Locker, opts ...keywardgocron.Option) *keywardgocron.Locker {
	t.Helper()
	l, err := keywardgocron.NewLocker(kl, append([]keywardgocron.Option{keywardgocron.WithMinHold(minHold)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

// lockerRig starts three schedulers on srv, each with its own Redis client, lock.Client and Locker.
func lockerRig(t *testing.T, srv *redistest.Server, opts ...keywardgocron.Option) (*rig, []*instance) {
	r := newRig(t)
	var insts []*instance
	for i := range 3 {
		inst := r.lockerInstance(srv, fmt.Sprintf("instance-%d", i), opts...)
		r.start(inst)
		insts = append(insts, inst)
	}
	return r, insts
}

// Three schedulers, each with its own Redis client, run the same job: every tick runs once.
func TestEachTickRunsOnce(t *testing.T) {
	t.Parallel()
	r, _ := lockerRig(t, redistest.Start(t))
	const ticks = 10
	winners := map[string]int{}
	for range ticks {
		winners[r.once(3)]++
	}
	if runs := r.check(ticksUpTo(ticks)...); runs != ticks {
		t.Fatalf("%d runs in %d ticks", runs, ticks)
	}
	r.report(3)
	t.Logf("runs by instance: %v", winners)
}

func ticksUpTo(n int) []int {
	ticks := make([]int, n)
	for i := range ticks {
		ticks[i] = i + 1
	}
	return ticks
}

// An instance whose tick fires after the tick's run has already ended and unlocked (a clock behind the others', a
// busy machine) finds the lock still held, for the minimum hold. Without it, the tick runs a second time: the
// control shows that the test catches that.
func TestALateInstanceDoesNotRunTheTickAgain(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const ticks = 3
	t.Run("minimum hold", func(t *testing.T) {
		t.Parallel()
		r, insts := lockerRig(t, srv, keywardgocron.WithPrefix("hold:"))
		insts[2].late = true
		for range ticks {
			if who := r.once(3); who == insts[2].name {
				t.Fatalf("the late instance ran tick %d", r.ticks)
			}
		}
		r.check(ticksUpTo(ticks)...)
		r.report(3)
	})
	t.Run("control: no minimum hold", func(t *testing.T) {
		t.Parallel()
		r, insts := lockerRig(t, srv, keywardgocron.WithPrefix("control:"), keywardgocron.WithMinHold(0))
		insts[2].late = true
		for range ticks {
			names := ran(r.tick(3))
			// The first run ends and releases before the late instance tries: the late one, or the other on
			// time if it tried after the release, runs the tick again.
			if len(names) < 2 {
				t.Fatalf("tick %d ran by %v, want more than once", r.ticks, names)
			}
			for range names {
				receive(t, r.ends, "end of a run")
			}
			r.settle(names...)
		}
		r.report(3)
	})
}

// The scheduler of the instance that runs a tick is shut down mid-run: its job's context is cancelled, the lock is
// released, and the other two run every later tick once. A tick that fires during the run is skipped by all.
func TestSchedulerShutDownMidRun(t *testing.T) {
	t.Parallel()
	r, insts := lockerRig(t, redistest.Start(t))
	r.once(3)
	r.block() // tick 2 runs until its context ends
	names := ran(r.tick(3))
	if len(names) != 1 {
		t.Fatalf("tick 2 ran by %v, want once", names)
	}
	holder := r.instance(names[0])
	if names := ran(r.tick(3)); len(names) != 0 {
		t.Fatalf("tick 3, during the run of tick 2, ran by %v", names)
	}
	r.stop(holder)
	if e := receive(t, r.ends, "end of the run"); !errors.Is(e.cause, context.Canceled) {
		t.Fatalf("the run ended with %v, want its context cancelled by the shutdown", e.cause)
	}
	r.settle(holder.name)
	if err := holder.locker.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if who := r.once(2); who == holder.name {
			t.Fatal("the instance shut down ran a tick")
		}
	}
	r.check(1, 2, 4, 5, 6, 7)
	r.report(len(insts))
}

// The server closes the connections of the instance that runs a tick: its client reconnects, the lock is kept
// through refreshes longer than its ttl, ticks during the run are skipped, and every later tick runs once.
func TestConnectionsKilledMidRun(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	admin := srv.Client(t)
	const ttl = 600 * time.Millisecond
	r, insts := lockerRig(t, srv, keywardgocron.WithTTL(ttl))
	r.once(3)
	letGo := r.block()
	names := ran(r.tick(3))
	if len(names) != 1 {
		t.Fatalf("tick 2 ran by %v, want once", names)
	}
	holder := r.instance(names[0])
	refreshes := newAnswered()
	holder.rdb.AddHook(refreshes)
	if n := killConnections(t, admin, holder.name); n == 0 {
		t.Fatal("no connection of the holder to kill")
	}
	refreshes.start()
	for range 4 { // more than a ttl of refreshes, on new connections
		receive(t, refreshes.ch, "refresh")
	}
	if names := ran(r.tick(3)); len(names) != 0 {
		t.Fatalf("tick 3, during the run of tick 2, ran by %v", names)
	}
	letGo()
	if e := receive(t, r.ends, "end of the run"); e.cause != nil {
		t.Fatalf("the run ended with %v, want its lock kept", e.cause)
	}
	r.settle(holder.name)
	for range 4 {
		r.once(3)
	}
	r.check(1, 2, 4, 5, 6, 7)
	r.report(len(insts))
}

// The instance that runs a tick loses Redis for good (its client is closed): its lock is lost when refreshes fail
// until the validity deadline, which cancels the job's context; once the key has expired, every later tick runs
// once on the other two, and the instance cut off skips them all.
func TestClientClosedMidRun(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const ttl = 300 * time.Millisecond
	r, insts := lockerRig(t, srv, keywardgocron.WithTTL(ttl))
	r.once(3)
	r.block()
	names := ran(r.tick(3))
	if len(names) != 1 {
		t.Fatalf("tick 2 ran by %v, want once", names)
	}
	holder := r.instance(names[0])
	holder.skip = []error{redis.ErrClosed}
	if err := holder.rdb.Close(); err != nil {
		t.Fatal(err)
	}
	if e := receive(t, r.ends, "end of the run"); !errors.Is(e.cause, keyward.ErrLost) {
		t.Fatalf("the run ended with %v, want its context cancelled by the loss", e.cause)
	}
	if u := receive(t, r.unlocks, "Unlock"); !errors.Is(u.err, keyward.ErrLost) {
		t.Fatalf("Unlock: %v, want ErrLost", u.err)
	}
	if ev := holder.events.next(t); ev.Kind != keyward.Lost {
		t.Fatalf("%v event, want Lost", ev.Kind)
	}
	waitFree(t, srv, jobName)
	for range 4 {
		if who := r.once(3); who == holder.name {
			t.Fatal("the instance cut off ran a tick")
		}
	}
	r.check(ticksUpTo(6)...)
	r.report(len(insts))
}

// waitFree waits until nobody holds the lock key (it expired): it obtains it, which waits without polling, and
// releases it.
func waitFree(t *testing.T, srv *redistest.Server, key string) {
	t.Helper()
	locks, err := lock.New(srv.Client(t))
	if err != nil {
		t.Fatal(err)
	}
	defer locks.Close()
	ctx := within(t)
	l, err := locks.Obtain(ctx, key, time.Second)
	if err != nil {
		t.Fatalf("waiting for the key to expire: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// Three instances on a Redlock quorum of three servers, each with its own clients: no tick runs twice. Tries that
// arrive at the same moment can split the nodes so that none gets a majority: the tick is then skipped by all
// (Redlock's TryObtain does not retry), so some ticks may not run at all.
func TestNoTickRunsTwiceOnRedlock(t *testing.T) {
	t.Parallel()
	servers := redistest.StartN(t, 3)
	r := newRig(t)
	for i := range 3 {
		name := fmt.Sprintf("instance-%d", i)
		var nodes []redis.UniversalClient
		for _, srv := range servers {
			nodes = append(nodes, client(t, srv, name))
		}
		ev := newEvents(keyward.Released, keyward.Lost)
		// A node timeout far above the default (50 ms at most): the race detector on a loaded machine.
		quorum, err := redlock.New(nodes, redlock.WithObserver(ev), redlock.WithNodeTimeout(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = quorum.Close() })
		// A skipped tick: held by another on a majority, or no majority (the tries split the nodes).
		inst := &instance{name: name, events: ev, skip: []error{keyward.ErrNotObtained, keyward.ErrQuorum}}
		inst.locker = newGocronLocker(t, quorum.Locker(redlock.WithAutoRefresh()))
		r.start(inst)
	}
	const ticks = 8
	ranTicks := 0
	for range ticks {
		names := ran(r.tick(3))
		if len(names) > 1 {
			t.Fatalf("tick %d ran by %v", r.ticks, names)
		}
		if len(names) == 1 {
			ranTicks++
			receive(t, r.ends, "end of the run")
			r.settle(names...)
		}
	}
	r.check()
	r.report(3)
	t.Logf("%d of %d ticks ran; the others were skipped by all (split votes)", ranTicks, ticks)
}
