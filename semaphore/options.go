package semaphore

import (
	"time"

	"github.com/keyward/keyward/internal/lockopt"
)

// An Option changes how a [Semaphore] works. Options are given to [New] and hold for every permit it hands out.
type Option func(*config)

type config struct {
	lock    []lockopt.Option
	fencing bool
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

// WithAutoRefresh keeps every permit alive until it is released: it is refreshed at a third of its ttl, a failed
// refresh is retried until the validity deadline, and if the permit cannot be kept, [Permit.Lost] is closed.
// Default: off, except in [Semaphore.Do].
func WithAutoRefresh() Option { return lockOption(lockopt.AutoRefresh()) }

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

func lockOption(o lockopt.Option) Option {
	return func(c *config) { c.lock = append(c.lock, o) }
}

// MaxTTL is the longest ttl a permit may be acquired or refreshed with (24 h); a longer one is an ErrInvalid error. A ttl is how long
// a holder that died keeps the others out; a holder that needs it longer keeps it with refreshes
// ([WithAutoRefresh]).
const MaxTTL = lockopt.MaxTTL
