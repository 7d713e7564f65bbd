package keywardgocron_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/contrib/keywardgocron"
	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// electionName is the election of the Elector tests: the name of its lock key.
const electionName = "scheduler"

// leaderTTL is the lease of the Elector tests' leaders: a leader that dies is replaced within it.
const leaderTTL = 500 * time.Millisecond

// newElector returns an Elector of the election electionName on its own lock.Client of rdb (as an instance of
// its own would have), whose election tells o of its events, closed when the test ends.
func newElector(t *testing.T, rdb *redis.Client, o keyward.Observer) *keywardgocron.Elector {
	t.Helper()
	locks, err := lock.New(rdb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = locks.Close() })
	e, err := election.New(locks.Locker(), electionName, election.WithTTL(leaderTTL), election.WithObserver(o))
	if err != nil {
		t.Fatal(err)
	}
	el, err := keywardgocron.NewElector(e)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = el.Close() })
	return el
}

// When the leadership is lost, IsLeader reports it from that moment (the election's observer, told of the loss,
// finds it so), the job running under it is cancelled, and the Elector campaigns again.
func TestElectorFollowsTheLiveLeadership(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	admin := srv.Client(t)
	var el atomic.Pointer[keywardgocron.Elector]
	obtained := make(chan int64, 16)
	atLoss := make(chan error, 16)
	el.Store(newElector(t, client(t, srv, "a"), keyward.ObserverFunc(func(ctx context.Context, ev keyward.Event) {
		switch ev.Kind {
		case keyward.Obtained:
			obtained <- ev.Fence
		case keyward.Lost:
			atLoss <- el.Load().IsLeader(ctx)
		}
	})))
	elector := el.Load()
	ctx := t.Context()

	term := receive(t, obtained, "leadership")
	if err := keywardgocron.WaitLeading(within(t), elector); err != nil {
		t.Fatal(err)
	}
	if err := elector.IsLeader(ctx); err != nil {
		t.Fatalf("leading: IsLeader = %v", err)
	}
	started := make(chan int64, 1)
	jobEnded := make(chan error, 1)
	go func() {
		jobEnded <- elector.Job(func(ctx context.Context) error {
			f, _ := keywardgocron.FenceFrom(ctx)
			started <- f
			<-ctx.Done()
			return context.Cause(ctx)
		})(ctx)
	}()
	if f := receive(t, started, "job start"); f != term {
		t.Fatalf("the job's fence is %d, want the term %d", f, term)
	}

	// Another takes the lock (for 200 ms): the leader's next renewal finds it taken.
	if err := admin.Set(ctx, electionName, "someone else", 200*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	err := receive(t, atLoss, "loss")
	if !errors.Is(err, keywardgocron.ErrNotLeader) || !errors.Is(err, keyward.ErrNotHeld) ||
		!errors.Is(err, keyward.ErrLost) {
		t.Fatalf("IsLeader at the loss = %v, want ErrNotLeader, ErrNotHeld and ErrLost", err)
	}
	err = receive(t, jobEnded, "job end")
	if !errors.Is(err, keywardgocron.ErrNotLeader) || !errors.Is(err, keyward.ErrLost) {
		t.Fatalf("the job's context ended with %v, want ErrNotLeader and ErrLost", err)
	}
	err = elector.Job(func(context.Context) error { return errors.New("ran") })(ctx)
	if !errors.Is(err, keywardgocron.ErrNotLeader) {
		t.Fatalf("a job after the loss: %v, want ErrNotLeader (not run)", err)
	}

	// The other's lock expires: the Elector, campaigning again, leads a new term.
	if next := receive(t, obtained, "leadership again"); next <= term {
		t.Fatalf("new term %d, not after %d", next, term)
	}
	if err := keywardgocron.WaitLeading(within(t), elector); err != nil {
		t.Fatal(err)
	}
	if err := elector.IsLeader(ctx); err != nil {
		t.Fatalf("leading again: IsLeader = %v", err)
	}
	if err := elector.Close(); err != nil {
		t.Fatal(err)
	}
	if err := elector.IsLeader(ctx); !errors.Is(err, keywardgocron.ErrNotLeader) || !errors.Is(err, keyward.ErrClosed) {
		t.Fatalf("after Close: IsLeader = %v, want ErrNotLeader and ErrClosed", err)
	}
	if err := elector.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	n, err := admin.Exists(ctx, electionName).Result()
	if err != nil || n != 0 {
		t.Fatalf("after Close the leadership's lock is still there (%d, %v): Close did not resign", n, err)
	}
}

// Three schedulers with an Elector each: only the leader's runs the job, once per tick. The leader is shut down
// (it resigns) and another takes over; that one is cut off from Redis (it dies without resigning) and the third
// takes over when its lease has run out. No tick runs twice.
func TestOnlyTheLeaderRunsTheJob(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	r := newRig(t)
	leaders := make(chan string, 16)
	var insts []*instance
	for i := range 3 {
		name := fmt.Sprintf("instance-%d", i)
		rdb := client(t, srv, name)
		inst := &instance{name: name, rdb: rdb}
		inst.elector = newElector(t, rdb, keyward.ObserverFunc(func(_ context.Context, ev keyward.Event) {
			if ev.Kind == keyward.Obtained {
				leaders <- name
			}
		}))
		r.start(inst)
		insts = append(insts, inst)
	}

	first := r.instance(receive(t, leaders, "first leader"))
	if err := keywardgocron.WaitLeading(within(t), first.elector); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if who := r.once(3); who != first.name {
			t.Fatalf("tick %d ran by %s, not by the leader %s", r.ticks, who, first.name)
		}
	}

	// The leader shuts down: its scheduler, then its Elector, which resigns.
	r.stop(first)
	if err := first.elector.Close(); err != nil {
		t.Fatal(err)
	}
	second := r.instance(receive(t, leaders, "second leader"))
	if err := keywardgocron.WaitLeading(within(t), second.elector); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if who := r.once(2); who != second.name {
			t.Fatalf("tick %d ran by %s, not by the leader %s", r.ticks, who, second.name)
		}
	}

	// The second leader is cut off from Redis; its scheduler keeps asking. Its lease runs out, by its own clock
	// before the server's, and then the third leads.
	if err := second.rdb.Close(); err != nil {
		t.Fatal(err)
	}
	third := r.instance(receive(t, leaders, "third leader"))
	if err := keywardgocron.WaitLeading(within(t), third.elector); err != nil {
		t.Fatal(err)
	}
	if third == first || third == second {
		t.Fatalf("%s leads again", third.name)
	}
	if err := second.elector.IsLeader(t.Context()); !errors.Is(err, keywardgocron.ErrNotLeader) {
		t.Fatalf("the leader cut off: IsLeader = %v after its lease", err)
	}
	for range 3 {
		if who := r.once(2); who != third.name {
			t.Fatalf("tick %d ran by %s, not by the leader %s", r.ticks, who, third.name)
		}
	}
	r.check(ticksUpTo(9)...)
	r.report(len(insts))
}
