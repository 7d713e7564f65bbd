package lock

import (
	"log/slog"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/lockopt"
	"github.com/keyward/keyward/internal/observe"
)

// An Option configures a Client; options are given to [New] and hold for every lock of that Client.
type Option func(*config)

// config is a Client's configuration.
type config struct {
	lockopt.Settings
	observer keyward.Observer
}

// setting returns the Option that applies o to the Client's lock settings.
func setting(o lockopt.Option) Option { return func(c *config) { o(&c.Settings) } }

// newConfig returns the default configuration changed by opts, or the error of the first invalid option.
func newConfig(opts []Option) (config, error) {
	c := config{Settings: lockopt.Defaults()}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	var err error
	c.Settings, err = c.Settings.With() // reports the first invalid option
	return c, err
}

// An ObtainOption changes how one lock is taken: it is given to [Client.TryObtain], [Client.Obtain],
// [Client.Do] or [Client.Locker].
type ObtainOption func(*obtainConfig)

// obtainConfig is the configuration of one acquisition.
type obtainConfig struct {
	autoRefresh bool
}

func newObtainConfig(opts []ObtainOption) obtainConfig {
	var c obtainConfig
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return c
}

// WithPrefix puts prefix in front of every lock key, e.g. "locks:". Default: no prefix. The lock key is then
// prefix+key, the name other tools (redsync, redis-cli) see.
func WithPrefix(prefix string) Option { return setting(lockopt.Prefix(prefix)) }

// WithMetadata sets the text stored after the random token in the lock's value, for operators to see who
// holds a lock. Default: "host=<hostname> pid=<pid>". An empty string stores the bare token.
func WithMetadata(metadata string) Option { return setting(lockopt.Metadata(metadata)) }

// WithDrift sets the margin taken off every ttl for clock drift between client and server: factor × ttl +
// fixed. Default: 0.01 × ttl + 2 ms. A lock is trusted until (time before the acquire was sent) + ttl − drift.
// A factor outside [0, 1) or a negative fixed part is an ErrInvalid error.
func WithDrift(factor float64, fixed time.Duration) Option {
	return setting(lockopt.Drift(factor, fixed))
}

// WithClaimWindow sets how long a released lock stays reserved for the next waiting process before anyone may
// take it: the longest a process that died while first in line can hold the others up. It must be at least
// 1 ms and at most MaxTTL. Default: 20 ms.
func WithClaimWindow(d time.Duration) Option { return setting(lockopt.ClaimWindow(d)) }

// WithCohort sets how many times in a row a holder may hand the lock to a waiter of its own Client (in the
// release's round trip, the fastest hand-off there is) while other processes wait; then the lock goes to the
// next process in line. 0 gives every hand-off to the next process. Default: 4.
func WithCohort(n int) Option { return setting(lockopt.Cohort(n)) }

// WithObserver makes the Client tell o what happens to its locks (see [keyward.Event]; Source is "lock", Key the
// lock key with the Client's prefix): Obtained, Released, RefreshFailed, Lost, WaitStarted, WaitEnded,
// CleanedUp and Error. Observers given with several WithObserver and [WithLogger] options all hear every event,
// in the order of the options. Default: none.
func WithObserver(o keyward.Observer) Option {
	if lockopt.IsNil(o) {
		return nil
	}
	return func(c *config) { c.observer = observe.Join(c.observer, o) }
}

// WithLogger makes the Client log what happens to its locks to l, as [keyward.LogObserver] does; it adds to
// the observers given with [WithObserver]. Default: no logging.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.observer = observe.Join(c.observer, keyward.LogObserver(l)) }
}

// WithAutoRefresh keeps the lock alive until it is released: it is refreshed at a third of its ttl, a failed
// refresh is retried until the validity deadline, and if the lock cannot be kept, [Lock.Lost] is closed.
// Default: off, except in [Client.Do].
func WithAutoRefresh() ObtainOption { return func(c *obtainConfig) { c.autoRefresh = true } }

// MaxTTL is the longest ttl a lock may be obtained or refreshed with (24 h); a longer one is an ErrInvalid error.
// A ttl is how long a holder that died keeps the others out; a holder that needs it longer keeps it with
// refreshes ([WithAutoRefresh]).
const MaxTTL = keyward.MaxTTL
