package election

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/lockopt"
	"github.com/keyward/keyward/internal/observe"
)

// An Option configures an Election.
type Option func(*settings)

type settings struct {
	identity  string
	ttl       time.Duration
	rdb       redis.UniversalClient
	callbacks Callbacks
	observer  keyward.Observer
	err       error // the first invalid option
}

func (s *settings) fail(err error) {
	if s.err == nil {
		s.err = err
	}
}

// WithIdentity sets how this candidate is named to the others when it leads (Leader.Identity): a replica's pod
// name, say. Default: "host=<hostname> pid=<pid>". An empty identity is an ErrInvalid error.
func WithIdentity(identity string) Option {
	return func(s *settings) {
		if identity == "" {
			s.fail(fmt.Errorf("%w: empty identity", ErrInvalid))
			return
		}
		s.identity = identity
	}
}

// WithTTL sets the leader's lease: the leader renews it every ttl/3, and a leader that dies without resigning is
// replaced within ttl (plus a few milliseconds). A short ttl replaces a dead leader sooner; a long one keeps a
// leader whose process or network stalls for a while. Default: DefaultTTL (15 s). A ttl below MinTTL or above
// MaxTTL is an ErrInvalid error; the Locker also refuses a ttl that does not exceed its drift margin (1 % + 2 ms
// by default), at the first Campaign.
func WithTTL(ttl time.Duration) Option {
	return func(s *settings) {
		if ttl < MinTTL || ttl > MaxTTL {
			s.fail(fmt.Errorf("%w: ttl %v is not within [%v, %v]", ErrInvalid, ttl, MinTTL, MaxTTL))
			return
		}
		s.ttl = ttl
	}
}

// MinTTL is the shortest lease WithTTL accepts: a newly elected leader must be able to write its record, and
// then renew its lease, well within it.
const MinTTL = 10 * time.Millisecond

// MaxTTL is the longest lease WithTTL accepts (24 h), the longest ttl a lock may have: the lease is how long a
// leader that died keeps the others from leading, and a live leader renews it every ttl/3 anyway.
const MaxTTL = keyward.MaxTTL

// WithRedis gives the Redis where the leader records who it is and announces changes, which Leader, Observe and
// OnNewLeader read. With a lock.Client, give the same client; with a Redlock quorum, any one Redis that every
// candidate and observer uses. Without it, candidates still elect a leader (Campaign, Run), but nobody can see
// who leads. A nil rdb (also a typed nil such as a nil *redis.Client) is an ErrInvalid error.
func WithRedis(rdb redis.UniversalClient) Option {
	return func(s *settings) {
		if err := lockopt.CheckClient(rdb); err != nil {
			s.fail(err)
			return
		}
		s.rdb = rdb
	}
}

// WithCallbacks sets functions that Run calls as leadership comes and goes, as Kubernetes client-go's
// LeaderCallbacks do. Unset functions are not called. The errors Run survives go to the observer ([WithObserver],
// [WithLogger]) as Error events.
func WithCallbacks(c Callbacks) Option {
	return func(s *settings) { s.callbacks = c }
}

// WithObserver makes the Election tell o what happens to this candidate's terms, with Source "election", Key the
// election's name and Fence the term: Obtained when a term starts (Wait: how long the campaign took), Released
// when it is resigned (Held: how long it lasted; Err: why the resignation failed), RefreshFailed when a renewal of
// its lease failed (it is tried again until the lease runs out), Lost when it is lost (Err: why, matching ErrLost),
// and Error for the errors Campaign and Run ride out and those of the background (a record
// that could not be read, a resignation that failed in Run, a connection that could not be closed). The Locker
// reports on the lock itself, to its own observer. Given more than once, every observer hears every event.
// Default: none.
func WithObserver(o keyward.Observer) Option {
	return func(s *settings) { s.observer = observe.Join(s.observer, o) }
}

// WithLogger logs the Election's events to l, as [keyward.LogObserver] does: losses and errors at Warn, the rest
// at Debug. It adds to an observer given with WithObserver. A nil l logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) { s.observer = observe.Join(s.observer, keyward.LogObserver(l)) }
}

// Callbacks are called by Run, never after Run has returned. They must not block for long. OnStartedLeading and
// OnStoppedLeading are called on Run's goroutine; OnNewLeader on a goroutine of its own, so it may run at the same
// time as the others.
type Callbacks struct {
	// OnStartedLeading is called when this candidate starts a term, before fn runs.
	OnStartedLeading func(leader Leader)
	// OnStoppedLeading is called when a term of this candidate ended, after fn returned and the leadership was
	// resigned, with why it ended: an error matching ErrLost when the leadership was lost, ctx's cause when
	// Run's ctx ended, ErrResigned when fn returned.
	OnStoppedLeading func(leader Leader, cause error)
	// OnNewLeader is called whenever a new term starts, whoever leads it (this candidate too), in the order of
	// the terms. It needs WithRedis.
	OnNewLeader func(leader Leader)
}
