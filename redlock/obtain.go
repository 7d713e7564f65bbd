package redlock

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward/internal/lease"
	"github.com/keyward/keyward/keyspace"
)

// watchWait bounds how long Obtain waits for its subscriptions to be confirmed before it tries again after a
// first failure; a node whose confirmation comes later (it is slow or down) wakes the waiter once more then.
const watchWait = 100 * time.Millisecond

// Obtain takes the lock key for ttl as TryObtain does, waiting as long as ctx allows while another holder has
// it. It returns ctx's error (matching its cause too) when ctx ends first, an error matching ErrInvalid and
// keyspace.ErrClosed when the Client is closed meanwhile, and any error that waiting cannot cure at once: an
// ErrQuorum error when no node reported another holder (too few nodes answered, or some refused).
//
// Waiting costs no polling. Goroutines of one Client that wait for the same key queue up in arrival order and
// only the first contends at the nodes. The first try costs one round trip and no subscription. After a failed
// try the waiter subscribes to the lock's release channel on every node through the Client's
// [keyspace.Watcher] of that node, waits until the servers confirmed the subscriptions, and tries again: that
// try closes the window in which a release could slip by unseen. It then waits for the first of: releases heard
// on enough nodes that the lock is free on a majority, any other event (a keyspace notification of an expiry, a
// reconnection), a timer at the smallest remaining ttl the nodes reported for the holder plus a little jitter
// (the holder may have crashed, or its release reached too few nodes), or ctx. When contenders split the nodes between them and
// no one got a majority, each backs off for a random time of the order of a try before trying again.
func (c *Client) Obtain(ctx context.Context, key string, ttl time.Duration, opts ...Option) (*Lock, error) {
	if err := c.begin(); err != nil {
		return nil, err
	}
	defer c.end()
	a, err := c.newAttempt(ctx, key, ttl, opts)
	if err != nil {
		return nil, err
	}
	ln, w := c.join(a.names.Lock)
	defer c.leave(ln, w)
	if err := c.await(ctx, w.turn, nil); err != nil {
		return nil, a.wrapWait(err)
	}

	// The uncontended path: one round trip, no subscription.
	l, res := a.try(ctx)
	if l != nil || !res.retry {
		return l, res.err
	}

	ws, err := c.watchSet(ctx, ln)
	if err != nil {
		return nil, a.wrapWait(err)
	}
	ears := ws.listen(c.quorum)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-c.closing:
			return nil, a.wrapWait(errClosed)
		default:
		}
		// Whatever was heard before the try is answered by the try itself.
		ears.heard()
		l, res = a.try(ctx)
		if l != nil || !res.retry {
			return l, res.err
		}
		// The try's own releases will be heard on the nodes it released: they are no reason to try again.
		ears.expect(res.published)
		ears.restart(res.published)
		timer.Stop()
		if res.wait >= 0 {
			// SET NX sees an expired key as absent at once, while the expiry event comes when Redis gets to
			// delete the key: the timer is what makes taking over from a crashed holder fast. The jitter keeps
			// waiters woken by the same expiry from trying at the very same moment.
			timer.Reset(res.wait + time.Millisecond + rand.N(time.Millisecond))
		}
		for woken := false; !woken; {
			select {
			case <-ws.wake:
				ears.heard()
				woken = ears.enough()
			case <-timer.C:
				woken = true
			case <-ctx.Done():
				return nil, a.wrapWait(ctxErr(ctx))
			case <-c.closing:
				return nil, a.wrapWait(errClosed)
			}
		}
		if res.split {
			// This try held the lock on some nodes but no majority: contenders may have split the nodes, and
			// each released its part, which is what woke them all. A random pause of the order of a try lets one
			// of them get ahead.
			timer.Stop()
			timer.Reset(rand.N(3*res.took + time.Millisecond))
			if err := c.await(ctx, nil, timer.C); err != nil {
				return nil, a.wrapWait(err)
			}
		}
	}
}

// Do obtains the lock key as Obtain does, with auto-refresh, and runs fn while holding it. fn's context is
// cancelled the moment the lock is lost, with a cause matching ErrLost (see context.Cause). The lock is released
// when fn returns, also when fn panics. Do returns fn's error joined with the release's, or the error of Obtain.
func (c *Client) Do(ctx context.Context, key string, ttl time.Duration, fn func(ctx context.Context) error, opts ...Option) error {
	l, err := c.Obtain(ctx, key, ttl, append(slices.Clip(opts), WithAutoRefresh())...)
	if err != nil {
		return err
	}
	return l.wrap(lease.Run(ctx, l.lease, fn))
}

// await waits for a or b (either may be nil), ctx or Close.
func (c *Client) await(ctx context.Context, a <-chan struct{}, b <-chan time.Time) error {
	select {
	case <-a:
	case <-b:
	case <-ctx.Done():
		return ctxErr(ctx)
	case <-c.closing:
		return errClosed
	}
	return nil
}

func (a *attempt) wrapWait(err error) error {
	return fmt.Errorf("redlock %q: %w", a.key, err)
}

// line is a Client's queue of goroutines in Obtain for one lock key, in arrival order: only the first contends
// at the nodes. Its fields are guarded by Client.mu.
type line struct {
	key     string
	waiters []*waiter
	watches *watches // the subscriptions the first waiter waits on; kept for the next one while the line lasts
}

// waiter is one goroutine in Obtain.
type waiter struct {
	turn chan struct{} // capacity 1: signalled when the waiter is first in line
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (c *Client) join(key string) (*line, *waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ln := c.lines[key]
	if ln == nil {
		ln = &line{key: key}
		c.lines[key] = ln
	}
	w := &waiter{turn: make(chan struct{}, 1)}
	ln.waiters = append(ln.waiters, w)
	if len(ln.waiters) == 1 {
		signal(w.turn)
	}
	return ln, w
}

// leave takes w out of the line, passing its turn on; the last one out ends the line's subscriptions.
func (c *Client) leave(ln *line, w *waiter) {
	c.mu.Lock()
	i := slices.Index(ln.waiters, w)
	ln.waiters = slices.Delete(ln.waiters, i, i+1)
	var done *watches
	switch {
	case len(ln.waiters) == 0:
		done, ln.watches = ln.watches, nil
		delete(c.lines, ln.key)
	case i == 0:
		signal(ln.waiters[0].turn)
	}
	c.mu.Unlock()
	if done != nil {
		done.stop()
	}
}

// watches are the subscriptions to one lock's release channel (and keyspace notifications) on every node. They
// count events by node, so that a waiter can tell its own releases (the clean-up of a failed try) from others',
// and tell when releases were heard on enough nodes for a try to have a chance.
type watches struct {
	wake     chan struct{} // capacity 1: something was heard
	stop     context.CancelFunc
	releases []atomic.Int64 // by node: releases and deletions heard
	echoes   []atomic.Int64 // by node: how many events one release makes there (2 with keyspace notifications)
	others   atomic.Int64   // everything else: expiries, evictions, reconnections, confirmations, Close
}

// ears are one waiter's view of the watches.
//
// A holder's release reaches the nodes one by one, and each node announces it. Trying at the first announcement
// mostly finds the lock still held on the other nodes, and the next announcements wake the waiter again for
// more tries that fail. So after a failed try the waiter waits until the lock is free on a majority as far as it
// knows: it released the lock there itself (a split try), or heard someone else's release there. Anything else
// (an expiry, an eviction, a reconnection, Close) wakes it at once, and so does the timer at the holder's
// remaining ttl: a release that reached too few nodes leaves the lock to expire there.
type ears struct {
	ws     *watches
	quorum int
	seen   []int64 // by node: releases already taken into account
	others int64
	own    []int64 // by node: events of the waiter's own releases still to come
	free   []bool  // by node: free since the last try, as far as the waiter knows
	woken  bool    // an event other than a release was heard since the last try
}

func (ws *watches) listen(quorum int) *ears {
	n := len(ws.releases)
	e := &ears{ws: ws, quorum: quorum, seen: make([]int64, n), own: make([]int64, n), free: make([]bool, n)}
	e.heard()
	return e
}

// restart begins a wait after a try that left the lock free on the nodes released (its own clean-up).
func (e *ears) restart(released []int) {
	clear(e.free)
	for _, i := range released {
		e.free[i] = true
	}
	e.woken = false
}

// enough reports whether what was heard since the last try is worth a try: an event other than a release, or
// releases that, with the try's own, leave the lock free on a majority.
func (e *ears) enough() bool {
	n := 0
	for _, f := range e.free {
		if f {
			n++
		}
	}
	return e.woken || n >= e.quorum
}

// expect records that the waiter released the lock on these nodes, and will hear it.
func (e *ears) expect(nodes []int) {
	for _, i := range nodes {
		e.own[i] += e.ws.echoes[i].Load()
	}
}

// heard takes in what was heard since the last call: the nodes with a release that was not the waiter's own,
// and whether anything else happened.
func (e *ears) heard() {
	select {
	case <-e.ws.wake:
	default:
	}
	if o := e.ws.others.Load(); o != e.others {
		e.others, e.woken = o, true
	}
	for i := range e.seen {
		n := e.ws.releases[i].Load() - e.seen[i]
		own := min(n, e.own[i])
		e.seen[i] += n
		e.own[i] -= own
		if n > own {
			e.free[i] = true
		}
	}
}

// watchSet returns the line's subscriptions, starting them for the line's first waiter that has to wait and
// waiting (at most watchWait) until every node confirmed its subscription.
func (c *Client) watchSet(ctx context.Context, ln *line) (*watches, error) {
	c.mu.Lock()
	ws := ln.watches
	c.mu.Unlock()
	if ws != nil {
		return ws, nil
	}
	wctx, stop := context.WithCancel(context.Background())
	ws = &watches{
		wake:     make(chan struct{}, 1),
		stop:     stop,
		releases: make([]atomic.Int64, len(c.nodes)),
		echoes:   make([]atomic.Int64, len(c.nodes)),
	}
	confirmed := make(chan struct{}, len(c.nodes))
	c.work.Add(len(c.nodes))
	for i := range c.nodes {
		ws.echoes[i].Store(1)
		go func() {
			defer c.work.Done()
			c.watchNode(wctx, i, ln.key, ws, confirmed)
		}()
	}
	c.mu.Lock()
	ln.watches = ws // only the line's first waiter gets here, and it is still in line
	c.mu.Unlock()

	timer := time.NewTimer(watchWait)
	defer timer.Stop()
	for range c.nodes {
		select {
		case <-confirmed:
		case <-timer.C:
			return ws, nil
		case <-ctx.Done():
			return nil, ctxErr(ctx)
		case <-c.closing:
			return nil, errClosed
		}
	}
	return ws, nil
}

// watchNode subscribes on node i and counts its events until ctx ends or the Watcher is closed. It signals
// confirmed once the server confirmed the subscription (or it gave up), and wakes the waiter then too: a release
// on this node before the confirmation could have gone unseen by the try that came before.
func (c *Client) watchNode(ctx context.Context, i int, key string, ws *watches, confirmed chan struct{}) {
	w, err := c.watcher(i)
	if err != nil {
		confirmed <- struct{}{}
		return
	}
	watch, err := w.Watch(ctx, key)
	if err == nil && w.KeyEvents() {
		ws.echoes[i].Store(2) // the release message, and the keyspace notification of its DEL
	}
	confirmed <- struct{}{}
	if err != nil {
		return
	}
	defer watch.Close()
	ws.others.Add(1)
	signal(ws.wake)
	for {
		select {
		case <-watch.Ready():
			closed := false
			for _, e := range watch.Events() {
				switch e.Kind {
				case keyspace.Released, keyspace.Deleted:
					ws.releases[i].Add(1)
				case keyspace.Closed:
					closed = true
					ws.others.Add(1)
				default:
					ws.others.Add(1)
				}
			}
			signal(ws.wake)
			if closed {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}
