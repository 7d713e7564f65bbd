package redlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/lease"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/retry"
	"github.com/keyward/keyward/internal/script"
	"github.com/keyward/keyward/internal/waitq"
	"github.com/keyward/keyward/internal/watch"
)

// watchWait bounds how long Obtain waits for its subscriptions to be confirmed before it tries again after a
// first failure; a node whose confirmation comes later (it is slow or down) wakes the waiter once more then.
const watchWait = 100 * time.Millisecond

// Obtain takes the lock key for ttl as TryObtain does, waiting as long as ctx allows while another holder has
// it. When ctx ends first, it returns an error that matches ctx's error and its cause (see [context.Cause]) and
// names the key; when the Client is closed meanwhile (or before), one matching ErrClosed; and at once the errors
// that will not pass: ErrInvalid, ErrWrongType or ErrNoPermission (from any node, in an ErrQuorum error with a
// [keyward.NodeError] for each node that failed).
//
// Obtain rides out errors that may pass: a try that gets no majority because nodes are down, restarting or
// refusing for a while (an ErrQuorum error) is tried again after a backoff (10 ms doubling to 1 s, jittered)
// until ctx ends; the error then matches ctx's error and the last try's alike.
//
// Waiting costs no polling. Goroutines of one Client that wait for the same key queue up in arrival order and
// only the first contends at the nodes; while a goroutine of the same Client holds the lock, it waits for that
// holder's release. The first try costs one round trip and no subscription. After a failed try the waiter
// subscribes to the lock's release channel on every node, through the pub/sub connection of that node's client
// that it shares with the client's other users, waits until the servers confirmed the subscriptions, and tries
// again, now joining each node's queue of waiting processes: that try closes the window in which a release could
// slip by unseen. It then waits for the first of: events that leave the lock free for it on a majority (released,
// or reserved for this Client), any other event (a reconnection), a timer at the smallest remaining ttl the nodes
// reported for the holder (the holder may have crashed) or at the end of a claim window reserved for another
// process, or ctx.
//
// Hand-off is fair across processes: each node's release reserves the lock for the first process in that
// node's queue, for a short claim window ([WithClaimWindow]), and only that process tries. A holder whose own
// Client has waiters has the lock reserved for its Client instead, up to [WithCohort] times in a row while
// other processes wait. When contenders split the nodes between them and no one got a majority, each backs off
// for a random time of the order of a try before trying again.
//
// An Obtain that finds the lock taken tells the observer ([WithObserver]) a [keyward.WaitStarted] event, and a
// [keyward.WaitEnded] one when it stops waiting.
func (c *Client) Obtain(ctx context.Context, key string, ttl time.Duration, opts ...ObtainOption) (l *Lock, err error) {
	const op = "obtain"
	ctx, call := c.start(ctx, op, key)
	defer func() { call.End(observe.Fence(l), err) }()
	if err := c.begin(ctx, op, key); err != nil {
		return nil, err
	}
	defer c.end()
	a, err := c.newAttempt(ctx, op, key, ttl, opts)
	if err != nil {
		return nil, err
	}
	l, err = a.obtain(ctx)
	if err != nil {
		return nil, err
	}
	a.obtained(ctx, l)
	return l, nil
}

// obtain is Obtain's work, once the attempt is set up.
func (a *attempt) obtain(ctx context.Context) (_ *Lock, err error) {
	c := a.c
	// waitStart is when the call began to wait because the lock was taken (zero: it has not).
	var waitStart time.Time
	startWait := func() {
		if waitStart.IsZero() {
			waitStart = time.Now()
			c.emit(ctx, keyward.Event{Kind: keyward.WaitStarted, Key: a.names.Lock})
		}
	}
	defer func() {
		if !waitStart.IsZero() {
			c.emit(ctx, keyward.Event{Kind: keyward.WaitEnded, Key: a.names.Lock, Wait: time.Since(waitStart), Err: err})
		}
	}()
	ln, w := c.join(a.names.Lock)
	defer c.leave(ln, w, a)
	select {
	case <-w.Wake():
	default:
		startWait() // another goroutine of this Client is ahead in line
		if err := c.await(ctx, w.Wake(), nil); err != nil {
			return nil, a.stopped(ctx, err, nil)
		}
	}
	// try is a try of this waiter; a queued one joins the nodes' queues where the lock is taken, and claims it
	// where a release reserved it for this Client.
	try := func(queued bool) (*Lock, tried) {
		if queued {
			ln.queued.Store(true)
		}
		l, res := a.try(ctx, queued)
		w.lock = l
		return l, res
	}
	// A goroutine of this Client holds the lock: contending with it would only fail. Its release may reserve
	// the lock for this Client on the nodes (within the cohort), which only a queued try claims.
	waited, err := c.awaitHolder(ctx, ln, startWait)
	if err != nil {
		return nil, a.stopped(ctx, err, nil)
	}
	// w.Failed is the error of the last try when it failed in a way that may pass (too few nodes answered: they
	// are down or restarting): the next try waits a backoff. backOff waits it, or says why Obtain ends.
	pause := time.NewTimer(time.Hour)
	pause.Stop()
	defer pause.Stop()
	backOff := func(res tried) error {
		switch {
		case ctx.Err() != nil:
			return a.stopped(ctx, errCtx, w.Failed)
		case retry.Permanent(res.err):
			return res.err
		}
		w.Fail(res.err)
		pause.Reset(time.Until(w.RetryAt))
		if err := c.await(ctx, nil, pause.C); err != nil {
			return a.stopped(ctx, err, w.Failed)
		}
		return nil
	}

	// The uncontended path: one round trip, no subscription (and no place in the nodes' queues unless a holder
	// of this Client was waited for). When the line's subscriptions are already in place (the key was
	// contended a moment ago), the first try is a waiting one.
	if !c.subscribed(ln) {
		for {
			l, res := try(waited)
			if l != nil {
				return l, nil
			}
			if res.retry {
				startWait()
				break
			}
			if err := backOff(res); err != nil {
				return nil, err
			}
		}
		w.Answered()
	}

	ws, err := c.watchSet(ctx, ln)
	if err != nil {
		return nil, a.stopped(ctx, err, nil)
	}
	ears := ws.listen(c.quorum)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-c.closing:
			return nil, a.stopped(ctx, errClosedInternal, nil)
		default:
		}
		// Whatever was heard before the try is answered by the try itself.
		ears.mark()
		l, res := try(true)
		if l != nil {
			return l, nil
		}
		if !res.retry {
			if err := backOff(res); err != nil {
				return nil, err
			}
			continue
		}
		startWait()
		w.Answered()
		var deadline time.Time
		if res.wait >= 0 {
			// SET NX sees an expired key as absent at once, while the expiry event comes when Redis gets to
			// delete the key: the timer is what makes taking over from a crashed holder fast. The jitter keeps
			// waiters woken by the same expiry from trying at the very same moment.
			deadline = arm(timer, time.Time{}, time.Now().Add(res.wait))
		}
		for woken := false; !woken; {
			select {
			case <-ws.wake:
				var reservedUntil time.Time
				woken, reservedUntil = ears.ready()
				if !woken && !reservedUntil.IsZero() {
					// Released, and reserved for another process: if it does not claim the lock within its
					// claim window, the reservations expire and anyone may take it.
					deadline = arm(timer, deadline, reservedUntil)
				}
			case <-timer.C:
				woken = true
			case <-ctx.Done():
				return nil, a.stopped(ctx, errCtx, nil)
			case <-c.closing:
				return nil, a.stopped(ctx, errClosedInternal, nil)
			}
		}
		if res.split {
			// This try held the lock on some nodes but no majority: contenders may have split the nodes, and
			// each released its part, which is what woke them all. A random pause of the order of a try lets one
			// of them get ahead.
			timer.Stop()
			timer.Reset(rand.N(3*res.took + time.Millisecond))
			if err := c.await(ctx, nil, timer.C); err != nil {
				return nil, a.stopped(ctx, err, nil)
			}
		}
	}
}

// stopped returns the error of an Obtain that stopped because of why (errCtx: ctx ended; errClosedInternal: the
// Client was closed); last is the error of the last try when it failed in a way that may pass.
func (a *attempt) stopped(ctx context.Context, why, last error) error {
	if errors.Is(why, errClosedInternal) {
		return errs.Closed("redlock", a.op, a.key)
	}
	err := errs.Context(ctx, "redlock", a.op, a.key)
	if last == nil {
		return err
	}
	return fmt.Errorf("%w (the last try failed: %w)", err, last)
}

// arm sets timer to fire a little after at (see waitq.Late: the key has expired on the server by then, and
// waiters whose timers were set by the same event do not all try at once), unless it is already set to fire
// before: deadline is when it is set to fire (zero: not set). It returns the new deadline.
func arm(timer *time.Timer, deadline, at time.Time) time.Time {
	at = at.Add(waitq.Late(0))
	if !deadline.IsZero() && !at.Before(deadline) {
		return deadline
	}
	timer.Stop()
	timer.Reset(time.Until(at))
	return at
}

// Do obtains the lock key as Obtain does, with auto-refresh, and runs fn while holding it. fn's context is
// cancelled the moment the lock is lost, with a cause matching ErrLost (see context.Cause). The lock is released
// when fn returns, also when fn panics. Do returns fn's error joined with the release's, or the error of Obtain.
func (c *Client) Do(ctx context.Context, key string, ttl time.Duration, fn func(ctx context.Context) error, opts ...ObtainOption) (err error) {
	ctx, call := c.start(ctx, "do", key)
	var fence int64
	defer func() { call.End(fence, err) }()
	l, err := c.Obtain(ctx, key, ttl, append(slices.Clip(opts), WithAutoRefresh())...)
	if err != nil {
		return err
	}
	fence, err = l.fence, observe.ErrPanicked // what Ended reports if fn panics
	return l.wrap(lease.Run(ctx, l.lease, fn))
}

// await waits for a or b (either may be nil), ctx (errCtx) or Close (errClosedInternal).
func (c *Client) await(ctx context.Context, a <-chan struct{}, b <-chan time.Time) error {
	select {
	case <-a:
	case <-b:
	case <-ctx.Done():
		return errCtx
	case <-c.closing:
		return errClosedInternal
	}
	return nil
}

// line is a Client's queue of goroutines in Obtain for one lock key, in arrival order: only the first contends
// at the nodes. Its fields are guarded by Client.mu.
type line struct {
	key     string
	waiters waitq.Line[*waiter]
	watches *watches // the subscriptions the first waiter waits on; kept for the next one while the line lasts
	// queued: a waiter of the line joined the nodes' queues (it may still be in them).
	queued atomic.Bool
	// holder is a lock on the key held through this Client by a waiter that left the line with it, until it is
	// released: the line's first waiter waits for it (or for its loss) rather than contend with it.
	holder *Lock
	// cohort counts the releases in a row that reserved the lock for this Client while other processes waited.
	cohort int
}

// waiter is one goroutine in Obtain. It is woken when it is first in line.
type waiter struct {
	waitq.Entry       // its place in the line; also its backoff after tries that failed without an answer
	lock        *Lock // the lock the waiter leaves the line with, if any
}

// isDone reports whether ch is closed.
func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
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
	w := &waiter{Entry: waitq.NewEntry()}
	if ln.waiters.Add(w) {
		w.Signal()
	}
	return ln, w
}

// leave takes w out of the line, passing its turn on; the last one out ends the line's subscriptions, and,
// when it gives up, takes the Client out of the nodes' queues and passes on what a release reserved for it there:
// a release would otherwise reserve the lock for a Client that no longer waits, and hold the others up for a
// claim window.
func (c *Client) leave(ln *line, w *waiter, a *attempt) {
	c.mu.Lock()
	i := ln.waiters.Remove(w)
	if w.lock != nil {
		ln.holder = w.lock
	}
	var done *watches
	switch {
	case ln.waiters.Len() == 0:
		done, ln.watches = ln.watches, nil
		delete(c.lines, ln.key)
	case i == 0:
		ln.waiters.SignalFirst()
	}
	c.mu.Unlock()
	if done != nil {
		done.stop()
		if w.lock == nil && ln.queued.Load() {
			for _, n := range c.all {
				c.spawn(&c.work, func() { a.giveBack(context.Background(), n) })
			}
		}
	}
}

// awaitHolder waits, when a goroutine of this Client holds the lock through the line, until it released it or
// lost it, and reports whether it waited; it calls waiting before it blocks.
func (c *Client) awaitHolder(ctx context.Context, ln *line, waiting func()) (bool, error) {
	c.mu.Lock()
	h := ln.holder
	c.mu.Unlock()
	if h == nil {
		return false, nil
	}
	if !isDone(h.done) && !isDone(h.Lost()) {
		waiting()
	}
	select {
	case <-h.done:
	case <-h.Lost():
	case <-ctx.Done():
		return true, errCtx
	case <-c.closing:
		return true, errClosedInternal
	}
	c.mu.Lock()
	if ln.holder == h {
		ln.holder = nil
	}
	c.mu.Unlock()
	return true, nil
}

// subscribed reports whether the line's subscriptions are in place.
func (c *Client) subscribed(ln *line) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return ln.watches != nil
}

// watches are the subscriptions to one lock's release channel (and keyspace notifications) on every node, and
// what their events said of each node.
type watches struct {
	wake chan struct{} // capacity 1: something was heard
	stop context.CancelFunc
	id   string // the Client's id: a reservation for it is the waiter's

	mu     sync.Mutex
	seq    []int64     // by node: events so far
	last   []view      // by node: what its last event said
	until  []time.Time // by node: the end of the claim window of its last reservation for another process
	others int64       // everything else: reconnections, confirmations, Close
}

// view is what a node's last event said of the lock there.
type view int

const (
	freed    view = iota + 1 // released, deleted, expired or evicted: anyone may take it
	mine                     // released and reserved for this Client
	reserved                 // released and reserved for another process, for a claim window
)

// note records an event of node i.
func (ws *watches) note(i int, v view, until time.Time) {
	ws.mu.Lock()
	ws.seq[i]++
	ws.last[i], ws.until[i] = v, until
	ws.mu.Unlock()
}

// other records an event that is not about the lock's state on a node: a confirmation, a reconnection, Close.
func (ws *watches) other() {
	ws.mu.Lock()
	ws.others++
	ws.mu.Unlock()
}

// ears are one waiter's view of the watches.
//
// A holder's release reaches the nodes one by one, and each node announces it: freed, or reserved for the
// process first in that node's queue. After a failed try the waiter tries again once the lock is free for it
// on a majority, as far as the events since the try tell: freed there, or reserved for this Client. Anything
// else (a reconnection, a late confirmation, Close) wakes it at once. A reservation for another process tells
// when to look again should that process not claim the lock; the timer at the holder's remaining ttl covers a
// release that reached too few nodes.
type ears struct {
	ws     *watches
	quorum int
	seq    []int64 // by node: events counted at the last try
	others int64
}

func (ws *watches) listen(quorum int) *ears {
	e := &ears{ws: ws, quorum: quorum, seq: make([]int64, len(ws.seq))}
	e.mark()
	return e
}

// mark is called before a try: what was heard until now is answered by the try itself.
func (e *ears) mark() {
	select {
	case <-e.ws.wake:
	default:
	}
	e.ws.mu.Lock()
	defer e.ws.mu.Unlock()
	copy(e.seq, e.ws.seq)
	e.others = e.ws.others
}

// ready reports whether what was heard since the last try is worth a try, and otherwise the latest end of a
// claim window of another process reserved since (zero for none).
func (e *ears) ready() (bool, time.Time) {
	e.ws.mu.Lock()
	defer e.ws.mu.Unlock()
	if e.ws.others != e.others {
		return true, time.Time{}
	}
	n := 0
	var until time.Time
	for i, seq := range e.ws.seq {
		if seq == e.seq[i] {
			continue
		}
		switch e.ws.last[i] {
		case freed, mine:
			n++
		case reserved:
			if e.ws.until[i].After(until) {
				until = e.ws.until[i]
			}
		}
	}
	return n >= e.quorum, until
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
		wake:  make(chan struct{}, 1),
		stop:  stop,
		id:    c.id,
		seq:   make([]int64, len(c.nodes)),
		last:  make([]view, len(c.nodes)),
		until: make([]time.Time, len(c.nodes)),
	}
	confirmed := make(chan struct{}, len(c.nodes))
	c.work.Add(len(c.nodes))
	for i := range c.nodes {
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
			return nil, errCtx
		case <-c.closing:
			return nil, errClosedInternal
		}
	}
	return ws, nil
}

// watchFailed reports that a waiter cannot listen on node i for the lock key (it relies on its timers there).
func (c *Client) watchFailed(i int, key string, err error) {
	c.emit(context.Background(), keyward.Event{Kind: keyward.Error, Key: key,
		Err: fmt.Errorf("redlock: watching %q: %w", key, c.nodeError(i, err))})
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
	wt, err := w.Watch(ctx, key)
	confirmed <- struct{}{}
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, keyward.ErrClosed) {
			c.watchFailed(i, key, err)
		}
		return
	}
	defer wt.Close()
	ws.other()
	waitq.Signal(ws.wake)
	for {
		select {
		case <-wt.Ready():
			closed := false
			for _, e := range wt.Events() {
				switch e.Kind {
				case watch.Released:
					switch id, window, ok := script.ParseReservation(e.Payload); {
					case !ok:
						ws.note(i, freed, time.Time{})
					case id == ws.id:
						ws.note(i, mine, time.Time{})
					default:
						ws.note(i, reserved, time.Now().Add(window))
					}
				case watch.Deleted, watch.Expired, watch.Evicted:
					ws.note(i, freed, time.Time{})
				default:
					// A Failed watch (the server refused its subscription) hears nothing more either.
					closed = closed || e.Kind == watch.Closed || e.Kind == watch.Failed
					if e.Kind == watch.Failed {
						c.watchFailed(i, key, e.Err)
					}
					ws.other()
				}
			}
			waitq.Signal(ws.wake)
			if closed {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}
