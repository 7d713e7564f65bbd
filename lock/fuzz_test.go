package lock_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// FuzzOptions feeds keys, prefixes, ttls and option values to New and TryObtain. Each call must either be
// refused with ErrInvalid before anything reaches the server, exactly when an input is out of range (an empty
// key, a ttl not above the drift margin, a drift factor outside [0, 1) or a negative fixed drift, a claim window
// under 1 ms, a negative cohort), or take the lock under prefix+key with the ttl rounded down to milliseconds,
// and release it (reporting the loss when the validity, ttl − drift, passed first).
func FuzzOptions(f *testing.F) {
	f.Add("report", "", int64(time.Second), 0.01, int64(2*time.Millisecond), int64(20*time.Millisecond), 4)
	f.Add("", "locks:", int64(time.Second), 0.01, int64(2*time.Millisecond), int64(20*time.Millisecond), 4)
	f.Add("k", "", int64(2*time.Millisecond), 0.01, int64(2*time.Millisecond), int64(20*time.Millisecond), 4)
	f.Add("k", "", int64(time.Second), 1.0, int64(0), int64(time.Millisecond), 0)
	f.Add("a}b{", "{x}", int64(1500*time.Microsecond), 0.0, int64(time.Millisecond), int64(time.Millisecond-1), -1)
	f.Add("é\x00 ", "p", int64(-time.Second), math.NaN(), int64(-1), int64(0), 1)

	m, rdb := redistest.Miniredis(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, key, prefix string, ttlNs int64, factor float64, fixedNs, windowNs int64, cohort int) {
		ttl, fixed, window := time.Duration(ttlNs), time.Duration(fixedNs), time.Duration(windowNs)
		m.FlushAll()
		badOption := factor < 0 || factor >= 1 || math.IsNaN(factor) || fixed < 0 || window < time.Millisecond || cohort < 0
		locks, err := lock.New(rdb, lock.WithPrefix(prefix), lock.WithDrift(factor, fixed),
			lock.WithClaimWindow(window), lock.WithCohort(cohort))
		if badOption {
			if !errors.Is(err, lock.ErrInvalid) {
				t.Fatalf("New with factor %v, fixed %v, window %v, cohort %d: want ErrInvalid, got %v",
					factor, fixed, window, cohort, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		defer locks.Close()

		drift := time.Duration(float64(ttl)*factor) + fixed
		invalid := key == "" || ttl <= 0 || ttl <= drift
		l, err := locks.TryObtain(ctx, key, ttl)
		if invalid {
			if !errors.Is(err, lock.ErrInvalid) {
				t.Fatalf("TryObtain(%q, %v) with drift %v: want ErrInvalid, got %v", key, ttl, drift, err)
			}
			if keys := m.Keys(); len(keys) > 0 {
				t.Fatalf("refused input reached the server: %q", keys)
			}
			return
		}
		if ttl.Truncate(time.Millisecond) <= 0 || ttl > 100*365*24*time.Hour {
			// Below a millisecond Redis refuses PX 0; beyond a century, out of what Redis accepts.
			if err == nil {
				_ = l.Release(ctx)
			}
			t.Skipf("ttl %v: outside what the server takes; got %v", ttl, err)
		}
		if err != nil {
			t.Fatalf("TryObtain(%q, %v) with drift %v: %v", key, ttl, drift, err)
		}
		got, gerr := m.Get(prefix + key)
		if gerr != nil || got != l.Value() || !strings.Contains(got, " pid=") {
			t.Fatalf("key %q holds %q (%v), want the token %q", prefix+key, got, gerr, l.Value())
		}
		if pttl := m.TTL(prefix + key); pttl != ttl.Truncate(time.Millisecond) {
			t.Fatalf("key ttl %v, want %v", pttl, ttl.Truncate(time.Millisecond))
		}
		if err := l.Release(ctx); err != nil && !(errors.Is(err, lock.ErrLost) && !time.Now().Before(l.Until())) {
			t.Fatalf("Release within the validity (until %v): %v", l.Until(), err) // a short validity may pass first
		}
		if m.Exists(prefix + key) {
			t.Fatalf("the key outlived its release")
		}
	})
}
