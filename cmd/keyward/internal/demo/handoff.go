package demo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward/lock"
)

// Hand-off latency: how long a lock stays idle between one holder's release and the next holder's return from
// Obtain, when replicas contend. keyward's waiters are woken by the release itself; the usual alternative is a
// loop that tries every 100 ms, measured here the same way.
const (
	handoffReplicas = 4
	handoffCount    = 200
	handoffHold     = time.Millisecond
	pollEvery       = 100 * time.Millisecond
	pollPairs       = 10
	pollRounds      = 3
)

func handoff(ctx context.Context, e *env) error {
	rs, err := e.newReplicas(handoffReplicas)
	if err != nil {
		return err
	}
	e.out.info("%d replicas contend for one lock, each holding it %s; measured: the gap from one holder's",
		handoffReplicas, human(handoffHold))
	e.out.info("Release to the next holder's return from Obtain, %s", e.where())

	var progress atomic.Int64
	stop := e.out.step(func() string {
		return fmt.Sprintf("%d of %d hand-offs", progress.Load(), handoffCount+pollPairs*pollRounds)
	})
	woken, overlapsW, err := measureWoken(ctx, rs, &progress)
	if err != nil {
		stop()
		return err
	}
	polled, overlapsP, err := measurePolling(ctx, rs[0], rs[1], &progress)
	stop()
	if err != nil {
		return err
	}
	e.out.info("woken by release   p50 %-8s p99 %-8s (lock.Obtain, %d hand-offs)",
		ms(percentile(woken, 50)), ms(percentile(woken, 99)), len(woken))
	e.out.info("polling /100 ms    p50 %-8s p99 %-8s (a TryObtain loop sleeping 100 ms, %d hand-offs)",
		ms(percentile(polled, 50)), ms(percentile(polled, 99)), len(polled))
	total := len(woken) + len(polled)
	e.out.check(overlapsW+overlapsP == 0 && len(woken) >= handoffCount-handoffReplicas,
		"one holder at a time in all %d hand-offs", total)
	return nil
}

// where says what the measured latencies include.
func (e *env) where() string {
	if e.embedded() {
		return "on the in-process Redis (add a network's round trips)"
	}
	return "on " + e.opts.Addr
}

// measureWoken lets the replicas take turns with Obtain and returns the gaps between a release and the next
// holder's return from Obtain, and how often two replicas held the lock at once (never, if the lock works).
func measureWoken(ctx context.Context, rs []*replica, progress *atomic.Int64) ([]time.Duration, int, error) {
	var (
		mu         sync.Mutex
		releasedAt time.Time
		samples    []time.Duration
		inside     atomic.Int32
		overlaps   atomic.Int32
		turns      atomic.Int64
	)
	err := each(rs, func(r *replica) error {
		for turns.Add(1) <= handoffCount {
			l, err := r.locks.Obtain(ctx, "handoff", 5*time.Second)
			if err != nil {
				return err
			}
			got := time.Now()
			if inside.Add(1) != 1 {
				overlaps.Add(1)
			}
			mu.Lock()
			if !releasedAt.IsZero() {
				samples = append(samples, got.Sub(releasedAt))
			}
			mu.Unlock()
			progress.Add(1)
			time.Sleep(handoffHold)
			inside.Add(-1)
			mu.Lock()
			releasedAt = time.Now()
			mu.Unlock()
			if err := l.Release(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	return samples, int(overlaps.Load()), err
}

// measurePolling measures a polling waiter: holder takes a lock, waiter starts trying every pollEvery, and
// holder releases at a random moment of waiter's cycle. Pairs of locks run side by side to save time.
func measurePolling(ctx context.Context, holder, waiter *replica, progress *atomic.Int64) ([]time.Duration, int, error) {
	var mu sync.Mutex
	var samples []time.Duration
	overlaps := 0
	errs := make([]error, pollPairs)
	var wg sync.WaitGroup
	for p := range pollPairs {
		wg.Go(func() {
			name := fmt.Sprintf("poll-%d", p)
			for range pollRounds {
				gap, overlap, err := pollOnce(ctx, holder.locks, waiter.locks, name)
				if err != nil {
					errs[p] = err
					return
				}
				mu.Lock()
				samples = append(samples, gap)
				if overlap {
					overlaps++
				}
				mu.Unlock()
				progress.Add(1)
			}
		})
	}
	wg.Wait()
	return samples, overlaps, errors.Join(errs...)
}

func pollOnce(ctx context.Context, holder, waiter *lock.Client, name string) (time.Duration, bool, error) {
	h, err := holder.TryObtain(ctx, name, 5*time.Second)
	if err != nil {
		return 0, false, err
	}
	var released atomic.Bool
	type result struct {
		at      time.Time
		overlap bool
		err     error
	}
	got := make(chan result, 1)
	go func() {
		for {
			l, err := waiter.TryObtain(ctx, name, 5*time.Second)
			if err == nil {
				r := result{at: time.Now(), overlap: !released.Load()}
				got <- result{at: r.at, overlap: r.overlap, err: l.Release(ctx)}
				return
			}
			if !errors.Is(err, lock.ErrNotObtained) {
				got <- result{err: err}
				return
			}
			if err := sleepUntil(ctx, time.Now().Add(pollEvery)); err != nil {
				got <- result{err: err}
				return
			}
		}
	}()
	// Release at a random moment of the waiter's polling cycle, as a job of unknown length would end.
	if err := sleepUntil(ctx, time.Now().Add(rand.N(pollEvery))); err != nil {
		<-got
		return 0, false, err
	}
	released.Store(true)
	releasedAt := time.Now()
	if err := h.Release(ctx); err != nil {
		<-got
		return 0, false, err
	}
	r := <-got
	return r.at.Sub(releasedAt), r.overlap, r.err
}
