package semaphore

import (
	"log/slog"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/lockopt"
	"github.com/keyward/keyward/internal/observe"
)

// An Option changes how a [Semaphore] works. Options are given to [New] and hold for every permit it hands out;
// what changes one acquisition is an [AcquireOption].
type Option func(*config)

type config struct {
	lock     []lockopt.Option
	fencing  bool
	observer keyward.Observer
}

// WithPrefix puts prefix in front of the semaphore's name to make its Redis key, e.g. "semaphores:". Default: no
// prefix.
func WithPrefix(prefix string) Option { return lockOption(lockopt.Prefix(prefix)) }

// WithMetadata sets the text stored after the random token in each permit's value, for operators to see who
// holds a permit. Default: "host=<hostname> pid=<pid>". An empty string stores the bare token.
func WithMetadata(metadata string) Option { return lockOption(lockopt.Metadata(metadata)) }

// WithDrift sets the margin taken off every ttl for clock drift between client and server: factor × ttl +
// fixed. Default: 0.01 × ttl + 2 ms. A permit is trusted until (time before the acquire was sent) + ttl − drift.
// A factor outside [0, 1) or a negative fixed part is an ErrInvalid error.
func WithDrift(factor float64, fixed time.Duration) Option {
	return lockOption(lockopt.Drift(factor, fixed))
}

// WithFencing hands out a fencing token with every permit ([Permit.Fence]): larger than that of every earlier
// permit of the semaphore on the same server, even across a restart that lost the data. It costs the acquire a
// counter update. Default: off (Fence returns 0).
func WithFencing() Option { return func(c *config) { c.fencing = true } }

// WithClaimWindow sets how long a released place stays reserved for the next waiting process before anyone may
// take it: the longest a process that died while first in line can hold the others up. It must be at least 1 ms
// and at most MaxTTL. Default: 20 ms.
func WithClaimWindow(d time.Duration) Option { return lockOption(lockopt.ClaimWindow(d)) }

// WithCohort sets how many times in a row a holder may hand its permit to a waiter of its own Semaphore (in the
// release's round trip, the fastest hand-off there is) while other processes wait; then the place goes to the
// next process in line. 0 gives every released place to the next process. Default: 4.
func WithCohort(n int) Option { return lockOption(lockopt.Cohort(n)) }

// WithObserver makes the Semaphore tell o what happens to its permits, with Source "semaphore" and Key the
// semaphore's name: Obtained (with the wait), Released (with the time held), RefreshFailed and Lost (auto-refresh),
// WaitStarted and WaitEnded (an Acquire that found no room), CleanedUp (a permit nobody will use given back: an
// acquire whose answer was lost, a permit handed to a waiter that gave up) and Error (a background error, such as
// a failed leave of the Redis queue). Given more than once, every observer hears every event. Default: none.
func WithObserver(o keyward.Observer) Option {
	return func(c *config) { c.observer = observe.Join(c.observer, o) }
}

// WithLogger logs the Semaphore's events to l, as [keyward.LogObserver] does: losses, failed refreshes and
// background errors at Warn, the rest at Debug. It adds to an observer given with WithObserver. A nil l logs
// nothing.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.observer = observe.Join(c.observer, keyward.LogObserver(l)) }
}

func lockOption(o lockopt.Option) Option {
	return func(c *config) { c.lock = append(c.lock, o) }
}

// An AcquireOption changes one acquisition: a call of [Semaphore.TryAcquire], [Semaphore.Acquire] or
// [Semaphore.Do]. What holds for every permit is an [Option] of New.
type AcquireOption func(*acquireConfig)

type acquireConfig struct {
	autoRefresh bool
}

// WithAutoRefresh keeps the permit alive until it is released: it is refreshed at a third of its ttl, a failed
// refresh is retried until the validity deadline, and if the permit cannot be kept, [Permit.Lost] is closed.
// Default: off, except in [Semaphore.Do], which always refreshes.
func WithAutoRefresh() AcquireOption { return func(c *acquireConfig) { c.autoRefresh = true } }

func acquireSettings(opts []AcquireOption) acquireConfig {
	var c acquireConfig
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return c
}

// MaxTTL is the longest ttl a permit may be acquired or refreshed with (24 h); a longer one is an ErrInvalid
// error. A ttl is how long a holder that died keeps the others out; a holder that needs it longer keeps it with
// refreshes ([WithAutoRefresh]).
const MaxTTL = keyward.MaxTTL
