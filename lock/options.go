package lock

import (
	"fmt"
	"math"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/lease"
	"github.com/keyward/keyward/internal/token"
)

// An Option changes how locks are taken. Options given to [New] are the defaults of every lock of that Client;
// options given to a single call override them for that call.
type Option func(*options)

type options struct {
	prefix      string
	metadata    string
	drift       lease.Drift
	autoRefresh bool
	err         error // the first invalid option
}

func defaultOptions() options {
	return options{metadata: token.DefaultMetadata(), drift: lease.DefaultDrift}
}

func (o options) with(opts []Option) (options, error) {
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o, o.err
}

// WithPrefix puts prefix in front of every lock key, e.g. "locks:". Default: no prefix. The lock key is then
// prefix+key, the name other tools (redsync, redis-cli) see.
func WithPrefix(prefix string) Option {
	return func(o *options) { o.prefix = prefix }
}

// WithMetadata sets the text stored after the random token in the lock's value, for operators to see who
// holds a lock. Default: "host=<hostname> pid=<pid>". An empty string stores the bare token.
func WithMetadata(metadata string) Option {
	return func(o *options) { o.metadata = metadata }
}

// WithDrift sets the margin taken off every ttl for clock drift between client and server: factor × ttl +
// fixed. Default: 0.01 × ttl + 2 ms. A lock is trusted until (time before the acquire was sent) + ttl − drift.
// A negative or non-finite value is an ErrInvalid error.
func WithDrift(factor float64, fixed time.Duration) Option {
	return func(o *options) {
		if factor < 0 || factor >= 1 || math.IsNaN(factor) || fixed < 0 {
			o.err = fmt.Errorf("%w: drift factor %v must be in [0, 1) and fixed drift %v not negative",
				keyward.ErrInvalid, factor, fixed)
			return
		}
		o.drift = lease.Drift{Factor: factor, Fixed: fixed}
	}
}

// WithAutoRefresh keeps the lock alive until it is released: it is refreshed at a third of its ttl, a failed
// refresh is retried until the validity deadline, and if the lock cannot be kept, [Lock.Lost] is closed.
// Default: off, except in [Client.Do].
func WithAutoRefresh() Option {
	return func(o *options) { o.autoRefresh = true }
}
