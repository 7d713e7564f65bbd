package keyward_test

// A nil ctx is a bad argument like an empty key: every public method of every package that takes a ctx refuses it
// with an error matching ErrInvalid, in the shared shape, and neither panics, hangs nor does its work. The table
// has one row per method; a new method is one more row.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/keyspace"
	"github.com/keyward/keyward/lock"
	"github.com/keyward/keyward/ratelimit"
	"github.com/keyward/keyward/redlock"
	"github.com/keyward/keyward/semaphore"
)

// nilCtxCall is a public method called with a nil ctx.
type nilCtxCall struct {
	name string
	call func(ctx context.Context) error
}

// nilCtxCalls returns a row for every public method that takes a ctx: on clients, a semaphore, an election and a
// keyspace watcher built on clients (the first three are Redlock's nodes, the first is also lock's, the election's
// and the watcher's, the fourth the semaphore's), with observer o when it is not nil; and on a held lock of each
// package, a permit, a leadership and a watch, taken with a real ctx. Each held value is then given back with a
// real ctx, which must succeed: the nil-ctx calls left it as it was.
func nilCtxCalls(t *testing.T, clients []redis.UniversalClient, o keyward.Observer) []nilCtxCall {
	t.Helper()
	var (
		lockOpts    []lock.Option
		redlockOpts []redlock.Option
		semOpts     []semaphore.Option
		electOpts   = []election.Option{election.WithRedis(clients[0])}
		watchOpts   []keyspace.Option
		rateOpts    []ratelimit.Option
	)
	if o != nil {
		lockOpts = append(lockOpts, lock.WithObserver(o))
		redlockOpts = append(redlockOpts, redlock.WithObserver(o))
		semOpts = append(semOpts, semaphore.WithObserver(o))
		electOpts = append(electOpts, election.WithObserver(o))
		watchOpts = append(watchOpts, keyspace.WithObserver(o))
		rateOpts = append(rateOpts, ratelimit.WithObserver(o))
	}
	locks, err := lock.New(clients[0], lockOpts...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, locks.Close()) })
	quorum, err := redlock.New(clients[:3], redlockOpts...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, quorum.Close()) })
	sem, err := semaphore.New(clients[3], "pool", 2, semOpts...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, sem.Close()) })
	elect, err := election.New(locks.Locker(), "leader", electOpts...)
	require.NoError(t, err)
	watcher := keyspace.New(clients[0], watchOpts...)
	t.Cleanup(func() { assert.NoError(t, watcher.Close()) })

	ctx := context.Background()
	held, err := locks.TryObtain(ctx, "held", time.Minute)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, held.Release(ctx), "the lock is still held") })
	heldQuorum, err := quorum.TryObtain(ctx, "held", time.Minute)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, heldQuorum.Release(ctx), "the Redlock is still held") })
	permit, err := sem.TryAcquire(ctx, time.Minute)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, permit.Release(ctx), "the permit is still held") })
	lead, err := elect.Campaign(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, lead.Resign(ctx), "the leadership still leads") })
	w, err := watcher.Watch(ctx, "held")
	require.NoError(t, err)
	t.Cleanup(w.Close)
	lim, err := ratelimit.New(clients[3], "rate", ratelimit.Every(time.Hour, 2), rateOpts...)
	require.NoError(t, err)
	reserved, err := lim.Reserve(ctx, 1)
	require.NoError(t, err)
	t.Cleanup(func() {
		// The nil-ctx calls took nothing: one token of the burst of 2 is still there.
		res, err := lim.Allow(ctx)
		assert.NoError(t, err)
		assert.Equal(t, 1, res.Allowed, "the rate limiter gave out nothing to a nil ctx")
	})

	fn := func(context.Context) error { return errors.New("fn ran") }
	leader := func(ctx context.Context) error { _, err := elect.Leader(ctx); return err }
	observed := func(ctx context.Context) error { _, err := elect.Observe(ctx); return err }
	campaign := func(ctx context.Context) error { _, err := elect.Campaign(ctx); return err }
	return []nilCtxCall{
		{"lock.Client.TryObtain", func(ctx context.Context) error { return taken(locks.TryObtain(ctx, "k", time.Minute)) }},
		{"lock.Client.Obtain", func(ctx context.Context) error { return taken(locks.Obtain(ctx, "k", time.Minute)) }},
		{"lock.Client.Do", func(ctx context.Context) error { return locks.Do(ctx, "k", time.Minute, fn) }},
		{"lock.Client.Locker.TryObtain", func(ctx context.Context) error { return taken(locks.Locker().TryObtain(ctx, "k", time.Minute)) }},
		{"lock.Client.Locker.Obtain", func(ctx context.Context) error { return taken(locks.Locker().Obtain(ctx, "k", time.Minute)) }},
		{"lock.Client.Locker.Do", func(ctx context.Context) error { return locks.Locker().Do(ctx, "k", time.Minute, fn) }},
		{"lock.Lock.TTL", func(ctx context.Context) error { _, err := held.TTL(ctx); return err }},
		{"lock.Lock.Refresh", func(ctx context.Context) error { return held.Refresh(ctx, time.Minute) }},
		{"lock.Lock.Guard", func(ctx context.Context) error {
			return held.Guard(ctx, func(p redis.Pipeliner) error { p.Set(ctx, "guarded", 1, 0); return nil })
		}},
		{"lock.Lock.Release", held.Release},
		{"redlock.Client.TryObtain", func(ctx context.Context) error { return taken(quorum.TryObtain(ctx, "k", time.Minute)) }},
		{"redlock.Client.Obtain", func(ctx context.Context) error { return taken(quorum.Obtain(ctx, "k", time.Minute)) }},
		{"redlock.Client.Do", func(ctx context.Context) error { return quorum.Do(ctx, "k", time.Minute, fn) }},
		{"redlock.Client.Locker.TryObtain", func(ctx context.Context) error { return taken(quorum.Locker().TryObtain(ctx, "k", time.Minute)) }},
		{"redlock.Client.Locker.Obtain", func(ctx context.Context) error { return taken(quorum.Locker().Obtain(ctx, "k", time.Minute)) }},
		{"redlock.Client.Locker.Do", func(ctx context.Context) error { return quorum.Locker().Do(ctx, "k", time.Minute, fn) }},
		{"redlock.Lock.TTL", func(ctx context.Context) error { _, err := heldQuorum.TTL(ctx); return err }},
		{"redlock.Lock.Refresh", func(ctx context.Context) error { return heldQuorum.Refresh(ctx, time.Minute) }},
		{"redlock.Lock.Release", heldQuorum.Release},
		{"semaphore.Semaphore.TryAcquire", func(ctx context.Context) error { return taken(sem.TryAcquire(ctx, time.Minute)) }},
		{"semaphore.Semaphore.Acquire", func(ctx context.Context) error { return taken(sem.Acquire(ctx, time.Minute)) }},
		{"semaphore.Semaphore.Do", func(ctx context.Context) error { return sem.Do(ctx, time.Minute, fn) }},
		{"semaphore.Permit.Refresh", func(ctx context.Context) error { return permit.Refresh(ctx, time.Minute) }},
		{"semaphore.Permit.Release", permit.Release},
		{"election.Election.Campaign", campaign},
		{"election.Election.Run", func(ctx context.Context) error { return elect.Run(ctx, fn) }},
		{"election.Election.Leader", leader},
		{"election.Election.Observe", observed},
		{"election.Leadership.Resign", lead.Resign},
		{"keyspace.Watcher.Watch", func(ctx context.Context) error {
			x, err := watcher.Watch(ctx, "k")
			if err == nil {
				x.Close()
				return errors.New("watching")
			}
			return err
		}},
		{"keyspace.Watch.Wait", func(ctx context.Context) error { _, err := w.Wait(ctx); return err }},
		{"ratelimit.Limiter.Allow", func(ctx context.Context) error { _, err := lim.Allow(ctx); return err }},
		{"ratelimit.Limiter.AllowN", func(ctx context.Context) error { _, err := lim.AllowN(ctx, 1); return err }},
		{"ratelimit.Limiter.Reserve", func(ctx context.Context) error { _, err := lim.Reserve(ctx, 1); return err }},
		{"ratelimit.Limiter.Wait", lim.Wait},
		{"ratelimit.Limiter.WaitN", func(ctx context.Context) error { return lim.WaitN(ctx, 1) }},
		{"ratelimit.Reservation.Cancel", func(ctx context.Context) error { _, err := reserved.Cancel(ctx); return err }},
	}
}

// callNil calls c with a nil ctx and returns its error, or a description of its panic, or an error after a
// deadline when it hangs.
func callNil(c nilCtxCall) (err error, panicked string) {
	type result struct {
		err      error
		panicked string
	}
	done := make(chan result, 1)
	go func() {
		var r result
		defer func() {
			if p := recover(); p != nil {
				r.panicked = fmt.Sprint(p)
			}
			done <- r
		}()
		var nilCtx context.Context
		r.err = c.call(nilCtx)
	}()
	select {
	case r := <-done:
		return r.err, r.panicked
	case <-time.After(10 * time.Second):
		return errors.New("hung: no answer in 10 s"), ""
	}
}

func TestANilContextIsAnInvalidArgumentEverywhere(t *testing.T) {
	tracer, rec := &callTracer{}, &observe.Recorder{}
	for _, tc := range []struct {
		name  string
		o     keyward.Observer
		heard func() []keyward.Event // the events heard since the last call
	}{
		{"no observer", nil, func() []keyward.Event { return nil }},
		{"call observer", tracer, func() func() []keyward.Event {
			taken := 0
			return func() []keyward.Event {
				tracer.mu.Lock()
				defer tracer.mu.Unlock()
				var es []keyward.Event
				for _, te := range tracer.events[taken:] {
					es = append(es, te.e)
				}
				taken = len(tracer.events)
				return es
			}
		}()},
		{"plain observer", rec, rec.Take},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clients := make([]redis.UniversalClient, 4)
			for i := range clients {
				_, clients[i] = redistest.Miniredis(t)
			}
			calls := nilCtxCalls(t, clients, tc.o)
			tc.heard()
			for _, c := range calls {
				err, panicked := callNil(c)
				if !assert.Empty(t, panicked, "%s(nil) panicked", c.name) {
					continue
				}
				pkg, _, _ := strings.Cut(c.name, ".")
				if assert.ErrorIs(t, err, keyward.ErrInvalid, "%s(nil)", c.name) {
					assert.Regexp(t, `^`+pkg+` "[a-z]+": [a-z ]+: keyward: invalid argument: nil ctx$`, err.Error(),
						"%s(nil)", c.name)
				}
			}
			// Nothing was taken, given back, waited for or lost: a refused call is only heard ending, with its error.
			for _, e := range tc.heard() {
				if assert.Equal(t, keyward.Ended, e.Kind, "%+v", e) {
					assert.ErrorIs(t, e.Err, keyward.ErrInvalid, "%+v", e)
				}
			}
			_, err := clients[0].Get(context.Background(), "guarded").Result()
			assert.ErrorIs(t, err, redis.Nil, "Guard(nil) wrote")
		})
	}
}

func TestTheErrorOfANilContextHasTheSharedShape(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	locks, err := lock.New(rdb)
	require.NoError(t, err)
	defer locks.Close()
	var nilCtx context.Context
	_, err = locks.TryObtain(nilCtx, "job", time.Second)
	require.ErrorIs(t, err, keyward.ErrInvalid)
	assert.EqualError(t, err, `lock "job": try obtain: keyward: invalid argument: nil ctx`)
}

func TestANilContextIsRefusedBeforeClose(t *testing.T) {
	clients := make([]redis.UniversalClient, 3)
	for i := range clients {
		_, clients[i] = redistest.Miniredis(t)
	}
	locks, err := lock.New(clients[0])
	require.NoError(t, err)
	quorum, err := redlock.New(clients)
	require.NoError(t, err)
	sem, err := semaphore.New(clients[0], "pool", 1)
	require.NoError(t, err)
	watcher := keyspace.New(clients[0])
	for _, c := range []interface{ Close() error }{locks, quorum, sem, watcher} {
		require.NoError(t, c.Close())
	}
	var nilCtx context.Context
	for name, err := range map[string]error{
		"lock":      taken(locks.TryObtain(nilCtx, "k", time.Minute)),
		"redlock":   taken(quorum.Obtain(nilCtx, "k", time.Minute)),
		"semaphore": taken(sem.Acquire(nilCtx, time.Minute)),
		"keyspace":  func() error { _, err := watcher.Watch(nilCtx, "k"); return err }(),
	} {
		assert.ErrorIs(t, err, keyward.ErrInvalid, name)
		assert.NotErrorIs(t, err, keyward.ErrClosed, name)
	}
}

func TestFromANilContextIsNothing(t *testing.T) {
	var nilCtx context.Context
	fence, ok := lock.FenceFrom(nilCtx)
	assert.Zero(t, fence)
	assert.False(t, ok)
	assert.Zero(t, election.TermFrom(nilCtx))
}
