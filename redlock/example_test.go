package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/redlock"
)

// Two replicas race for the nightly report on three independent Redis servers: one obtains the lock on a
// majority of them, the other learns that it is taken. The next holder's fencing token is larger.
func Example() {
	// Three embedded Redis servers for the example; in production, clients of three independent servers.
	var nodes []redis.UniversalClient
	for range 3 {
		srv, _ := miniredis.Run()
		defer srv.Close()
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		defer rdb.Close()
		nodes = append(nodes, rdb)
	}
	ctx := context.Background()

	// The default node timeout is a hundredth of the ttl, at most 50 ms; a first contact (dial, script load) on
	// a busy machine may need more.
	replicaA, _ := redlock.New(nodes, redlock.WithNodeTimeout(time.Second))
	defer replicaA.Close()
	replicaB, _ := redlock.New(nodes, redlock.WithNodeTimeout(time.Second))
	defer replicaB.Close()

	l, err := replicaA.TryObtain(ctx, "nightly-report", time.Minute, redlock.WithAutoRefresh())
	if err != nil {
		fmt.Println("A:", err)
		return
	}
	fmt.Println("A: obtained nightly-report")

	_, err = replicaB.TryObtain(ctx, "nightly-report", time.Minute)
	if errors.Is(err, redlock.ErrNotObtained) {
		fmt.Println("B: another replica runs the report")
	}

	// ... A runs the report, writing with l.Fence() and watching l.Lost() ...

	if err := l.Release(ctx); err != nil {
		fmt.Println("A:", err)
	}
	fmt.Println("A: released")

	// B waits for the lock with Obtain; here it is free at once.
	next, err := replicaB.Obtain(ctx, "nightly-report", time.Minute)
	if err != nil {
		fmt.Println("B:", err)
		return
	}
	fmt.Println("B: obtained it, with a larger fence:", next.Fence() > l.Fence())
	_ = next.Release(ctx)
	// Output:
	// A: obtained nightly-report
	// B: another replica runs the report
	// A: released
	// B: obtained it, with a larger fence: true
}

// Code written against keyward.Locker — here, leader-style work done once across replicas — runs on a quorum
// exactly as on one Redis: only the Locker changes.
func ExampleClient_Locker() {
	var nodes []redis.UniversalClient
	for range 3 {
		srv, _ := miniredis.Run()
		defer srv.Close()
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
		defer rdb.Close()
		nodes = append(nodes, rdb)
	}
	quorum, _ := redlock.New(nodes, redlock.WithPrefix("jobs:"), redlock.WithNodeTimeout(time.Second))
	defer quorum.Close()

	var locker keyward.Locker = quorum.Locker()
	err := locker.Do(context.Background(), "reindex", time.Minute, func(ctx context.Context) error {
		fmt.Println("reindexing while a majority holds jobs:reindex")
		return nil
	})
	fmt.Println("done:", err)
	// Output:
	// reindexing while a majority holds jobs:reindex
	// done: <nil>
}
