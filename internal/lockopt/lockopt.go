// Package lockopt holds the settings that lock/, redlock/ and semaphore/ share, with their defaults and validation,
// and the checks of a call that come before anything is sent. Each public package exposes them through its own
// documented With… functions.
package lockopt

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/lease"
	"github.com/keyward/keyward/internal/nilness"
	"github.com/keyward/keyward/internal/script"
	"github.com/keyward/keyward/internal/token"
)

// Settings are the settings of one lock acquisition.
type Settings struct {
	// Prefix goes in front of every lock key.
	Prefix string
	// Metadata follows the random token in the lock's value.
	Metadata string
	// Drift is the margin taken off every ttl for clock drift.
	Drift lease.Drift
	// AutoRefresh keeps the lock alive until released.
	AutoRefresh bool
	// ClaimWindow is how long a released lock stays reserved for the next waiting process.
	ClaimWindow time.Duration
	// Cohort is how many times in a row a process may pass the lock to its own waiters while other processes
	// wait.
	Cohort int

	err error // the first invalid option
}

// An Option changes Settings.
type Option func(*Settings)

// Defaults returns the default settings: no prefix, "host=<hostname> pid=<pid>" metadata, 1 % + 2 ms drift,
// no auto-refresh, the scripts' default claim window (20 ms), cohorts of 4.
func Defaults() Settings {
	return Settings{
		Metadata:    token.DefaultMetadata(),
		Drift:       lease.DefaultDrift,
		ClaimWindow: script.DefaultClaimWindow,
		Cohort:      4,
	}
}

// With returns s changed by opts, or the error of the first invalid option.
func (s Settings) With(opts ...Option) (Settings, error) {
	for _, o := range opts {
		if o != nil {
			o(&s)
		}
	}
	return s, s.err
}

// Key returns the Redis key of the lock named key, or an ErrInvalid error for an empty name.
func (s Settings) Key(key string) (string, error) {
	if key == "" {
		return "", fmt.Errorf("%w: empty lock key", keyward.ErrInvalid)
	}
	return s.Prefix + key, nil
}

// TTL checks ttl against the drift margin and MaxTTL, and rounds it down to whole milliseconds, as Redis keeps
// them (rounding down keeps the server's expiry before the local deadline).
func (s Settings) TTL(ttl time.Duration) (time.Duration, error) {
	if err := s.Drift.CheckTTL(ttl); err != nil {
		return 0, err
	}
	return ttl.Truncate(time.Millisecond), nil
}

// Check checks a call (op, e.g. "obtain") of package pkg on key before anything is sent, in this order: that ctx
// is not nil (errs.NilContext, matching keyward.ErrInvalid), its ttl (TTL; the error names pkg and key), that the
// caller is not closed (closed may be nil: not checked here; the error matches keyward.ErrClosed), and that ctx
// has not ended (errs.Context). It returns the ttl TTL returns.
func (s Settings) Check(ctx context.Context, pkg, op, key string, ttl time.Duration, closed func() bool) (time.Duration, error) {
	if ctx == nil {
		return 0, errs.NilContext(pkg, op, key)
	}
	ttl, err := s.TTL(ttl)
	if err != nil {
		return 0, fmt.Errorf("%s %q: %w", pkg, key, err)
	}
	if closed != nil && closed() {
		return 0, errs.Closed(pkg, op, key)
	}
	if err := errs.Context(ctx, pkg, op, key); err != nil {
		return 0, err
	}
	return ttl, nil
}

// Prefix sets Settings.Prefix.
func Prefix(p string) Option { return func(s *Settings) { s.Prefix = p } }

// Metadata sets Settings.Metadata.
func Metadata(m string) Option { return func(s *Settings) { s.Metadata = m } }

// AutoRefresh turns Settings.AutoRefresh on.
func AutoRefresh() Option { return func(s *Settings) { s.AutoRefresh = true } }

// Drift sets Settings.Drift; a factor outside [0, 1) or a negative fixed part is an ErrInvalid error.
func Drift(factor float64, fixed time.Duration) Option {
	return func(s *Settings) {
		if factor < 0 || factor >= 1 || math.IsNaN(factor) || fixed < 0 {
			s.err = fmt.Errorf("%w: drift factor %v must be in [0, 1) and fixed drift %v not negative",
				keyward.ErrInvalid, factor, fixed)
			return
		}
		s.Drift = lease.Drift{Factor: factor, Fixed: fixed}
	}
}

// MaxTTL is the longest ttl a lock may have: lease.MaxTTL.
const MaxTTL = lease.MaxTTL

// ClaimWindow sets Settings.ClaimWindow; it must be at least a millisecond and at most MaxTTL.
func ClaimWindow(d time.Duration) Option {
	return func(s *Settings) {
		if d < time.Millisecond || d > MaxTTL {
			s.err = fmt.Errorf("%w: claim window %v is not within [1ms, %v]", keyward.ErrInvalid, d, MaxTTL)
			return
		}
		s.ClaimWindow = d
	}
}

// Cohort sets Settings.Cohort; it must not be negative.
func Cohort(n int) Option {
	return func(s *Settings) {
		if n < 0 {
			s.err = fmt.Errorf("%w: cohort %d is negative", keyward.ErrInvalid, n)
			return
		}
		s.Cohort = n
	}
}

// CheckClient returns an ErrInvalid error for a nil client, including an interface that holds a nil pointer
// (a (*redis.Client)(nil) passes a plain nil check, and would panic at the first command).
func CheckClient(rdb redis.UniversalClient) error { return nilness.CheckClient(rdb) }

// IsNil reports whether v is nil or an interface holding a nil pointer, map, slice, channel or function.
func IsNil(v any) bool { return nilness.Is(v) }

// callMetadata is the context key of CallMetadata.
type callMetadata struct{}

// CallMetadata returns ctx carrying metadata that the lock package stores after the random token of a lock taken
// with ctx, instead of the client's metadata. It is not part of the public API: the fault harness needs it, whose
// goroutines share one client (its in-process queue and hand-overs are under test) and must tell their locks
// apart by value, while metadata is a client option.
func CallMetadata(ctx context.Context, metadata string) context.Context {
	return context.WithValue(ctx, callMetadata{}, metadata)
}

// MetadataFor returns the metadata of a lock taken with ctx: the one CallMetadata put in ctx, else s.Metadata.
func (s Settings) MetadataFor(ctx context.Context) string {
	if m, ok := ctx.Value(callMetadata{}).(string); ok {
		return m
	}
	return s.Metadata
}
