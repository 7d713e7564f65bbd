package lock_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/lock"
)

// Two replicas race for the nightly report: one obtains the lock, the other learns that it is taken.
func Example() {
	srv, _ := miniredis.Run() // an embedded Redis for the example; use your own client in production
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	replicaA, _ := lock.New(rdb)
	replicaB, _ := lock.New(rdb)

	l, err := replicaA.TryObtain(ctx, "nightly-report", time.Minute, lock.WithAutoRefresh())
	if err != nil {
		fmt.Println("A:", err)
		return
	}
	fmt.Println("A: obtained nightly-report")

	_, err = replicaB.TryObtain(ctx, "nightly-report", time.Minute)
	if errors.Is(err, lock.ErrNotObtained) {
		fmt.Println("B: another replica runs the report")
	}

	// ... A runs the report, watching l.Lost() if it must stop when the lock cannot be kept ...

	if err := l.Release(ctx); err != nil {
		fmt.Println("A:", err)
	}
	fmt.Println("A: released")
	// Output:
	// A: obtained nightly-report
	// B: another replica runs the report
	// A: released
}

// A replica increments a shared counter through Guard: the write commits only while the lock is still held, so
// a replica that stalled past the ttl while another took over cannot overwrite the newer value.
func ExampleLock_Guard() {
	srv, _ := miniredis.Run()
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	locks, _ := lock.New(rdb)

	// Keys that share the hash tag {stock} live in one Redis Cluster slot, as Guard's transaction needs.
	l, err := locks.TryObtain(ctx, "{stock}:lock", 10*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	count, _ := rdb.Get(ctx, "{stock}:count").Int()
	err = l.Guard(ctx, func(pipe redis.Pipeliner) error {
		pipe.Set(ctx, "{stock}:count", count+1, 0)
		return nil
	})
	fmt.Println("first write:", err)

	// The holder stalls; its lock expires and another replica takes it.
	srv.FastForward(11 * time.Second)
	other, _ := locks.TryObtain(ctx, "{stock}:lock", 10*time.Second)

	err = l.Guard(ctx, func(pipe redis.Pipeliner) error {
		pipe.Set(ctx, "{stock}:count", 0, 0)
		return nil
	})
	fmt.Println("late write refused:", errors.Is(err, lock.ErrLost))
	fmt.Println("count:", rdb.Get(ctx, "{stock}:count").Val())
	_ = other.Release(ctx)
	// Output:
	// first write: <nil>
	// late write refused: true
	// count: 1
}

// Code written against keyward.Locker runs on one Redis (this Client) or on a Redlock quorum alike.
func ExampleClient_Locker() {
	srv, _ := miniredis.Run()
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	locks, _ := lock.New(rdb, lock.WithPrefix("jobs:"))
	defer locks.Close()

	var locker keyward.Locker = locks.Locker()
	err := locker.Do(context.Background(), "reindex", time.Minute, func(ctx context.Context) error {
		fmt.Println("reindexing while holding jobs:reindex")
		return nil
	})
	fmt.Println("done:", err)
	// Output:
	// reindexing while holding jobs:reindex
	// done: <nil>
}

// Do runs the job while holding the lock and gives it the lock's fencing token, for storage that refuses writes
// with a fence smaller than the largest it has seen: a holder that stalled past its ttl cannot overwrite a later
// holder's write. Each holder's fence is larger than the last one's.
func ExampleFenceFrom() {
	srv, _ := miniredis.Run()
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	locks, _ := lock.New(rdb)

	var fences []int64
	for range 2 {
		err := locks.Do(ctx, "nightly-report", time.Minute, func(ctx context.Context) error {
			fence, _ := lock.FenceFrom(ctx)
			fences = append(fences, fence) // e.g. store.Write(fence, report)
			return nil
		})
		if err != nil {
			fmt.Println(err)
			return
		}
	}
	fmt.Println("the second holder's fence is larger:", fences[1] > fences[0])
	// Output:
	// the second holder's fence is larger: true
}

// An observer hears what happens to the Client's locks, for metrics and traces; WithLogger logs the same events
// through log/slog.
func ExampleWithObserver() {
	srv, _ := miniredis.Run()
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	observer := keyward.ObserverFunc(func(_ context.Context, e keyward.Event) {
		if e.Kind == keyward.Ended { // e.g. a counter of calls by e.Op and outcome
			fmt.Println(e.Source, e.Op, "ended:", e.Err)
			return
		}
		fmt.Println(e.Source, e.Kind, e.Key) // e.g. a histogram of e.Wait for Obtained, of e.Held for Released
	})
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	locks, _ := lock.New(rdb, lock.WithPrefix("jobs:"), lock.WithObserver(observer), lock.WithLogger(logger))
	defer locks.Close()

	err := locks.Do(ctx, "reindex", time.Minute, func(ctx context.Context) error { return nil })
	fmt.Println("done:", err)
	// Output:
	// lock obtained jobs:reindex
	// lock obtain ended: <nil>
	// lock released jobs:reindex
	// lock do ended: <nil>
	// done: <nil>
}
