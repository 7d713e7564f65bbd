package keyspace_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/keyspace"
	"github.com/keyward/keyward/lock"
)

// A replica that finds the cache cold and the lock taken waits for the holder's release instead of polling:
// watch first, look again, then wait for an event. The order cannot miss a release that lands between the look
// and the wait, since Watch returns only after the server confirmed the subscription.
func Example() {
	srv, _ := miniredis.Run() // an embedded Redis for the example; use your own client in production
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	w := keyspace.New(rdb) // one per Redis deployment, shared by every waiter of the process
	defer w.Close()
	locks, _ := lock.New(rdb, lock.WithWatcher(w))
	defer locks.Close()

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

	timeout := time.NewTimer(10 * time.Second) // a safety net: a real waiter uses the holder's remaining ttl
	defer timeout.Stop()
	select {
	case <-wt.Ready():
		for _, e := range wt.Events() {
			fmt.Println("event:", e.Kind)
		}
	case <-timeout.C:
		fmt.Println("no event")
	}
	// Output:
	// taken: waiting for its release
	// event: released
}
