package keyspace_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/keyspace"
	"github.com/keyward/keyward/lock"
)

// A replica that finds the cache cold and the lock taken waits for the holder's release instead of polling:
// watch first, look again, then wait. The order cannot miss a release that lands between the look and the wait,
// since Watch returns only after the server confirmed the subscription, and the watch keeps what it hears until
// Wait takes it.
func Example() {
	srv, _ := miniredis.Run() // an embedded Redis for the example; use your own client in production
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	locks, _ := lock.New(rdb)
	defer locks.Close()
	w := keyspace.New(rdb) // shares rdb's pub/sub connection with locks' waiters
	defer w.Close()

	holder, _ := locks.TryObtain(ctx, "report:2026-12", time.Minute)

	// Another replica: watch the lock (confirmed), then look again, then wait.
	wt, err := w.Watch(ctx, "report:2026-12")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer wt.Close()
	if _, err := locks.TryObtain(ctx, "report:2026-12", time.Minute); errors.Is(err, lock.ErrNotObtained) {
		fmt.Println("taken: waiting for its release")
	}

	go func() { _ = holder.Release(ctx) }() // the holder finishes

	// A real waiter bounds the wait with the holder's remaining ttl: a holder that crashed sends no message.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	e, err := wt.Wait(wctx)
	fmt.Println("event:", e, err)
	// Output:
	// taken: waiting for its release
	// event: released <nil>
}

// Closing a Watcher ends its own watches, and only those: the other users of the same client (here a second
// Watcher; as well the lock.Clients, semaphores and elections of the client) keep the shared connection.
func ExampleWatcher_Close() {
	srv, _ := miniredis.Run()
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	a, b := keyspace.New(rdb), keyspace.New(rdb)
	defer b.Close()
	wa, _ := a.Watch(ctx, "job")
	wb, _ := b.Watch(ctx, "job")
	defer wb.Close()

	_ = a.Close()
	_, err := wa.Wait(ctx)
	fmt.Println("a's watch:", errors.Is(err, keyward.ErrClosed))

	locks, _ := lock.New(rdb)
	defer locks.Close()
	l, _ := locks.TryObtain(ctx, "job", time.Minute)
	_ = l.Release(ctx)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	e, err := wb.Wait(wctx)
	fmt.Println("b's watch:", e, err)
	// Output:
	// a's watch: true
	// b's watch: released <nil>
}
