package keywardgocron

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/election"
)

// ErrNotLeader is the error IsLeader returns, wrapped, when this instance does not lead: gocron then skips the run.
// It also matches keyward.ErrNotHeld (the leadership's lock is not held here). The error that wraps it says why,
// where it is known: a leadership that was lost (matching keyward.ErrLost), the Elector closed (keyward.ErrClosed),
// or the error that stopped the campaign.
var ErrNotLeader error = notLeaderError{}

// notLeaderError is ErrNotLeader: its own sentinel that also matches keyward.ErrNotHeld.
type notLeaderError struct{}

func (notLeaderError) Error() string        { return "keywardgocron: not the leader" }
func (notLeaderError) Is(target error) bool { return target == keyward.ErrNotHeld }

// An Elector is a gocron.Elector on a keyward election: give it to gocron.WithDistributedElector, and only the
// scheduler of the instance that leads the election runs jobs. Its methods are safe for concurrent use.
type Elector struct {
	e      *election.Election
	cancel context.CancelFunc
	done   chan struct{} // closed when the campaign has stopped

	term   atomic.Pointer[term] // the term this instance leads, or led last; nil before the first
	closed atomic.Bool
	err    error // why the campaign stopped on its own; set before done is closed

	mu      sync.Mutex
	changed chan struct{} // closed, and replaced, when a term starts or ends

	closeOnce sync.Once
}

// term is one term of this instance as the leader: the leadership's context, which ends with it.
type term struct{ ctx context.Context }

// NewElector starts campaigning in e, in the background, and returns the Elector that tells gocron whether this
// instance leads. The campaign is election.Election.Run's: a leadership that is lost (or resigned) is campaigned for
// again, errors that may pass (Redis unreachable for a while) are ridden out, and the Election's callbacks and
// observer hear of every term. It stops at Close, which resigns, or on an error that will not pass (a closed
// client, a permission refused), which IsLeader then reports.
//
// Campaigning costs a goroutine and, while another instance leads, a waiting Obtain (no polling); leading costs a
// renewal every ttl/3 (election.WithTTL). It returns an ErrInvalid error for a nil e.
func NewElector(e *election.Election) (*Elector, error) {
	if e == nil {
		return nil, fmt.Errorf("keywardgocron: %w: nil election", keyward.ErrInvalid)
	}
	ctx, cancel := context.WithCancel(context.Background())
	el := &Elector{e: e, cancel: cancel, done: make(chan struct{}), changed: make(chan struct{})}
	go el.campaign(ctx)
	return el, nil
}

// campaign runs the election until ctx ends (Close) or Run stops on an error that will not pass.
func (el *Elector) campaign(ctx context.Context) {
	defer close(el.done)
	err := el.e.Run(ctx, func(leaderCtx context.Context) error {
		t := &term{ctx: leaderCtx}
		el.term.Store(t)
		el.tell()
		<-leaderCtx.Done() // the term stays, ended: IsLeader reports why
		el.tell()
		return nil // Run resigns and campaigns again (or returns, when ctx ended)
	})
	if ctx.Err() == nil {
		el.err = err
	}
}

// tell wakes those waiting for a change of term.
func (el *Elector) tell() {
	el.mu.Lock()
	close(el.changed)
	el.changed = make(chan struct{})
	el.mu.Unlock()
}

// change returns a channel that is closed at the next change of term.
func (el *Elector) change() <-chan struct{} {
	el.mu.Lock()
	defer el.mu.Unlock()
	return el.changed
}

// IsLeader returns nil while this instance leads the election: it holds a leadership whose lease has not run out
// by its own clock (election.Leadership.Context's Err), checked at each call rather than remembered, so that an
// instance that lost the leadership, or was paused past its lease, runs no job from that moment on. Otherwise it
// returns an error matching ErrNotLeader (and keyward.ErrNotHeld) that says why: the loss (keyward.ErrLost), the
// Elector closed (keyward.ErrClosed), or the error that stopped the campaign. ctx is not used.
func (el *Elector) IsLeader(context.Context) error {
	if el == nil || el.e == nil {
		return fmt.Errorf("keywardgocron: %w: Elector not made by NewElector", keyward.ErrInvalid)
	}
	_, err := el.leading()
	return err
}

// leading returns the context of the term this instance leads, or why it does not lead.
func (el *Elector) leading() (context.Context, error) {
	if el.closed.Load() {
		return nil, fmt.Errorf("%w: %w", ErrNotLeader, keyward.ErrClosed)
	}
	t := el.term.Load()
	if t != nil && t.ctx.Err() == nil { // the leadership's own Err, which compares the clock with its lease
		return t.ctx, nil
	}
	select {
	case <-el.done:
		if el.err != nil {
			return nil, fmt.Errorf("%w: the campaign stopped: %w", ErrNotLeader, el.err)
		}
	default:
	}
	if t != nil { // the last term ended, and the campaign for the next is under way
		return nil, fmt.Errorf("%w: %w", ErrNotLeader, context.Cause(t.ctx))
	}
	return nil, ErrNotLeader
}

// Job returns fn as a gocron job function that runs fn only while this instance leads, for jobs that must stop
// when the leadership ends: fn's ctx carries the term number ([FenceFrom]) and is cancelled the moment the
// leadership is lost or resigned, with a cause matching ErrNotLeader and saying why. When this instance no longer
// leads as the run starts (it lost the leadership since gocron asked IsLeader), fn is not run and the job fails
// with IsLeader's error. A nil fn fails the job with an ErrInvalid error.
func (el *Elector) Job(fn func(ctx context.Context) error) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if fn == nil {
			return fmt.Errorf("keywardgocron: %w: nil job function", keyward.ErrInvalid)
		}
		if el == nil || el.e == nil {
			return fmt.Errorf("keywardgocron: %w: Elector not made by NewElector", keyward.ErrInvalid)
		}
		leaderCtx, err := el.leading()
		if err != nil {
			return err
		}
		ended := func() error { return fmt.Errorf("%w: %w", ErrNotLeader, context.Cause(leaderCtx)) }
		return runFenced(ctx, election.TermFrom(leaderCtx), leaderCtx.Done(), ended, fn)
	}
}

// Close stops campaigning: a leadership held is resigned (its job runs see their context cancelled first), so
// that another instance leads within a few round trips, and IsLeader returns an error matching keyward.ErrClosed
// from then on. It returns once the campaign's goroutine has, with the error that had stopped the campaign before,
// if one did. Further calls return nil.
func (el *Elector) Close() error {
	if el == nil || el.e == nil {
		return fmt.Errorf("keywardgocron: %w: Elector not made by NewElector", keyward.ErrInvalid)
	}
	var err error
	el.closeOnce.Do(func() {
		el.closed.Store(true)
		el.cancel()
		<-el.done
		if el.err != nil {
			err = fmt.Errorf("keywardgocron: the campaign had stopped: %w", el.err)
		}
	})
	return err
}
