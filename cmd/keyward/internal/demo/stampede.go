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

// The cache stampede: a popular cache entry is cold (it expired, or the cache restarted) and a thousand requests
// arrive at once. Each replica already coalesces its own concurrent misses into one lookup (singleflight), so
// without a lock every replica queries the database; with one, the first replica to miss takes the lock and
// queries, and the others wait for its release and read the cache.
const (
	stampedeRequests = 1000
	stampedeReplicas = 10
	// stampedeQuery is how long the simulated database query takes.
	stampedeQuery = 100 * time.Millisecond
	stampedeValue = "price=42"
	stampedeLock  = "lock:cache:product:42"
)

func stampede(ctx context.Context, e *env) error {
	rs, err := e.newReplicas(stampedeReplicas)
	if err != nil {
		return err
	}
	e.out.info("%s requests at once over %d replicas, each coalescing its own misses into one lookup at a time;",
		thousands(stampedeRequests), stampedeReplicas)
	e.out.info("the database query takes %s. With the lock, the first replica to miss takes it and queries;",
		human(stampedeQuery))
	e.out.info("the others wait for its release (keyspace.Watch: no polling) and read the cache")

	var served atomic.Int64
	stop := e.out.step(func() string {
		return fmt.Sprintf("%s of %s requests served", thousands(int(served.Load())), thousands(2*stampedeRequests))
	})
	plain, err := requests(ctx, rs, e.key("cache:product:41"), &served, false)
	if err != nil {
		stop()
		return err
	}
	locked, err := requests(ctx, rs, e.key("cache:product:42"), &served, true)
	stop()
	if err != nil {
		return err
	}
	e.out.info("no lock          %s requests → %d database queries, one per replica",
		thousands(stampedeRequests), plain.queries)
	e.out.check(locked.queries == 1 && locked.served == stampedeRequests,
		"lock             %s requests → %d database query, %s served (p50 %s, slowest %s)",
		thousands(stampedeRequests), locked.queries, thousands(int(locked.served)),
		ms(percentile(locked.latency, 50)), ms(percentile(locked.latency, 100)))
	return nil
}

type stampedeOutcome struct {
	queries int64 // database queries
	served  int64 // requests answered with the right value
	latency []time.Duration
}

// requests sends all the requests at once for the cold entry key, with or without the lock.
func requests(ctx context.Context, rs []*replica, key string, served *atomic.Int64, withLock bool) (stampedeOutcome, error) {
	var out stampedeOutcome
	var queries, good atomic.Int64
	flights := make([]flight, len(rs))
	latency := make([]time.Duration, stampedeRequests)
	errs := make([]error, stampedeRequests)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range stampedeRequests {
		r, f := rs[i%len(rs)], &flights[i%len(rs)]
		wg.Go(func() {
			<-start
			began := time.Now()
			v, err := f.do(func() (string, error) { return lookup(ctx, r, key, &queries, withLock) })
			latency[i] = time.Since(began)
			if err != nil {
				errs[i] = err
				return
			}
			if v == stampedeValue {
				good.Add(1)
			}
			served.Add(1)
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return out, err
	}
	out.queries, out.served, out.latency = queries.Load(), good.Load(), latency
	return out, nil
}

// lookup is one replica's lookup: the cache; on a miss, the database under the lock, or the cache again once
// the lock's holder released it.
func lookup(ctx context.Context, r *replica, key string, queries *atomic.Int64, withLock bool) (string, error) {
	for {
		v, err := r.rdb.Get(ctx, key).Result()
		if !errors.Is(err, redis.Nil) {
			return v, err
		}
		if !withLock {
			return query(ctx, r, key, queries)
		}
		l, err := r.locks.TryObtain(ctx, stampedeLock, 5*time.Second)
		if err == nil {
			// Another replica may have filled the cache between the miss and the lock.
			v, err = r.rdb.Get(ctx, key).Result()
			if errors.Is(err, redis.Nil) {
				v, err = query(ctx, r, key, queries)
			}
			return v, errors.Join(err, l.Release(ctx))
		}
		if !errors.Is(err, lock.ErrNotObtained) {
			return "", err
		}
		if err := waitRelease(ctx, r, stampedeLock, key); err != nil {
			return "", err
		}
	}
}

// waitRelease waits until the lock name is released (or, should its holder have died, has had time to expire),
// without polling and without taking the lock: every waiter reads the cache the moment the holder is done.
func waitRelease(ctx context.Context, r *replica, name, key string) error {
	w, err := r.watcher.Watch(ctx, r.prefix+name)
	if err != nil {
		return err
	}
	defer w.Close()
	// The release may have happened before the watch was confirmed: the cache tells.
	if n, err := r.rdb.Exists(ctx, key).Result(); err != nil || n == 1 {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second) // a holder that died sends nothing
	defer cancel()
	_, err = w.Wait(wctx)
	switch {
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case wctx.Err() != nil:
		return nil // look again
	}
	return err
}

// query is the simulated database query, which fills the cache.
func query(ctx context.Context, r *replica, key string, queries *atomic.Int64) (string, error) {
	queries.Add(1)
	if err := sleepUntil(ctx, time.Now().Add(stampedeQuery)); err != nil {
		return "", err
	}
	return stampedeValue, r.rdb.Set(ctx, key, stampedeValue, time.Minute).Err()
}

// flight coalesces one replica's concurrent lookups: while one runs, the others wait for its answer.
type flight struct {
	mu   sync.Mutex
	call *call
}

type call struct {
	done chan struct{}
	v    string
	err  error
}

func (f *flight) do(fn func() (string, error)) (string, error) {
	f.mu.Lock()
	if c := f.call; c != nil {
		f.mu.Unlock()
		<-c.done
		return c.v, c.err
	}
	c := &call{done: make(chan struct{})}
	f.call = c
	f.mu.Unlock()
	c.v, c.err = fn()
	f.mu.Lock()
	f.call = nil
	f.mu.Unlock()
	close(c.done)
	return c.v, c.err
}
