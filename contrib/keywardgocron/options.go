package keywardgocron

import (
	"fmt"
	"time"

	"github.com/keyward/keyward"
)

// DefaultTTL is the ttl of a job's lock unless WithTTL says otherwise: as election.DefaultTTL. While the job runs,
// the Locker's auto-refresh keeps the lock; the ttl is how long a holder that died keeps the other instances from
// running the job.
const DefaultTTL = 15 * time.Second

// DefaultMinHold is the minimum hold unless WithMinHold says otherwise: an instance whose tick fires up to this
// much later than the tick of the instance that ran the job still finds the lock taken. It suits jobs that run
// every second or less often; see WithMinHold.
const DefaultMinHold = 500 * time.Millisecond

// An Option configures a Locker; options are given to [NewLocker].
type Option func(*config)

// config is a Locker's configuration.
type config struct {
	prefix  string
	ttl     time.Duration
	minHold time.Duration
	err     error // the first invalid option
}

func (c *config) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// WithPrefix puts prefix in front of the job name to make the lock key: the key is prefix + the name gocron passes
// (the job's name, WithName, or by default its function's name). The keyward Locker's own prefix (lock.WithPrefix,
// redlock.WithPrefix) comes in front of that. Default: no prefix.
func WithPrefix(prefix string) Option { return func(c *config) { c.prefix = prefix } }

// WithTTL sets the ttl a job's lock is obtained with. With an auto-refreshing keyward Locker (see [NewLocker]) it is
// how long an instance that died mid-run keeps the others from running the job, and a third of it is the interval
// of the refreshes. A ttl ≤ 0 or above keyward.MaxTTL is an ErrInvalid error; the keyward Locker also refuses, at
// the first Lock, a ttl that does not exceed its drift margin. Default: DefaultTTL.
func WithTTL(ttl time.Duration) Option {
	return func(c *config) {
		if ttl <= 0 || ttl > keyward.MaxTTL {
			c.fail(fmt.Errorf("%w: ttl %v is not within (0, %v]", keyward.ErrInvalid, ttl, keyward.MaxTTL))
			return
		}
		c.ttl = ttl
	}
}

// WithMinHold sets the minimum hold d, as ShedLock's lockAtLeastFor: a run that ends less than d after its lock
// was obtained does not give the lock back at once. Unlock sets the lock's ttl to the rest of d and a second (so
// that the key expires soon after even if this process dies) and releases it when d has passed. An instance whose
// tick fires late (clock skew, a busy machine) then finds the lock taken and skips the tick, instead of running it
// a second time after the first run already finished.
//
// Choose d above the skew between the instances' clocks and their timers' lateness, and well below the shortest
// interval of the jobs that use this Locker: the lock of one tick must be free before the next tick fires. Jobs
// with different intervals can use Lockers of their own (gocron.WithDistributedJobLocker). 0 releases at once.
// A negative d or one above keyward.MaxTTL is an ErrInvalid error. Default: DefaultMinHold.
func WithMinHold(d time.Duration) Option {
	return func(c *config) {
		if d < 0 || d > keyward.MaxTTL {
			c.fail(fmt.Errorf("%w: minimum hold %v is not within [0, %v]", keyward.ErrInvalid, d, keyward.MaxTTL))
			return
		}
		c.minHold = d
	}
}

// newConfig returns the default configuration changed by opts, or the error of the first invalid option.
func newConfig(opts []Option) (config, error) {
	c := config{ttl: DefaultTTL, minHold: DefaultMinHold}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return c, c.err
}
