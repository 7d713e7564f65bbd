package demo

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/election"
)

// Cron across replicas: every replica runs the same scheduler, but the job must run once per tick, not once per
// replica, and go on when the replica running it dies. The replicas campaign in an election; the leader runs
// the ticks that are due, and writes each run with its term as a fencing token, so that a leader that was
// replaced cannot write a run late. The leader crashes in the middle of a job: its lease expires, another
// replica is elected and runs the ticks that were missed meanwhile.
const (
	cronReplicas = 3
	cronTicks    = 12
	cronPeriod   = 250 * time.Millisecond
	cronJob      = 50 * time.Millisecond
	cronTTL      = time.Second
	// cronCrashTick is the tick during whose job the leader crashes.
	cronCrashTick = 5
)

var errCrashed = errors.New("crashed")

// cronCommit records a tick's run if term is still the newest term that wrote: KEYS[1] the newest term seen,
// KEYS[2] the hash of runs (tick → how many times it ran). ARGV[1] the term, ARGV[2] the tick. Returns the
// tick's count after the run, or -1 when a newer term has written (the writer is a replaced leader).
var cronCommit = redis.NewScript(`
local newest = tonumber(redis.call('GET', KEYS[1]) or '0')
local term = tonumber(ARGV[1])
if term < newest then return -1 end
if term > newest then redis.call('SET', KEYS[1], ARGV[1]) end
if ARGV[2] == '' then return 0 end
return redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
`)

func cron(ctx context.Context, e *env) error {
	rs, err := e.newReplicas(cronReplicas)
	if err != nil {
		return err
	}
	e.out.info("a job every %s for %d ticks on %d replicas in a leader election (%s lease); the leader runs",
		human(cronPeriod), cronTicks, cronReplicas, human(cronTTL))
	e.out.info("the ticks that are due and writes each run with its term as a fencing token")
	c := &cronRun{e: e, runs: e.key("{cron}:runs"), term: e.key("{cron}:term"), start: time.Now(),
		done: make(chan struct{}), ranBy: map[int]string{}, ranAt: map[int]time.Time{}}
	stop := e.out.step(func() string { return fmt.Sprintf("tick %d of %d", c.last.Load(), cronTicks) })
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.done:
			cancel()
		case <-runCtx.Done():
		}
	}()
	err = each(rs, func(r *replica) error {
		el, err := election.New(r.locks.Locker(), "cron:report", election.WithTTL(cronTTL), election.WithIdentity(r.name))
		if err != nil {
			return err
		}
		err = el.Run(runCtx, func(leaderCtx context.Context) error { return c.lead(leaderCtx, r) })
		if c.crashed.Load() == r {
			return nil // a crashed replica does nothing more
		}
		if runCtx.Err() != nil && errors.Is(err, context.Canceled) {
			return nil // the scenario is over: Run's ctx ended, as meant
		}
		return err
	})
	stop()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if err != nil {
		return err
	}
	return c.report(ctx)
}

// cronRun is the shared record of one cron scenario.
type cronRun struct {
	e          *env
	runs, term string // Redis keys: the runs per tick, the newest term that wrote
	start      time.Time
	done       chan struct{} // closed when the last tick ran
	last       atomic.Int64  // the last tick that ran

	crashed   atomic.Pointer[replica]
	crashedAt time.Time // set once, before crashed

	mu      sync.Mutex
	ranBy   map[int]string
	ranAt   map[int]time.Time
	leaders []string
	refused int // runs refused because a newer term had written
}

// lead is the scheduler of the leader r: it runs every tick that is due, from the first one not yet run, until
// the last tick ran or the leadership ends.
func (c *cronRun) lead(ctx context.Context, r *replica) error {
	term := election.TermFrom(ctx)
	// Claim the term before reading what ran: from now on, a replaced leader's late write is refused, so the
	// tick it may have been running cannot be counted twice.
	if _, err := cronCommit.Run(ctx, r.rdb, []string{c.term, c.runs}, term, "").Int(); err != nil {
		return err
	}
	c.mu.Lock()
	c.leaders = append(c.leaders, r.name)
	c.mu.Unlock()
	n, err := r.rdb.HLen(ctx, c.runs).Result()
	if err != nil {
		return err
	}
	for tick := int(n) + 1; tick <= cronTicks; tick++ {
		if err := sleepUntil(ctx, c.start.Add(time.Duration(tick)*cronPeriod)); err != nil {
			return err
		}
		if tick == cronCrashTick && c.crashed.Load() == nil {
			// The crash, in the middle of the job: connections gone at once, nothing released, the run never
			// written.
			c.crashedAt = time.Now()
			c.crashed.Store(r)
			r.crash()
			return errCrashed
		}
		if err := sleepUntil(ctx, time.Now().Add(cronJob)); err != nil {
			return err
		}
		count, err := cronCommit.Run(ctx, r.rdb, []string{c.term, c.runs}, term, tick).Int()
		if err != nil {
			return err
		}
		c.mu.Lock()
		if count < 0 {
			// A newer term has written: this leader was replaced. Its run did not happen; the new leader's does.
			c.refused++
			c.mu.Unlock()
			return nil
		}
		c.ranBy[tick], c.ranAt[tick] = r.name, time.Now()
		c.mu.Unlock()
		c.last.Store(int64(tick))
		if tick == cronTicks {
			close(c.done)
		}
	}
	<-ctx.Done()
	return nil
}

// report prints who ran which tick and checks that each ran exactly once.
func (c *cronRun) report(ctx context.Context) error {
	counts, err := c.e.admin.HGetAll(ctx, c.runs).Result()
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var ticks []string
	once, twice := 0, 0
	for n := 1; n <= cronTicks; n++ {
		by := strings.TrimPrefix(c.ranBy[n], "replica-")
		if by == "" {
			by = "-"
		}
		ticks = append(ticks, fmt.Sprintf("%d:r%s", n, by))
		switch counts[strconv.Itoa(n)] {
		case "1":
			once++
		case "", "0":
		default:
			twice++
		}
	}
	e := c.e
	e.out.info("tick:replica     %s", strings.Join(ticks, " "))
	crashed := c.crashed.Load()
	if crashed == nil {
		e.out.check(false, "the leader did not crash: the scenario did not run as planned")
		return nil
	}
	next := c.ranBy[cronCrashTick]
	e.out.info("%s led and crashed running tick %d (simulated: its connections closed at once, its lease",
		crashed.name, cronCrashTick)
	e.out.info("left to expire); %s was elected and ran tick %d %.1f s later, then the ticks missed meanwhile",
		next, cronCrashTick, c.ranAt[cronCrashTick].Sub(c.crashedAt).Seconds())
	e.out.check(once == cronTicks && twice == 0 && c.refused == 0,
		"every tick ran exactly once: %d of %d, by %d leaders in turn (%s)",
		once, cronTicks, len(c.leaders), strings.Join(c.leaders, ", "))
	return nil
}

// sleepUntil waits until t, or returns ctx's cause when ctx ends first.
func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-timer.C:
		return nil
	}
}
