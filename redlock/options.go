package redlock

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/lockopt"
	"github.com/keyward/keyward/internal/observe"
)

// An Option configures a Client: it is given to [New] and holds for every lock the Client takes.
type Option func(*config)

// An ObtainOption changes one acquisition: it is given to [Client.TryObtain], [Client.Obtain], [Client.Do] or
// [Client.Locker].
type ObtainOption func(*obtainConfig)

// The default node timeout is a hundredth of the ttl, within these bounds.
const (
	minNodeTimeout = 5 * time.Millisecond
	maxNodeTimeout = 50 * time.Millisecond
)

// config is a Client's configuration: the settings redlock shares with lock, and its own.
type config struct {
	lockopt.Settings
	nodeTimeout time.Duration // 0: derived from the ttl
	observer    keyward.Observer
	err         error // the first invalid option
}

func defaults() config { return config{Settings: lockopt.Defaults()} }

func (s config) with(opts []Option) (config, error) {
	for _, o := range opts {
		if o != nil {
			o(&s)
		}
	}
	return s, s.err
}

// timeout returns how long each node may take to answer one operation on a lock with this ttl.
func (s config) timeout(ttl time.Duration) time.Duration {
	if s.nodeTimeout > 0 {
		return s.nodeTimeout
	}
	return min(max(ttl/100, minNodeTimeout), maxNodeTimeout)
}

// obtainConfig is what an ObtainOption changes.
type obtainConfig struct {
	autoRefresh bool
}

func obtainWith(opts []ObtainOption) obtainConfig {
	var o obtainConfig
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}

// shared turns one of the settings redlock shares with lock into an Option.
func shared(o lockopt.Option) Option {
	return func(s *config) {
		var err error
		s.Settings, err = s.Settings.With(o)
		if s.err == nil {
			s.err = err
		}
	}
}

// WithPrefix puts prefix in front of every lock key, e.g. "locks:". Default: no prefix. The lock key on each node
// is then prefix+key, the name other tools (redsync, redis-cli) see.
func WithPrefix(prefix string) Option { return shared(lockopt.Prefix(prefix)) }

// WithMetadata sets the text stored after the random token in the lock's value, for operators to see who holds
// a lock. Default: "host=<hostname> pid=<pid>". An empty string stores the bare token.
func WithMetadata(metadata string) Option { return shared(lockopt.Metadata(metadata)) }

// WithDrift sets the margin taken off every ttl for clock drift between the client and the nodes: factor × ttl +
// fixed. Default: 0.01 × ttl + 2 ms. A lock is trusted until (time before the acquire was sent to the nodes) +
// ttl − drift. A factor outside [0, 1) or a negative fixed part is an ErrInvalid error.
func WithDrift(factor float64, fixed time.Duration) Option {
	return shared(lockopt.Drift(factor, fixed))
}

// WithAutoRefresh keeps the lock alive until it is released: it is refreshed on a majority at a third of its
// ttl, a failed refresh is retried until the validity deadline (each failure is a [keyward.RefreshFailed] event),
// and if the lock cannot be kept, [Lock.Lost] is closed. Default: off, except in [Client.Do].
func WithAutoRefresh() ObtainOption { return func(o *obtainConfig) { o.autoRefresh = true } }

// WithClaimWindow sets how long a lock released while other processes wait stays reserved for the first of them
// (or, within a cohort, for a waiter of the holder's own Client) before anyone may take it: the longest a
// process that died while first in line can hold the others up. It must be at least 1 ms and at most MaxTTL.
// Default: 20 ms.
func WithClaimWindow(d time.Duration) Option { return shared(lockopt.ClaimWindow(d)) }

// WithCohort sets how many times in a row a holder whose Client has waiters of its own may reserve the lock for
// them while other processes wait; then the lock goes to the next process in line. 0 gives every hand-off to the
// next process. Default: 4.
func WithCohort(n int) Option { return shared(lockopt.Cohort(n)) }

// WithNodeTimeout sets how long each node may take to answer one operation (an acquire, refresh, release or
// TTL) before it counts as not answering. Default: a hundredth of the lock's ttl, at least 5 ms and at most
// 50 ms — enough for a node on the same network, small next to the ttl, so that a dead or stalled node costs an
// attempt little of its validity. Raise it for nodes that are further away than a few milliseconds. A timeout
// ≤ 0 is an ErrInvalid error.
func WithNodeTimeout(d time.Duration) Option {
	return func(s *config) {
		if d <= 0 {
			if s.err == nil {
				s.err = fmt.Errorf("%w: node timeout %v must be positive", keyward.ErrInvalid, d)
			}
			return
		}
		s.nodeTimeout = d
	}
}

// WithObserver has the Client tell o what happens to its locks, with Source "redlock" and Key the lock key on the
// nodes (with the prefix): [keyward.Obtained], [keyward.Released], [keyward.RefreshFailed], [keyward.Lost],
// [keyward.WaitStarted] and [keyward.WaitEnded] (an Obtain that found the lock taken), [keyward.CleanedUp] (a
// failed attempt's release on one node, Err a [*keyward.NodeError] when it failed), and [keyward.Error]
// (background work that failed: leaving a node's queue, a subscription refused). Several observers (and
// [WithLogger]) add up; a nil o adds nothing.
func WithObserver(o keyward.Observer) Option {
	return func(s *config) { s.observer = observe.Join(s.observer, o) }
}

// WithLogger logs the Client's events to l (see [keyward.LogObserver]): failures at Warn level, the rest at
// Debug. It adds to [WithObserver]; a nil l adds nothing.
func WithLogger(l *slog.Logger) Option {
	return func(s *config) { s.observer = observe.Join(s.observer, keyward.LogObserver(l)) }
}

// MaxTTL is the longest ttl a lock may be obtained or refreshed with (24 h); a longer one is an ErrInvalid error.
// A ttl is how long a holder that died keeps the others out; a holder that needs it longer keeps it with
// refreshes ([WithAutoRefresh]).
const MaxTTL = keyward.MaxTTL
