package lock

import (
	"time"

	"github.com/keyward/keyward/internal/lockopt"
)

// An Option changes how locks are taken. Options given to [New] are the defaults of every lock of that Client;
// options given to a single call override them for that call.
type Option = lockopt.Option

// WithPrefix puts prefix in front of every lock key, e.g. "locks:". Default: no prefix. The lock key is then
// prefix+key, the name other tools (redsync, redis-cli) see.
func WithPrefix(prefix string) Option { return lockopt.Prefix(prefix) }

// WithMetadata sets the text stored after the random token in the lock's value, for operators to see who
// holds a lock. Default: "host=<hostname> pid=<pid>". An empty string stores the bare token.
func WithMetadata(metadata string) Option { return lockopt.Metadata(metadata) }

// WithDrift sets the margin taken off every ttl for clock drift between client and server: factor × ttl +
// fixed. Default: 0.01 × ttl + 2 ms. A lock is trusted until (time before the acquire was sent) + ttl − drift.
// A factor outside [0, 1) or a negative fixed part is an ErrInvalid error.
func WithDrift(factor float64, fixed time.Duration) Option { return lockopt.Drift(factor, fixed) }

// WithAutoRefresh keeps the lock alive until it is released: it is refreshed at a third of its ttl, a failed
// refresh is retried until the validity deadline, and if the lock cannot be kept, [Lock.Lost] is closed.
// Default: off, except in [Client.Do].
func WithAutoRefresh() Option { return lockopt.AutoRefresh() }

// WithClaimWindow sets how long a released lock stays reserved for the next waiting process before anyone may
// take it: the longest a process that died while first in line can hold the others up. It must be at least
// 1 ms and at most MaxTTL. Default: 20 ms. It takes effect when given to [New].
func WithClaimWindow(d time.Duration) Option { return lockopt.ClaimWindow(d) }

// WithCohort sets how many times in a row a holder may hand the lock to a waiter of its own Client (in the
// release's round trip, the fastest hand-off there is) while other processes wait; then the lock goes to the
// next process in line. 0 gives every hand-off to the next process. Default: 4. It takes effect when given to
// [New].
func WithCohort(n int) Option { return lockopt.Cohort(n) }

// MaxTTL is the longest ttl a lock may be obtained or refreshed with (24 h); a longer one is an ErrInvalid error. A ttl is how long
// a holder that died keeps the others out; a holder that needs it longer keeps it with refreshes
// ([WithAutoRefresh]).
const MaxTTL = lockopt.MaxTTL
