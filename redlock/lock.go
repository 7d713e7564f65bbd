package redlock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/lease"
	"github.com/keyward/keyward/internal/script"
)

// A Lock is a lock held on a majority of the nodes. Its methods are safe for concurrent use. A Lock must not be
// copied. It stays usable after its Client is closed, until it is released (see [Client.Close]).
type Lock struct {
	c     *Client
	key   string
	names keys.Names
	value string
	fence int64
	ttl   time.Duration
	since time.Time // when it was obtained, for the Held of events
	lease *lease.Lease
	// arrived has, for each node that had not answered the acquire when the lock was granted, a channel that is
	// closed when it did: a release to that node waits for it, so that it cannot overtake the acquire.
	arrived []chan struct{}
	// done is closed once the release (by Release, or at the end of Do) has returned: the Client's next waiter
	// for the key, which waits for this holder rather than contend with it, goes on then.
	done     chan struct{}
	doneOnce sync.Once
}

func (c *Client) newLock(a *attempt, value string, start time.Time, fence int64, arrived []chan struct{}) *Lock {
	l := &Lock{c: c, key: a.key, names: a.names, value: value, fence: fence, ttl: a.ttl, since: time.Now(),
		arrived: arrived, done: make(chan struct{})}
	cfg := lease.Config{
		Start:       start,
		TTL:         a.ttl,
		Drift:       c.opts.Drift,
		AutoRefresh: a.autoRefresh,
		Ops:         lease.Ops{Refresh: l.refresh, Release: l.release},
	}
	if c.observer != nil {
		cfg.OnRefreshFailed = func(err error) {
			c.emit(context.Background(), keyward.Event{Kind: keyward.RefreshFailed, Key: l.names.Lock, Fence: l.fence,
				Err: l.wrap(err)})
		}
		cfg.OnLost = func(cause error) {
			c.emit(context.Background(), keyward.Event{Kind: keyward.Lost, Key: l.names.Lock, Fence: l.fence,
				Held: time.Since(l.since), Err: l.wrap(cause)})
		}
	}
	l.lease = lease.New(cfg)
	return l
}

// Key returns the key the lock was obtained for, without the client's prefix.
func (l *Lock) Key() string { return l.key }

// Value returns the value stored under the lock key on the nodes: a random token, unique to this lock, and the
// holder's metadata ([WithMetadata]). It is not the fencing token: that is [Lock.Fence].
func (l *Lock) Value() string { return l.value }

// Fence returns the lock's fencing token: larger than that of every earlier holder of the same key on the same
// nodes. Storage that remembers the largest fence it has seen and refuses smaller ones cannot be written by a
// holder that was paused past its ttl.
//
// The fence is agreed by the majority that granted the lock, and a majority of the nodes that hold the lock
// remember it before it is handed out; any later holder's majority shares a node with them and gets a larger
// fence there. That holds while no node loses its data (a restart without persistence) in less than the ttl —
// the same assumption the lock itself needs — and, across a node that does, while the clocks of the clients and
// nodes agree within the time that node was away. See docs/DESIGN.md.
func (l *Lock) Fence() int64 { return l.fence }

// Until returns the local time until which the lock is known to be held: (time before the acquire, or the last
// successful refresh, was sent to the nodes) + ttl − drift. After it, the lock must be presumed lost.
func (l *Lock) Until() time.Time { return l.lease.Until() }

// Lost returns a channel that is closed when the lock is lost: its validity deadline passed (without
// auto-refresh, at [Lock.Until]; with it, when refreshes failed until then), or a refresh or TTL found that it
// is no longer held on enough nodes for a majority. Release does not close it.
func (l *Lock) Lost() <-chan struct{} { return l.lease.Lost() }

// Err returns why the lock was lost (an error matching ErrLost), or nil while it is held or once released.
func (l *Lock) Err() error { return l.lease.Err() }

// TTL returns how long a majority of the nodes will still hold the lock: of the remaining ttls of the nodes
// that hold it, the largest that a majority reaches (the second largest of three). It waits for every node, up
// to the node timeout; when some do not answer, it is a lower bound. A lock held on too few nodes for a majority
// is lost: the error matches ErrLost. When too few nodes answer to tell, the error matches ErrQuorum.
func (l *Lock) TTL(ctx context.Context) (time.Duration, error) {
	if ctx == nil {
		return 0, errs.NilContext("redlock", "ttl", l.key)
	}
	if err := l.lease.Check(); err != nil {
		return 0, l.wrap(err)
	}
	c := l.c
	g := c.hold()
	defer g.Done()
	type pttl struct {
		ttl  time.Duration
		held bool
	}
	timeout := c.opts.timeout(l.ttl)
	f := fanOut(ctx, c, g, timeout, c.all, func(ctx context.Context, _ int, rdb redis.Scripter) (pttl, error) {
		ttl, held, err := script.PTTL(ctx, rdb, l.names, l.value)
		return pttl{ttl, held}, err
	})
	defer f.stop(nil)
	var ttls []time.Duration
	notHeld := 0
	causes := make([]error, len(c.nodes))
	for f.left > 0 && notHeld <= len(c.nodes)-c.quorum {
		a, err := f.next(ctx)
		if errors.Is(err, errExpired) {
			for _, i := range f.missing() {
				causes[i] = noAnswer(timeout, nil)
			}
			break
		}
		if err != nil {
			return 0, errs.Context(ctx, "redlock", "ttl", l.key)
		}
		switch {
		case a.err != nil:
			causes[a.node] = f.cause(a)
		case a.val.held:
			ttls = append(ttls, a.val.ttl)
		default:
			notHeld++
			causes[a.node] = errNotHeldOnNode
		}
	}
	switch {
	case len(ttls) >= c.quorum:
		slices.Sort(ttls)
		return ttls[len(ttls)-c.quorum], nil
	case notHeld > len(c.nodes)-c.quorum:
		l.lease.MarkLost(fmt.Errorf("%w: held on %d of %d nodes, fewer than a majority", keyward.ErrGone, len(ttls), len(c.nodes)))
		return 0, l.wrap(l.lease.Err())
	}
	return 0, c.quorumError("ttl", l.key, len(ttls), causes)
}

// Refresh sets the lock's ttl to ttl on every node that still holds it, which must be a majority, and moves the
// validity deadline to (time before sending) + ttl − drift. The ttl must exceed the drift margin (a ttl ≤ 0 is
// an ErrInvalid error). A lock held on too few nodes for a majority is lost: the error matches ErrLost. Any
// other error (ErrQuorum: too few answers) leaves the lock held until its current deadline.
//
// Nodes on which the lock expired are not taken again: the lock lives on the majority that still holds it.
func (l *Lock) Refresh(ctx context.Context, ttl time.Duration) error {
	if ctx == nil {
		return errs.NilContext("redlock", "refresh", l.key)
	}
	return l.wrap(l.lease.Refresh(ctx, ttl.Truncate(time.Millisecond)))
}

// Release gives the lock back on every node (token-checked: a node on which another holder has the key is left
// alone), and waiters are told at once. It returns when a majority has answered; the other nodes' releases
// finish in the background. A later Release makes no round trip and returns what the first one that reached a
// majority returned: nil after a clean release (a lock that was lost stays reported as lost).
//
// It returns an error matching ErrNotHeld when too few nodes still held the lock for a majority (it had
// expired, or been taken), and the loss error (matching ErrLost) when the lock was lost before. After any other
// error (ErrQuorum: too few answers) the outcome is unknown; Release may be called again, and then reports
// ErrNotHeld if the first call did reach a majority.
func (l *Lock) Release(ctx context.Context) error {
	if ctx == nil {
		return errs.NilContext("redlock", "release", l.key)
	}
	return l.wrap(l.lease.Release(ctx))
}

// refresh is the lease's refresh operation: PEXPIRE on every node that holds the lock, decided at a majority.
func (l *Lock) refresh(ctx context.Context, ttl time.Duration) (bool, error) {
	return l.quorumOp(ctx, "refresh", l.c.opts.timeout(ttl), func(ctx context.Context, _ int, rdb redis.Scripter) (bool, error) {
		return script.Refresh(ctx, rdb, l.names, l.value, ttl)
	})
}

// release is the lease's release operation. When waiters of the holder's own Client wait for the key and the
// Client has not used up its cohort, the nodes reserve the lock for the Client even while other processes wait
// (the Client's next waiter claims it with a try of its own); otherwise for the first process in each node's
// queue.
func (l *Lock) release(ctx context.Context) (bool, error) {
	c := l.c
	defer l.doneOnce.Do(func() { close(l.done) }) // the waiter that waits for this holder goes on
	timeout := c.opts.timeout(l.ttl)
	next := script.Next{Window: c.opts.ClaimWindow, Fence: l.fence, HolderTTL: l.ttl}
	c.mu.Lock()
	ln := c.lines[l.names.Lock]
	if ln != nil && ln.waiters.Len() > 0 {
		next.Reserve, next.Cohort = c.id, ln.cohort < c.opts.Cohort
	}
	c.mu.Unlock()
	var own atomic.Int32
	held, err := l.quorumOp(ctx, "release", timeout, func(ctx context.Context, i int, rdb redis.Scripter) (bool, error) {
		if ch := l.arrived[i]; ch != nil {
			// The acquire's answer comes within its own node timeout; the release gets a whole one after it.
			<-ch
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), timeout)
			defer cancel()
		}
		out, _, err := script.ReleaseNext(ctx, rdb, l.names, l.value, script.PublishPlain, next)
		if out == script.ReservedOwn {
			own.Add(1)
		}
		return out != script.NotHeld, err
	})
	handedOff := int(own.Load()) >= c.quorum
	if handedOff {
		c.handOffs.Add(1)
	}
	if ln != nil {
		c.mu.Lock()
		if handedOff {
			ln.cohort++
		} else {
			ln.cohort = 0
		}
		c.mu.Unlock()
	}
	e := keyward.Event{Kind: keyward.Released, Key: l.names.Lock, Fence: l.fence, Held: time.Since(l.since), Err: err}
	if err == nil && !held {
		e.Err = fmt.Errorf("redlock %q: %w: expired or taken by another holder before release", l.key, ErrNotHeld)
	}
	c.emit(ctx, e)
	return held, err
}

// quorumOp runs a token-checked operation on every node and reports whether a majority still held the lock:
// true when a majority said yes, false when so many said no that a majority cannot have held it, an error when
// too few answered to tell.
func (l *Lock) quorumOp(ctx context.Context, name string, timeout time.Duration,
	op func(ctx context.Context, i int, rdb redis.Scripter) (bool, error)) (bool, error) {
	c := l.c
	g := c.hold()
	defer g.Done()
	t := c.vote(ctx, g, timeout, c.all, c.quorum, op)
	switch {
	case t.yes >= c.quorum:
		return true, nil
	case t.no > len(c.nodes)-c.quorum:
		return false, nil
	case t.ended:
		return false, errs.Context(ctx, "redlock", name, l.key)
	}
	return false, c.quorumError(name, l.key, t.yes, t.causes)
}

// wrap names the lock in an error of the lease's; the errors that name it already (a context's, a quorum's) are
// returned as they are.
func (l *Lock) wrap(err error) error {
	if _, ok := err.(*quorumError); ok || err == nil || errs.IsContext(err) {
		return err
	}
	return fmt.Errorf("redlock %q: %w", l.key, err)
}
