package ratelimit_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/ratelimit"
)

// Every replica waits its turn for a partner API that allows 20 calls a second: no replica polls, and the turns
// are handed out in the order the replicas asked, across all of them.
func Example() {
	srv, _ := miniredis.Run() // an embedded Redis for the example; use your own client in production
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()

	partner, err := ratelimit.New(rdb, "partner-api", ratelimit.PerSecond(20).WithBurst(1))
	if err != nil {
		fmt.Println(err)
		return
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if err := partner.Wait(context.Background()); err != nil {
				fmt.Println(err)
				return
			}
			// call the partner here
		})
	}
	wg.Wait()
	fmt.Println("10 calls, one every 50 ms, took at least 450 ms:", time.Since(start) >= 450*time.Millisecond)
	// Output:
	// 10 calls, one every 50 ms, took at least 450 ms: true
}

// Allow answers at once, as github.com/go-redis/redis_rate's Allow does: a migration replaces
// limiter.Allow(ctx, "signups:"+ip, redis_rate.PerMinute(3)) with a Limiter per limit.
func ExampleLimiter_Allow() {
	srv, _ := miniredis.Run()
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	signups, _ := ratelimit.New(rdb, "signups:203.0.113.7", ratelimit.PerMinute(3))
	for range 4 {
		res, err := signups.Allow(ctx)
		if err != nil {
			fmt.Println(err)
			return
		}
		if res.Allowed == 0 {
			fmt.Println("refused; retry after", res.RetryAfter.Round(time.Second))
			continue
		}
		fmt.Println("allowed; remaining", res.Remaining)
	}
	// Output:
	// allowed; remaining 2
	// allowed; remaining 1
	// allowed; remaining 0
	// refused; retry after 20s
}

// Reserve takes a turn now and says how far away it is; a caller that will not wait that long gives it back.
func ExampleLimiter_Reserve() {
	srv, _ := miniredis.Run()
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	exports, _ := ratelimit.New(rdb, "exports", ratelimit.PerHour(6)) // one every 10 minutes, 6 at once
	_, _ = exports.AllowN(ctx, 6)
	r, err := exports.Reserve(ctx, 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("next export in", r.Delay().Round(time.Minute))
	if r.Delay() > time.Minute {
		ok, err := r.Cancel(ctx)
		fmt.Println("gave the turn back:", ok, err)
	}
	// Output:
	// next export in 10m0s
	// gave the turn back: true <nil>
}

// WithObserver hears the calls and their waits, for logs, metrics and traces.
func ExampleWithObserver() {
	srv, _ := miniredis.Run()
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()

	events := keyward.ObserverFunc(func(_ context.Context, e keyward.Event) {
		line := e.Source + " " + e.Key + ": " + e.Kind.String()
		if e.Kind == keyward.Ended {
			line += " (" + e.Op + ")"
		}
		fmt.Println(line, e.Err)
	})
	lim, _ := ratelimit.New(rdb, "mail", ratelimit.Every(10*time.Millisecond, 1), ratelimit.WithObserver(events))
	_ = lim.Wait(context.Background()) // the first token is there: no wait
	_ = lim.Wait(context.Background()) // the next comes in 10 ms
	res, _ := lim.Allow(context.Background())
	fmt.Println("allowed:", res.Allowed)
	// Output:
	// ratelimit mail: ended (wait) <nil>
	// ratelimit mail: wait started <nil>
	// ratelimit mail: wait ended <nil>
	// ratelimit mail: ended (wait) <nil>
	// ratelimit mail: ended (allow) ratelimit: refused: not enough tokens now
	// allowed: 0
}
