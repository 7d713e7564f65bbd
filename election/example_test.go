package election_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/lock"
)

// Two replicas campaign; one leads, everyone can see who, and when it resigns the other takes over.
func Example() {
	srv, _ := miniredis.Run() // an embedded Redis for the example; use your own client in production
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	locks, _ := lock.New(rdb)
	defer locks.Close()

	a, _ := election.New(locks.Locker(), "queue-drainer", election.WithRedis(rdb), election.WithIdentity("replica-a"))
	b, _ := election.New(locks.Locker(), "queue-drainer", election.WithRedis(rdb), election.WithIdentity("replica-b"))

	lead, err := a.Campaign(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	leader, _ := b.Leader(ctx)
	fmt.Println("leader:", leader.Identity, "term matches:", leader.Term == lead.Term())

	next := make(chan *election.Leadership)
	go func() {
		l, _ := b.Campaign(ctx) // waits, without polling, until a resigns
		next <- l
	}()
	_ = lead.Resign(ctx)
	second := <-next
	leader, _ = a.Leader(ctx)
	fmt.Println("leader:", leader.Identity, "later term:", second.Term() > lead.Term())

	_ = second.Resign(ctx)
	_, err = a.Leader(ctx)
	fmt.Println(errors.Is(err, election.ErrNoLeader))
	// Output:
	// leader: replica-a term matches: true
	// leader: replica-b later term: true
	// true
}

// An observer hears this candidate's terms begin and end, for logs and metrics (Fence is the term).
// WithLogger(slog.Default()) logs the same events.
func ExampleWithObserver() {
	srv, _ := miniredis.Run()
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	locks, _ := lock.New(rdb)
	defer locks.Close()

	var first int64
	events := keyward.ObserverFunc(func(_ context.Context, e keyward.Event) {
		if first == 0 {
			first = e.Fence
		}
		fmt.Println(e.Source, e.Key, e.Kind, "first term:", e.Fence == first, e.Err)
	})
	e, _ := election.New(locks.Locker(), "reports", election.WithObserver(events))
	lead, _ := e.Campaign(context.Background())
	_ = lead.Resign(context.Background())
	// Output:
	// election reports obtained first term: true <nil>
	// election reports ended first term: true <nil>
	// election reports released first term: true <nil>
}

// A dashboard follows who leads, woken by the election's messages rather than polling.
func ExampleElection_Observe() {
	srv, _ := miniredis.Run()
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	locks, _ := lock.New(rdb)
	defer locks.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	dashboard, _ := election.New(locks.Locker(), "reminders", election.WithRedis(rdb))
	changes, _ := dashboard.Observe(ctx)
	show := func() {
		if l := <-changes; l.Identity != "" {
			fmt.Println(l.Identity, "leads")
		} else {
			fmt.Println("nobody leads")
		}
	}
	show()

	for _, replica := range []string{"replica-a", "replica-b"} {
		e, _ := election.New(locks.Locker(), "reminders", election.WithRedis(rdb), election.WithIdentity(replica))
		lead, _ := e.Campaign(ctx)
		show()
		_ = lead.Resign(ctx)
		show()
	}
	// Output:
	// nobody leads
	// replica-a leads
	// nobody leads
	// replica-b leads
	// nobody leads
}

// A cron-style job across three replicas. Every replica computes the same schedule, and the election makes the
// leader, and only it, run each tick. The last tick done is kept in Redis: when the leader dies (here, its
// connection is cut and it stops without resigning, as after kill -9), another replica leads once the dead one's
// lease has run out, and runs the ticks that are due, starting with any that passed while nobody led.
func Example_cron() {
	srv, _ := miniredis.Run()
	defer srv.Close()
	srv.ClockTTL(true) // keys expire on the real clock, as on a real Redis: the dead leader's lease runs out

	sched := &schedule{next: make(chan struct{})}
	ran := make(chan run)
	aLeads := make(chan struct{}, 1)
	replicas := map[string]*replica{}
	for _, name := range []string{"replica-a", "replica-b", "replica-c"} {
		replicas[name] = startReplica(srv.Addr(), name, sched, ran, aLeads)
		if name == "replica-a" {
			<-aLeads // so that the example's output is always the same: a leads first
		}
	}

	for tick := 1; tick <= 4; tick++ {
		if tick == 3 {
			replicas["replica-a"].die()
			fmt.Println("replica-a dies")
		}
		sched.advance()
		select {
		case r := <-ran:
			if r.replica != "replica-a" {
				r.replica = "another replica"
			}
			fmt.Printf("tick %d ran on %s\n", r.tick, r.replica)
		case <-time.After(10 * time.Second):
			fmt.Println("tick", tick, "did not run")
		}
	}

	for _, r := range replicas {
		r.stop()
	}
	check := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer check.Close()
	fmt.Println("runs per tick:", check.HGetAll(context.Background(), "report:runs").Val())
	// Output:
	// tick 1 ran on replica-a
	// tick 2 ran on replica-a
	// replica-a dies
	// tick 3 ran on another replica
	// tick 4 ran on another replica
	// runs per tick: map[1:1 2:1 3:1 4:1]
}

// A replica is one process of the cron example: its own Redis client, lock client and election.
type replica struct {
	rdb    *redis.Client
	locks  *lock.Client
	cancel context.CancelFunc
	done   chan struct{}
}

// run is one run of the job: which tick, on which replica.
type run struct {
	tick    int
	replica string
}

func startReplica(addr, name string, sched *schedule, ran chan<- run, aLeads chan<- struct{}) *replica {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	locks, _ := lock.New(rdb)
	e, _ := election.New(locks.Locker(), "nightly-report",
		election.WithRedis(rdb), election.WithIdentity(name), election.WithTTL(200*time.Millisecond),
		election.WithCallbacks(election.Callbacks{
			OnStartedLeading: func(election.Leader) {
				if name == "replica-a" {
					select {
					case aLeads <- struct{}{}:
					default:
					}
				}
			},
		}))
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{rdb: rdb, locks: locks, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		_ = e.Run(ctx, func(leaderCtx context.Context) error {
			return nightlyReport(leaderCtx, rdb, sched, name, ran)
		})
	}()
	return r
}

// nightlyReport is the job, run by the leader only: it runs every tick that is due and not done yet, oldest first,
// then waits for the next tick, until leaderCtx ends.
func nightlyReport(leaderCtx context.Context, rdb *redis.Client, sched *schedule, name string, ran chan<- run) error {
	for {
		now, next := sched.now()
		done, err := rdb.Get(leaderCtx, "report:done").Int()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		for tick := done + 1; tick <= now; tick++ {
			// Check leaderCtx itself right before acting: after a pause past the lease, it reports the loss. A
			// real job would also hand election.TermFrom(leaderCtx) to its storage, to refuse a late leader's writes.
			if leaderCtx.Err() != nil {
				return nil
			}
			if err := rdb.Set(leaderCtx, "report:done", tick, 0).Err(); err != nil {
				return err
			}
			rdb.HIncrBy(leaderCtx, "report:runs", strconv.Itoa(tick), 1) // the report itself
			select {
			case ran <- run{tick, name}:
			case <-leaderCtx.Done():
				return nil
			}
		}
		select {
		case <-next:
		case <-leaderCtx.Done():
			return nil
		}
	}
}

// die stops the replica as kill -9 would: its connection is gone before it can resign, so its lock stays until
// its lease runs out.
func (r *replica) die() {
	_ = r.rdb.Close()
	r.stop()
}

// stop ends the replica's Run (it resigns, if its connection still works) and waits for it.
func (r *replica) stop() {
	r.cancel()
	<-r.done
	_ = r.locks.Close()
	_ = r.rdb.Close()
}

// schedule stands in for a cron schedule ("every day at 02:00") that every replica computes on its own; here the
// example moves it on, one tick at a time.
type schedule struct {
	mu   sync.Mutex
	tick int
	next chan struct{} // closed at the next tick
}

// now returns the current tick and a channel closed at the next.
func (s *schedule) now() (int, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tick, s.next
}

func (s *schedule) advance() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tick++
	close(s.next)
	s.next = make(chan struct{})
}
