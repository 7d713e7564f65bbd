package lock_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// BenchmarkBoundedCalls is the cost of bounding calls by their ctx on a client that does not (go-redis's default
// options): an uncontended TryObtain + Release with a ctx that has a deadline, against a client with
// ContextTimeoutEnabled (called directly) and one with the defaults (each call on a goroutine of its own; see
// internal/bound), and with a ctx that never ends (called directly).
func BenchmarkBoundedCalls(b *testing.B) {
	srv := redistest.Start(b)
	for _, tc := range []struct {
		name         string
		honors, ends bool
	}{
		{"ContextTimeoutEnabled", true, true},
		{"defaults", false, true},
		{"defaults/ctx never ends", false, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			rdb := redistest.NewClient(b, &redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: tc.honors})
			locks, err := lock.New(rdb)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if tc.ends {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Hour)
				defer cancel()
			}
			for b.Loop() {
				l, err := locks.TryObtain(ctx, "k", time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
