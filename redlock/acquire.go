package redlock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/bound"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/script"
	"github.com/keyward/keyward/internal/token"
)

// fenceLead is how far ahead of the client's clock the fence floor of an attempt is. The acquire script raises
// each node's fencing counter to the floor when it takes the lock, so nodes whose counters are not above the
// floor all hand out floor + 1: the majority agrees on the fence without a second round trip. Counters run
// ahead of the floor only after an acquisition by a client whose clock is more than this ahead of this client's,
// or many acquisitions within this lead; the second round trip then makes them agree.
const fenceLead = time.Second

// maxCleanup bounds the release that cleans up after a failed attempt on one node: past the ttl the key is gone
// anyway.
const maxCleanup = 2 * time.Second

// tried is the outcome of a failed try.
type tried struct {
	err error
	// retry: another holder stands in the way (some node answered that the lock is taken, none refused), so
	// waiting for it may help.
	retry bool
	// split: this try held the lock on some nodes, but not a majority (contenders split the nodes).
	split bool
	// wait is the smallest remaining ttl among the nodes that answered that the lock is taken; negative when
	// none gave one.
	wait time.Duration
	// took is how long the try took.
	took time.Duration
}

// nodeState is what a try knows of one node.
type nodeState int

const (
	pending nodeState = iota // asked, no answer yet
	held                     // took the lock for this try
	taken                    // another holder has it
	refused                  // an error reply: the script did not run
	unknown                  // no answer (timeout, network): the node may hold the lock for this try
)

// try runs one attempt: acquire on every node, decide at a majority, agree on the fence, check validity. Each
// try has a value of its own, so that the background release of a failed try can never delete the key of a
// later one. A queued try is a waiting process's (see Obtain).
func (a *attempt) try(ctx context.Context, queued bool) (*Lock, tried) {
	c := a.c
	n, q := len(c.nodes), c.quorum
	value := token.New(c.opts.Metadata)
	c.tries.Add(1)
	start := time.Now()
	floor := start.Add(fenceLead).UnixMicro()
	waiter := ""
	if queued {
		waiter = c.id
	}
	f := fanOut(ctx, c, &c.work, a.timeout, c.all, func(ctx context.Context, _ int, rdb redis.Scripter) (script.Acquired, error) {
		return script.AcquireAbove(ctx, rdb, a.names, value, a.ttl, floor, waiter, script.QueueTTL(a.ttl))
	})

	state := make([]nodeState, n)
	fences := make([]int64, n)
	causes := make([]error, n)
	var nHeld, nTaken, nRefused, nUnknown int
	res := tried{wait: -1}
	var stopped error // why collecting stopped early: errExpired or the caller's ctx
	for f.left > 0 && nHeld < q {
		if failed := nTaken+nRefused+nUnknown > n-q; failed && (nTaken > n-q || nTaken+f.left <= n-q) {
			// No majority is left, and the remaining answers cannot change the error either (they could turn
			// it into ErrNotObtained: waiting for them, at most the node timeout, makes the error not depend on
			// the order in which the nodes answer).
			break
		}
		ans, err := f.next(ctx)
		if err != nil {
			stopped = err
			break
		}
		i := ans.node
		switch {
		case ans.err == nil && ans.val.OK:
			state[i], fences[i] = held, ans.val.Fence
			nHeld++
		case ans.err == nil:
			state[i], causes[i] = taken, errTakenOnNode
			nTaken++
			if p := ans.val.PTTL; p >= 0 && (res.wait < 0 || p < res.wait) {
				res.wait = p
			}
		case script.IsReply(ans.err):
			state[i], causes[i] = refused, ans.err
			nRefused++
		default:
			state[i], causes[i] = unknown, f.cause(ans)
			nUnknown++
		}
	}
	for _, i := range f.missing() {
		state[i] = unknown
		if errors.Is(stopped, errExpired) {
			causes[i] = noAnswer(a.timeout, nil)
		}
	}

	var fail error
	var fence int64
	switch {
	case nHeld < q && errors.Is(stopped, errCtx):
		fail = errs.Context(ctx, "redlock", a.op, a.key)
	case nHeld < q && nTaken > n-q:
		fail = fmt.Errorf("redlock %q: %w", a.key, ErrNotObtained)
	case nHeld < q:
		fail = c.quorumError(a.op, a.key, nHeld, causes)
	default:
		fence, fail = a.agree(ctx, state, fences)
		if drift := c.opts.Drift.Of(a.ttl); fail == nil && !time.Now().Before(start.Add(a.ttl-drift)) {
			fail = fmt.Errorf("redlock %q: %s: %w: a majority took %v, longer than the validity of ttl %v − drift %v",
				a.key, a.op, ErrQuorum, time.Since(start).Round(time.Microsecond), a.ttl, drift)
		}
	}
	if fail == nil {
		// Nodes that answer later keep the lock too: it then survives the loss of a node of the first majority.
		// The holder's release to such a node waits for its answer, so it cannot overtake the acquire there.
		arrived := make([]chan struct{}, n)
		for _, i := range f.missing() {
			arrived[i] = make(chan struct{})
		}
		// The nodes that answered "taken" put this Client in their queue; a release there would reserve the
		// lock for a Client that no longer waits, and hold the others up for a claim window. So did a node
		// that answers "taken" after the decision (a holder's release had not reached it yet).
		f.stop(func(ans answer[script.Acquired]) {
			close(arrived[ans.node])
			if waiter != "" && ans.err == nil && !ans.val.OK {
				a.leaveQueue(context.WithoutCancel(ctx), ans.node)
			}
		})
		if waiter != "" {
			for i, s := range state {
				if s == taken {
					c.spawn(&c.work, func() { a.leaveQueue(context.WithoutCancel(ctx), i) })
				}
			}
		}
		return c.newLock(a, value, start, fence, arrived), tried{}
	}

	// Release wherever this try may hold the lock: nodes that said so now (they answer fast), nodes whose
	// answer was lost in the background, and nodes that answer late once they do (so the release comes after
	// the acquire there). A node that answered "taken" is not asked: that answer is final even when go-redis
	// resent the script after a dropped connection, since a run that finds this try's own value in the key
	// answers "acquired" (see acquire.lua); a release there could only find another holder's value. This
	// spares every failed try under contention a script per node and a round trip.
	f.stop(func(ans answer[script.Acquired]) {
		if ans.err == nil && ans.val.OK || ans.err != nil && !script.IsReply(ans.err) {
			a.release(context.WithoutCancel(ctx), ans.node, value)
		}
	})
	var now []int
	for i, s := range state {
		switch s {
		case held:
			now = append(now, i)
		case unknown:
			if !f.got[i] {
				continue // still running: handled as a late answer
			}
			c.spawn(&c.work, func() { a.release(context.WithoutCancel(ctx), i, value) })
		}
	}
	if len(now) > 0 {
		// Each release may take as long as a clean-up may (a key left behind would stand in everyone's way for
		// the ttl), but the try waits for them only as long as the node timeout.
		rf := fanOut(context.WithoutCancel(ctx), c, &c.work, a.cleanupTimeout(), now, func(ctx context.Context, _ int, rdb redis.Scripter) (bool, error) {
			return script.Release(ctx, rdb, a.names, value, script.PublishPlain)
		})
		wctx, cancel := context.WithTimeout(context.Background(), a.timeout)
		defer cancel()
		for rf.left > 0 {
			ans, err := rf.next(wctx)
			if err != nil {
				break // the node timeout passed; the rest finish in the background
			}
			a.cleanedUp(ans.node, rf.cause(ans))
		}
		rf.stop(func(ans answer[bool]) { a.cleanedUp(ans.node, rf.cause(ans)) })
	}
	if nTaken > 0 {
		c.failedTries.Add(1)
	}
	res.err = fail
	res.retry = nTaken > 0 && nRefused == 0 && ctx.Err() == nil
	res.split = nHeld > 0
	res.took = time.Since(start)
	return nil, res
}

// release is the token-checked release of a failed try on node i, bounded by the node timeout or, at most, the
// ttl (the key is gone by then).
func (a *attempt) release(ctx context.Context, i int, value string) {
	rctx, cancel := context.WithTimeout(ctx, a.cleanupTimeout())
	defer cancel()
	_, err := script.Release(rctx, a.c.nodes[i].scripts, a.names, value, script.PublishPlain)
	if err != nil && rctx.Err() != nil {
		err = noAnswer(a.cleanupTimeout(), err)
	}
	a.cleanedUp(i, err)
}

// cleanedUp reports the release of a failed try on node i, and why it failed (nil when it worked).
func (a *attempt) cleanedUp(i int, err error) {
	e := keyward.Event{Kind: keyward.CleanedUp, Key: a.names.Lock}
	if err != nil {
		e.Err = a.c.nodeError(i, err)
	}
	a.c.emit(context.Background(), e)
}

// failedInBackground reports background work on node i that failed (what, e.g. "leaving the queue").
func (a *attempt) failedInBackground(i int, what string, err error) {
	a.c.emit(context.Background(), keyward.Event{Kind: keyward.Error, Key: a.names.Lock,
		Err: fmt.Errorf("redlock %q: %s: %w", a.key, what, a.c.nodeError(i, err))})
}

// giveBack takes the Client out of node i's queue for the lock and passes on a reservation the node made for it
// (to the next process in line there, or freed), best effort: for a Client whose last waiter gave up, so that the
// others do not wait out a claim window.
func (a *attempt) giveBack(ctx context.Context, i int) {
	rctx, cancel := context.WithTimeout(ctx, a.cleanupTimeout())
	defer cancel()
	if _, err := script.GiveBack(rctx, a.c.nodes[i].scripts, a.names, a.c.id, script.PublishPlain, a.c.opts.ClaimWindow); err != nil {
		a.failedInBackground(i, "leaving the queue", err)
	}
}

// leaveQueue takes the Client out of node i's queue for the lock, best effort.
func (a *attempt) leaveQueue(ctx context.Context, i int) {
	rctx, cancel := context.WithTimeout(ctx, a.cleanupTimeout())
	defer cancel()
	n := a.c.nodes[i]
	err := bound.Err(n.bounded, rctx, func(rdb redis.UniversalClient) error {
		return rdb.ZRem(rctx, a.names.Queue, a.c.id).Err()
	})
	if err != nil {
		a.failedInBackground(i, "leaving the queue", script.Classify(err))
	}
}

// cleanupTimeout bounds a release that cleans up after a failed try on one node: the node timeout, or longer,
// up to the ttl (past it the key is gone anyway) and at most maxCleanup.
func (a *attempt) cleanupTimeout() time.Duration { return max(a.timeout, min(a.ttl, maxCleanup)) }

// agree returns the fence of a try that holds the lock on a majority: the largest fence the nodes that hold it
// handed out. Before it is handed out, a majority of the nodes must remember it (a counter at least as large),
// and those must be nodes that hold this lock: a later holder takes the lock on a majority too, so on at least
// one of those nodes, after this holder's key is gone, and gets a larger fence there. When the nodes disagree
// (a node's clock or counter was ahead of the floor), the ones that are behind are raised in a second round trip.
func (a *attempt) agree(ctx context.Context, state []nodeState, fences []int64) (int64, error) {
	c := a.c
	var fence int64
	for i, s := range state {
		if s == held {
			fence = max(fence, fences[i])
		}
	}
	var atFence int
	var behind []int
	for i, s := range state {
		switch {
		case s != held:
		case fences[i] == fence:
			atFence++
		default:
			behind = append(behind, i)
		}
	}
	if atFence >= c.quorum {
		return fence, nil
	}
	need := c.quorum - atFence
	t := c.vote(ctx, &c.work, a.timeout, behind, need, func(ctx context.Context, _ int, rdb redis.Scripter) (bool, error) {
		_, err := script.Raise(ctx, rdb, a.names, fence, a.ttl)
		return err == nil, err
	})
	switch {
	case t.yes >= need:
		return fence, nil
	case t.ended:
		return 0, errs.Context(ctx, "redlock", a.op, a.key)
	}
	return 0, c.quorumError("agreeing on the fence", a.key, atFence+t.yes, t.causes)
}
