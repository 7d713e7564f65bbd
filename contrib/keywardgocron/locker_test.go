package keywardgocron_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-co-op/gocron/v2"
	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/contrib/keywardgocron"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// The adapters are what gocron expects.
var (
	_ gocron.Locker  = (*keywardgocron.Locker)(nil)
	_ gocron.Elector = (*keywardgocron.Elector)(nil)
)

// nilLocker is a keyward.Locker whose methods have pointer receivers: a nil *nilLocker in the interface is a
// typed nil.
type nilLocker struct{}

func (*nilLocker) TryObtain(context.Context, string, time.Duration) (keyward.Lock, error) {
	return nil, nil
}
func (*nilLocker) Obtain(context.Context, string, time.Duration) (keyward.Lock, error) {
	return nil, nil
}
func (*nilLocker) Do(context.Context, string, time.Duration, func(context.Context) error) error {
	return nil
}

func TestBadInputIsAnErrInvalidError(t *testing.T) {
	t.Parallel()
	_, rdb := redistest.Miniredis(t)
	locks, err := lock.New(rdb)
	if err != nil {
		t.Fatal(err)
	}
	kl := locks.Locker(lock.WithAutoRefresh())
	ctx := t.Context()
	fn := func(context.Context) error { return nil }

	invalid := map[string]func() error{
		"nil locker": func() error { _, err := keywardgocron.NewLocker(nil); return err },
		"typed nil locker": func() error {
			var l *nilLocker
			_, err := keywardgocron.NewLocker(l)
			return err
		},
		"zero ttl": func() error { _, err := keywardgocron.NewLocker(kl, keywardgocron.WithTTL(0)); return err },
		"negative ttl": func() error {
			_, err := keywardgocron.NewLocker(kl, keywardgocron.WithTTL(-time.Second))
			return err
		},
		"ttl above MaxTTL": func() error {
			_, err := keywardgocron.NewLocker(kl, keywardgocron.WithTTL(keyward.MaxTTL+1))
			return err
		},
		"negative min hold": func() error {
			_, err := keywardgocron.NewLocker(kl, keywardgocron.WithMinHold(-1))
			return err
		},
		"min hold above max": func() error {
			_, err := keywardgocron.NewLocker(kl, keywardgocron.WithMinHold(keyward.MaxTTL+1))
			return err
		},
		"zero Locker Lock": func() error {
			var l keywardgocron.Locker
			_, err := l.Lock(ctx, "job")
			return err
		},
		"nil Locker Lock": func() error {
			var l *keywardgocron.Locker
			_, err := l.Lock(ctx, "job")
			return err
		},
		"nil Locker Close": func() error { var l *keywardgocron.Locker; return l.Close(ctx) },
		"nil context": func() error {
			l, err := keywardgocron.NewLocker(kl)
			if err != nil {
				return err
			}
			_, err = l.Lock(nil, "job") //nolint:staticcheck // a nil context is the bad input under test
			return err
		},
		"nil job function": func() error {
			l, err := keywardgocron.NewLocker(kl)
			if err != nil {
				return err
			}
			return l.Job(nil)(ctx)
		},
		"ttl within the drift margin": func() error { // refused by the keyward Locker, at Lock
			l, err := keywardgocron.NewLocker(kl, keywardgocron.WithTTL(time.Millisecond))
			if err != nil {
				return err
			}
			_, err = l.Lock(ctx, "job")
			return err
		},
		"nil election":       func() error { _, err := keywardgocron.NewElector(nil); return err },
		"nil Elector":        func() error { var e *keywardgocron.Elector; return e.IsLeader(ctx) },
		"zero Elector":       func() error { var e keywardgocron.Elector; return e.IsLeader(ctx) },
		"nil Elector Close":  func() error { var e *keywardgocron.Elector; return e.Close() },
		"nil Elector Job":    func() error { var e *keywardgocron.Elector; return e.Job(fn)(ctx) },
		"nil Elector job fn": func() error { var e *keywardgocron.Elector; return e.Job(nil)(ctx) },
		"empty key":          func() error { l, _ := keywardgocron.NewLocker(kl); _, err := l.Lock(ctx, ""); return err },
	}
	for name, call := range invalid {
		t.Run(name, func(t *testing.T) {
			err := call()
			if !errors.Is(err, keyward.ErrInvalid) {
				t.Fatalf("got %v, want an error matching ErrInvalid", err)
			}
		})
	}
	if _, err := keywardgocron.NewLocker(kl, nil); err != nil {
		t.Fatalf("a nil option is ignored, got %v", err)
	}
	if _, ok := keywardgocron.FenceFrom(nil); ok { //nolint:staticcheck // a nil context has no fence
		t.Fatal("FenceFrom(nil) reported a fence")
	}
}

// newLocker returns a Locker on its own go-redis client and lock.Client of srv (as an instance of its own would
// have), with auto-refresh, telling released of its Released events.
func newLocker(t *testing.T, srv *redistest.Server, name string, released *events,
	opts ...keywardgocron.Option) (*keywardgocron.Locker, *redis.Client) {
	t.Helper()
	rdb := client(t, srv, name)
	var lopts []lock.Option
	if released != nil {
		lopts = append(lopts, lock.WithObserver(released))
	}
	locks, err := lock.New(rdb, lopts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = locks.Close() })
	l, err := keywardgocron.NewLocker(locks.Locker(lock.WithAutoRefresh()), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l, rdb
}

func exists(t *testing.T, rdb *redis.Client, key string) bool {
	t.Helper()
	n, err := rdb.Exists(t.Context(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

func TestOneInstanceGetsTheLockTheOthersSkip(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, rdb := newLocker(t, srv, "a", nil, keywardgocron.WithMinHold(0), keywardgocron.WithPrefix("jobs:"))
	b, _ := newLocker(t, srv, "b", nil, keywardgocron.WithMinHold(0), keywardgocron.WithPrefix("jobs:"))
	ctx := t.Context()

	la, err := a.Lock(ctx, "report")
	if err != nil {
		t.Fatal(err)
	}
	if !exists(t, rdb, "jobs:report") {
		t.Fatal("the lock key is not prefix + job name")
	}
	if _, err := b.Lock(ctx, "report"); !errors.Is(err, keyward.ErrNotObtained) {
		t.Fatalf("second instance: got %v, want ErrNotObtained", err)
	}
	if _, err := a.Lock(ctx, "report"); !errors.Is(err, keyward.ErrNotObtained) {
		t.Fatalf("same instance, overlapping run: got %v, want ErrNotObtained", err)
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if exists(t, rdb, "jobs:report") {
		t.Fatal("without a minimum hold Unlock did not release at once")
	}
	lb, err := b.Lock(ctx, "report")
	if err != nil {
		t.Fatalf("after the release: %v", err)
	}
	if err := lb.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// A run shorter than the minimum hold keeps the lock until the hold is over: the key's ttl is the rest of the hold,
// other instances find it taken, and it is released (not left to expire) at the end.
func TestAShortRunHoldsTheLockForTheMinimumHold(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const minHold = 300 * time.Millisecond
	released := newEvents(keyward.Released)
	a, rdb := newLocker(t, srv, "a", released, keywardgocron.WithMinHold(minHold))
	b, _ := newLocker(t, srv, "b", nil, keywardgocron.WithMinHold(minHold))
	ctx := t.Context()

	la, err := a.Lock(ctx, "report")
	if err != nil {
		t.Fatal(err)
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	ttl, err := rdb.PTTL(ctx, "report").Result()
	if err != nil {
		t.Fatal(err)
	}
	if ttl <= 0 || ttl > minHold+time.Second {
		t.Fatalf("after Unlock the key's ttl is %v, want the rest of the %v hold and a second", ttl, minHold)
	}
	if _, err := b.Lock(ctx, "report"); !errors.Is(err, keyward.ErrNotObtained) {
		t.Fatalf("within the minimum hold: got %v, want ErrNotObtained", err)
	}
	ev := released.next(t)
	if ev.Err != nil || ev.Key != "report" {
		t.Fatalf("release: %+v", ev)
	}
	if ev.Held < minHold-10*time.Millisecond {
		t.Fatalf("released after %v, before the minimum hold %v", ev.Held, minHold)
	}
	lb, err := b.Lock(ctx, "report")
	if err != nil {
		t.Fatalf("after the minimum hold: %v", err)
	}
	if err := lb.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := la.Unlock(ctx); err != nil { // a second Unlock returns what the first did
		t.Fatal(err)
	}
}

// A run longer than its lock's ttl keeps the lock (the keyward Locker's auto-refresh), also through a connection
// the server closed, and gives it back at once when it is over, the minimum hold being past.
func TestALongRunKeepsItsLock(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const ttl = 450 * time.Millisecond
	refreshes := newAnswered()
	a, rdb := newLocker(t, srv, "a", nil, keywardgocron.WithTTL(ttl), keywardgocron.WithMinHold(ttl/3))
	rdb.AddHook(refreshes)
	admin := srv.Client(t)
	jobCtx, endJob := context.WithCancel(t.Context())
	defer endJob()

	la, err := a.Lock(jobCtx, "report")
	if err != nil {
		t.Fatal(err)
	}
	err = a.Job(func(ctx context.Context) error {
		refreshed := func(n int) error {
			for range n {
				select {
				case <-refreshes.ch:
				case <-ctx.Done():
					return context.Cause(ctx)
				case <-time.After(waitLimit):
					return errors.New("no refresh")
				}
			}
			return nil
		}
		refreshes.start()
		if err := refreshed(2); err != nil {
			return err
		}
		if n := killConnections(t, admin, "a"); n == 0 {
			return errors.New("no connection of the holder to kill")
		}
		return refreshed(4) // more than a ttl since the kill: the refreshes reconnected
	})(jobCtx)
	if err != nil {
		t.Fatalf("the run's context ended: %v", err)
	}
	endJob() // as gocron's shutdown does: Unlock gets a cancelled context
	if err := la.Unlock(jobCtx); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if exists(t, admin, "report") {
		t.Fatal("a run longer than the minimum hold was not released at once")
	}
}

// With a keyward Locker that does not refresh, a run longer than the ttl loses its lock: the wrapped job's context
// says so, and so does Unlock.
func TestWithoutAutoRefreshALongRunLosesItsLock(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	locks, err := lock.New(client(t, srv, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer locks.Close()
	a, err := keywardgocron.NewLocker(locks.Locker(), keywardgocron.WithTTL(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	ctx := t.Context()
	la, err := a.Lock(ctx, "report")
	if err != nil {
		t.Fatal(err)
	}
	err = a.Job(func(ctx context.Context) error {
		<-ctx.Done()
		return context.Cause(ctx)
	})(ctx)
	if !errors.Is(err, keyward.ErrLost) {
		t.Fatalf("the run's context ended with %v, want a cause matching ErrLost", err)
	}
	if err := la.Unlock(ctx); !errors.Is(err, keyward.ErrLost) {
		t.Fatalf("Unlock: %v, want ErrLost", err)
	}
}

func TestJobGetsTheFencingToken(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a, _ := newLocker(t, srv, "a", nil, keywardgocron.WithMinHold(0))
	var fences []int64
	job := a.Job(func(ctx context.Context) error {
		f, ok := keywardgocron.FenceFrom(ctx)
		if !ok {
			return errors.New("no fence")
		}
		fences = append(fences, f)
		return nil
	})
	for range 2 {
		ctx, cancel := context.WithCancel(t.Context()) // a job's context
		l, err := a.Lock(ctx, "report")
		if err != nil {
			t.Fatal(err)
		}
		if err := job(ctx); err != nil {
			t.Fatal(err)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if err := job(ctx); !errors.Is(err, keyward.ErrNotHeld) { // the run is over
			t.Fatalf("after Unlock: got %v, want ErrNotHeld", err)
		}
		cancel()
	}
	if len(fences) != 2 || fences[0] <= 0 || fences[1] <= fences[0] {
		t.Fatalf("fences %v, want two growing tokens", fences)
	}
	if err := job(t.Context()); !errors.Is(err, keyward.ErrNotHeld) {
		t.Fatalf("a context without a run: got %v, want ErrNotHeld", err)
	}
	if _, ok := keywardgocron.FenceFrom(t.Context()); ok {
		t.Fatal("FenceFrom found a fence in a plain context")
	}
}

// Close waits for the minimum holds under way and releases them; then Lock fails with ErrClosed and an Unlock
// releases at once.
func TestCloseEndsTheMinimumHolds(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := t.Context()

	t.Run("waits", func(t *testing.T) {
		a, _ := newLocker(t, srv, "a", nil, keywardgocron.WithMinHold(200*time.Millisecond))
		la, err := a.Lock(ctx, "waits")
		if err != nil {
			t.Fatal(err)
		}
		running, err := a.Lock(ctx, "running")
		if err != nil {
			t.Fatal(err)
		}
		if err := la.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := a.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if time.Since(start) < 100*time.Millisecond || exists(t, admin, "waits") {
			t.Fatal("Close did not wait for the minimum hold and release the lock")
		}
		if _, err := a.Lock(ctx, "other"); !errors.Is(err, keyward.ErrClosed) {
			t.Fatalf("Lock after Close: got %v, want ErrClosed", err)
		}
		if err := running.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if exists(t, admin, "running") {
			t.Fatal("an Unlock after Close did not release at once")
		}
	})
	t.Run("ends early", func(t *testing.T) {
		a, _ := newLocker(t, srv, "a", nil, keywardgocron.WithMinHold(time.Hour))
		la, err := a.Lock(ctx, "early")
		if err != nil {
			t.Fatal(err)
		}
		if err := la.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		if !exists(t, admin, "early") {
			t.Fatal("the minimum hold did not keep the lock")
		}
		ended, cancel := context.WithCancel(ctx)
		cancel()
		if err := a.Close(ended); !errors.Is(err, context.Canceled) {
			t.Fatalf("Close with an ended context: %v, want context.Canceled", err)
		}
		if exists(t, admin, "early") {
			t.Fatal("Close did not release the lock when its context ended")
		}
		if err := a.Close(ctx); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}
