package demo

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/lock"
)

// The shared counter: replicas increment one Redis value with GET, some work, SET. Without a lock, increments
// that interleave overwrite each other; with one, none is lost. Then the case a lock alone does not cover: a
// holder that stalls past its ttl and writes late, which Guard refuses.
const (
	counterReplicas = 5
	counterEach     = 40
	// counterWork is the work between the read and the write: what gives other replicas time to interleave.
	counterWork = time.Millisecond
)

func counter(ctx context.Context, e *env) error {
	rs, err := e.newReplicas(counterReplicas)
	if err != nil {
		return err
	}
	total := counterReplicas * counterEach
	e.out.info("%d replicas × %d increments each (GET, %s of work, SET)", counterReplicas, counterEach, human(counterWork))

	var done atomic.Int64
	stop := e.out.step(func() string { return fmt.Sprintf("%d of %d increments", done.Load(), 2*total) })
	unlocked, err := countUnlocked(ctx, rs, e.key("counter:unlocked"), &done)
	if err != nil {
		stop()
		return err
	}
	locked, err := countLocked(ctx, rs, e.key("{counter}:value"), &done)
	stop()
	if err != nil {
		return err
	}
	e.out.info("no lock          counter = %d, expected %d: %d increments lost", unlocked, total, total-unlocked)
	e.out.check(locked == total, "lock.Obtain      counter = %d, expected %d: none lost", locked, total)

	return pausedHolder(ctx, e, rs[0], rs[1])
}

// countUnlocked runs the increments without a lock and returns the final count.
func countUnlocked(ctx context.Context, rs []*replica, key string, done *atomic.Int64) (int, error) {
	err := each(rs, func(r *replica) error {
		for range counterEach {
			n, err := r.rdb.Get(ctx, key).Int()
			if err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
			time.Sleep(counterWork)
			if err := r.rdb.Set(ctx, key, n+1, 0).Err(); err != nil {
				return err
			}
			done.Add(1)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return ctxInt(ctx, rs[0].rdb, key)
}

// countLocked runs the increments under the lock, writing through Guard, and returns the final count.
func countLocked(ctx context.Context, rs []*replica, key string, done *atomic.Int64) (int, error) {
	err := each(rs, func(r *replica) error {
		for range counterEach {
			// The lock name shares the data key's hash tag, as Guard needs on a Redis Cluster.
			l, err := r.locks.Obtain(ctx, "{counter}:lock", 5*time.Second)
			if err != nil {
				return err
			}
			n, err := r.rdb.Get(ctx, key).Int()
			if err != nil && !errors.Is(err, redis.Nil) {
				_ = l.Release(ctx)
				return err
			}
			time.Sleep(counterWork)
			err = l.Guard(ctx, func(pipe redis.Pipeliner) error {
				pipe.Set(ctx, key, n+1, 0)
				return nil
			})
			if err := errors.Join(err, l.Release(ctx)); err != nil {
				return err
			}
			done.Add(1)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return ctxInt(ctx, rs[0].rdb, key)
}

// pausedHolder: replica A holds the lock with a short ttl, reads the counter, and stalls before its write (a GC
// pause, a SIGSTOP) until its ttl ran out and B took the lock and added 10. A's late write is then a plain SET
// in one run and a Guard write in another, side by side.
func pausedHolder(ctx context.Context, e *env, a, b *replica) error {
	const ttl = 500 * time.Millisecond
	e.out.info("paused holder, simulated: A takes the lock (ttl %s, no refresh) and reads the counter, then", human(ttl))
	e.out.info("stalls before its write until its ttl ran out and B took the lock and added 10")

	var plain, guarded pauseOutcome
	var wg sync.WaitGroup
	wg.Go(func() { plain = pauseRun(ctx, e, a, b, "paused-plain", ttl, false) })
	wg.Go(func() { guarded = pauseRun(ctx, e, a, b, "paused-guard", ttl, true) })
	wg.Wait()
	if err := errors.Join(plain.err, guarded.err); err != nil {
		return err
	}
	e.out.info("plain SET        A's late write landed: counter = %d, B's +10 overwritten", plain.value)
	ok := errors.Is(guarded.write, lock.ErrLost) && guarded.value == 10 && guarded.fenceB > guarded.fenceA
	verdict := fmt.Sprintf("refused (%v)", guarded.write)
	if guarded.write == nil {
		verdict = "accepted"
	} else if errors.Is(guarded.write, lock.ErrLost) {
		verdict = "refused (lock lost)"
	}
	e.out.check(ok, "Guard            A's late write %s; counter = %d keeps B's +10", verdict, guarded.value)
	e.out.check(guarded.fenceB > guarded.fenceA, "fencing tokens   A %d < B %d: storage that checks them refuses A too",
		guarded.fenceA, guarded.fenceB)
	return nil
}

type pauseOutcome struct {
	write          error // A's late write
	value          int   // the counter at the end
	fenceA, fenceB int64
	err            error // the run itself failed
}

func pauseRun(ctx context.Context, e *env, a, b *replica, name string, ttl time.Duration, guard bool) pauseOutcome {
	lockName, key := "{"+name+"}:lock", e.key("{"+name+"}:value")
	var out pauseOutcome
	if out.err = a.rdb.Set(ctx, key, 0, 0).Err(); out.err != nil {
		return out
	}
	la, err := a.locks.TryObtain(ctx, lockName, ttl)
	if err != nil {
		out.err = err
		return out
	}
	defer la.Release(ctx) //nolint:errcheck // lost by design: the release reports it
	out.fenceA = la.Fence()
	n, err := a.rdb.Get(ctx, key).Int()
	if err != nil {
		out.err = err
		return out
	}

	// B waits for the lock (Obtain wakes when A's key expires) and adds 10. A's stall lasts until B is done:
	// the order is certain, not a matter of sleeping long enough.
	bDone := make(chan error, 1)
	go func() {
		lb, err := b.locks.Obtain(ctx, lockName, 5*time.Second)
		if err != nil {
			bDone <- err
			return
		}
		out.fenceB = lb.Fence()
		m, err := b.rdb.Get(ctx, key).Int()
		if err == nil {
			err = lb.Guard(ctx, func(pipe redis.Pipeliner) error {
				pipe.Set(ctx, key, m+10, 0)
				return nil
			})
		}
		bDone <- errors.Join(err, lb.Release(ctx))
	}()

	var bErr error
	waited := false
	stall := func() {
		if !waited {
			bErr, waited = <-bDone, true
		}
	}
	if guard {
		// The stall happens inside Guard, after its ownership check and before the write is sent: the
		// window that a check-then-write would leave open.
		out.write = la.Guard(ctx, func(pipe redis.Pipeliner) error {
			stall()
			pipe.Set(ctx, key, n+1, 0)
			return nil
		})
	} else {
		stall()
		out.write = a.rdb.Set(ctx, key, n+1, 0).Err()
	}
	stall()
	if bErr != nil {
		out.err = fmt.Errorf("replica B: %w", bErr)
		return out
	}
	out.value, out.err = ctxInt(ctx, a.rdb, key)
	return out
}

// each runs fn for every replica at once and returns their errors joined.
func each(rs []*replica, fn func(r *replica) error) error {
	errs := make([]error, len(rs))
	var wg sync.WaitGroup
	for i, r := range rs {
		wg.Go(func() { errs[i] = fn(r) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ctxInt reads an integer key, 0 when it is absent.
func ctxInt(ctx context.Context, rdb *redis.Client, key string) (int, error) {
	n, err := rdb.Get(ctx, key).Int()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return n, err
}
