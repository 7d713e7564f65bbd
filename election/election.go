package election

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/locker"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/token"
)

var (
	// ErrNoLeader means nobody leads the election right now: Leader's answer between two terms.
	ErrNoLeader = errors.New("election: no leader")

	// ErrResigned is the cause of a leadership's context once it was resigned (Resign, or fn returned in Run).
	ErrResigned = errors.New("election: resigned")

	// ErrLost is keyward.ErrLost: the cause of a leadership's context when the leadership was lost (its lease
	// ran out, its lock was found taken, a later term was elected). It also matches ErrNotHeld.
	ErrLost = keyward.ErrLost
	// ErrLeaseExpired: a loss because the holder's validity deadline passed before a refresh succeeded; matches
	// ErrLost.
	ErrLeaseExpired = keyward.ErrLeaseExpired
	// ErrGone: a loss because Redis was found no longer holding it for this holder (deleted, expired on the
	// server, taken by another); matches ErrLost.
	ErrGone = keyward.ErrGone

	// ErrNotHeld is keyward.ErrNotHeld.
	ErrNotHeld = keyward.ErrNotHeld

	// ErrInvalid is keyward.ErrInvalid: an argument or option is not valid.
	ErrInvalid = keyward.ErrInvalid

	// ErrWrongType is keyward.ErrWrongType: the lock or the record key holds a value some other program wrote.
	ErrWrongType = keyward.ErrWrongType

	// ErrReadOnly is keyward.ErrReadOnly: the server is a read-only replica.
	ErrReadOnly = keyward.ErrReadOnly

	// ErrNoPermission is keyward.ErrNoPermission: the ACL user may not run the election's commands or touch its
	// keys (the lock's, and the record "{<prefix><name>}:leader" with its channel).
	ErrNoPermission = keyward.ErrNoPermission

	// ErrOutOfMemory is keyward.ErrOutOfMemory: the server refused a write because it reached maxmemory.
	ErrOutOfMemory = keyward.ErrOutOfMemory
)

// DefaultTTL is the lease of a leader unless WithTTL says otherwise: as Kubernetes client-go's LeaseDuration.
// A leader that dies without resigning is replaced within it.
const DefaultTTL = 15 * time.Second

// An Election is one named election: the candidates of every process that use the same name (and the same
// Redis) compete to lead it. It is safe for concurrent use and holds no connection or goroutine of its own:
// those belong to the Leaderships, Run and Observe calls that use it.
type Election struct {
	locker    keyward.Locker
	name      string
	identity  string
	ttl       time.Duration
	rdb       redis.UniversalClient // nil: no record, so no Leader, Observe or OnNewLeader
	record    record
	callbacks Callbacks
	observer  keyward.Observer // nil: nobody listens
}

// A Leader is who leads an election, as its record says.
type Leader struct {
	// Identity is the leader's identity (see WithIdentity); "" when nobody leads.
	Identity string
	// Term is the leader's term number: the fencing token of its lock, larger than that of every earlier term.
	// When nobody leads, it is the term that ended (0 when unknown).
	Term int64
	// TTL is how long the leader's lease had left when this was read; it is renewed while the leader lives.
	// 0 when nobody leads.
	TTL time.Duration
}

// New returns the election name, whose candidates lead by holding the lock name through locker: the Locker of
// a lock.Client (one Redis) or of a redlock.Client (a quorum). It returns an ErrInvalid error for a nil locker,
// an empty name or an invalid option.
//
// Give WithRedis so that the leader writes who it is where others can read it (Leader, Observe, OnNewLeader).
// The lock's own options (prefix, drift, metadata) are the Locker's; the record "{<prefix><name>}:leader" goes
// under the Locker's prefix, so that elections of one name under different prefixes stay apart (a Locker other
// than lock's or redlock's cannot tell its prefix: its record is "{<name>}:leader").
func New(locker keyward.Locker, name string, opts ...Option) (*Election, error) {
	if locker == nil {
		return nil, fmt.Errorf("%w: nil locker", ErrInvalid)
	}
	if name == "" {
		return nil, fmt.Errorf("%w: empty election name", ErrInvalid)
	}
	s := settings{identity: token.DefaultMetadata(), ttl: DefaultTTL}
	for _, o := range opts {
		if o != nil {
			o(&s)
		}
	}
	if s.err != nil {
		return nil, s.err
	}
	if s.rdb == nil && s.callbacks.OnNewLeader != nil {
		return nil, fmt.Errorf("%w: OnNewLeader needs WithRedis", ErrInvalid)
	}
	return &Election{
		locker:    locker,
		name:      name,
		identity:  s.identity,
		ttl:       s.ttl,
		rdb:       s.rdb,
		record:    newRecord(keyPrefix(locker) + name),
		callbacks: s.callbacks,
		observer:  s.observer,
	}, nil
}

// keyPrefix returns the prefix the locker puts in front of its lock keys, when it tells it (the Lockers of
// lock.Client and redlock.Client do), so that the record goes under the same prefix: elections of the same name
// under different prefixes on one Redis are different elections, with a record each.
func keyPrefix(l keyward.Locker) string {
	if p, ok := l.(locker.Prefixed); ok {
		return p.KeyPrefix()
	}
	return ""
}

// Name returns the election's name: the key of the lock its leader holds (before the Locker's prefix).
func (e *Election) Name() string { return e.name }

// Identity returns the identity this Election's candidates campaign with.
func (e *Election) Identity() string { return e.identity }

// Leader returns who leads the election now, with the term and how long its lease has left. It returns an error
// matching ErrNoLeader between terms, an ErrInvalid error when the Election has no Redis (WithRedis), and, when
// ctx ends first, an error matching ctx's error and its cause.
//
// A leader is reported from the moment its Campaign has written its record (a round trip after it took the
// lock) until it resigns or its lease runs out.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	if ctx == nil {
		return Leader{}, errs.NilContext("election", "leader", e.name)
	}
	if e.rdb == nil {
		return Leader{}, e.errNoRedis("Leader")
	}
	if ctx.Err() != nil {
		return Leader{}, errs.Context(ctx, "election", "leader", e.name)
	}
	l, ok, err := e.record.read(ctx, e.rdb)
	if err != nil {
		if ctx.Err() != nil {
			return Leader{}, e.ctxErr(ctx, "leader", err)
		}
		return Leader{}, e.wrap(err)
	}
	if !ok {
		return Leader{}, e.wrap(ErrNoLeader)
	}
	return l, nil
}

// TermFrom returns the term number of the leadership that ctx belongs to: the context handed to Run's fn, a
// Leadership's Context, or a context derived from them. It returns 0 for any other context.
//
// Pass it to storage that refuses terms smaller than the largest it has seen: a leader that was paused past its
// lease and wakes after another was elected can then not overwrite the newer leader's work.
func TermFrom(ctx context.Context) int64 {
	if ctx == nil {
		return 0
	}
	t, _ := ctx.Value(termKey{}).(int64)
	return t
}

type termKey struct{}

func (e *Election) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("election %q: %w", e.name, err)
}

func (e *Election) errNoRedis(what string) error {
	return e.wrap(fmt.Errorf("%w: %s needs the election's Redis (WithRedis)", ErrInvalid, what))
}

// ctxErr returns the error of op, stopped because ctx ended: it matches ctx's error and cause. last is the error
// of the last attempt: when it is the Locker's own error for the ctx that ended, in keyward's shared shape, it is
// passed on with the election's name (it may say more, such as the quorum the last attempt failed to get);
// otherwise the error is errs.Context's, with last unless it is ctx's error itself.
func (e *Election) ctxErr(ctx context.Context, op string, last error) error {
	switch {
	case last != nil && errs.IsContext(last):
		return e.wrap(fmt.Errorf("%s: %w", op, last))
	case last == nil || last == ctx.Err() || last == context.Cause(ctx):
		return errs.Context(ctx, "election", op, e.name)
	}
	return fmt.Errorf("%w (the last attempt failed: %w)", errs.Context(ctx, "election", op, e.name), last)
}

// emit tells the observer e, from this election.
func (e *Election) emit(ctx context.Context, ev keyward.Event) {
	if e.observer == nil {
		return
	}
	ev.Source, ev.Key = "election", e.name
	observe.Emit(ctx, e.observer, ev)
}

// emitError tells the observer of err, an error handled in the background (of the term, when term is not 0).
func (e *Election) emitError(term int64, err error) {
	e.emit(context.Background(), keyward.Event{Kind: keyward.Error, Fence: term, Err: err})
}
