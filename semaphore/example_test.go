package semaphore_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/semaphore"
)

// Two heavy exports may run at once across all replicas; a third replica finds no room and comes back later.
func Example() {
	srv, _ := miniredis.Run() // an embedded Redis for the example; use your own client in production
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	exports, err := semaphore.New(rdb, "exports", 2) // kept for the life of the program
	if err != nil {
		fmt.Println(err)
		return
	}
	defer exports.Close()

	first, _ := exports.TryAcquire(ctx, time.Minute)
	second, _ := exports.TryAcquire(ctx, time.Minute)
	_, err = exports.TryAcquire(ctx, time.Minute)
	fmt.Println("third export:", errors.Is(err, semaphore.ErrNotObtained))

	_ = first.Release(ctx)
	third, err := exports.TryAcquire(ctx, time.Minute)
	fmt.Println("after a release:", err)
	_ = second.Release(ctx)
	_ = third.Release(ctx)
	// Output:
	// third export: true
	// after a release: <nil>
}

// Do holds a permit while fn runs, keeps it alive for as long as fn takes, and gives it back when fn returns.
func ExampleSemaphore_Do() {
	srv, _ := miniredis.Run()
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()

	gpus, _ := semaphore.New(rdb, "gpu-pool", 4)
	defer gpus.Close()
	err := gpus.Do(context.Background(), 30*time.Second, func(ctx context.Context) error {
		fmt.Println("training on one of 4 GPUs")
		return ctx.Err() // ctx is cancelled, with a cause matching ErrLost, if the permit is lost
	})
	fmt.Println("done:", err)
	// Output:
	// training on one of 4 GPUs
	// done: <nil>
}

// An observer hears what happens to the permits, for logs and metrics: here, how long a holder waited and held.
// WithLogger(slog.Default()) logs the same events.
func ExampleWithObserver() {
	srv, _ := miniredis.Run()
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()

	events := keyward.ObserverFunc(func(_ context.Context, e keyward.Event) {
		fmt.Println(e.Source, e.Key, e.Kind, e.Err)
	})
	pool, _ := semaphore.New(rdb, "pool", 1, semaphore.WithObserver(events))
	defer pool.Close()
	p, _ := pool.Acquire(context.Background(), time.Minute, semaphore.WithAutoRefresh())
	_ = p.Release(context.Background())
	// Output:
	// semaphore pool obtained <nil>
	// semaphore pool ended <nil>
	// semaphore pool released <nil>
}
