package redlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// answer is one node's answer to an operation.
type answer[T any] struct {
	node     int
	val      T
	err      error
	timedOut bool // the answer came after the node timeout (err is then the timeout)
}

// call is one operation sent to several nodes at once, one goroutine per node. Each node's operation is bounded
// by the node timeout and not by the caller's context: a caller that gives up must not cut an acquire off
// half-way, since an acquire whose answer is lost has to be cleaned up. The caller collects the answers with
// next until it has decided, then calls stop; answers that come after that go to stop's late function, on the
// goroutine that got them. Nothing waits for the caller, and no answer is lost.
type call[T any] struct {
	c       *Client
	g       group           // counts the call's goroutines for Close
	answers chan answer[T]  // capacity: one per node, so that no node goroutine ever blocks on it
	expired <-chan struct{} // closed when the node timeout has passed (or every node has answered)
	cancel  context.CancelFunc
	timeout time.Duration
	asked   []int
	got     []bool // by node: collected by next
	left    int    // nodes asked and not collected yet

	mu   sync.Mutex
	done bool            // stop was called
	late func(answer[T]) // what stop wants done with later answers; nil to drop them
}

// errExpired is next's error when the node timeout passed before every node answered.
var errExpired = errors.New("node timeout passed")

// errCtx is next's error when the caller's ctx ended; the public calls report errs.Context instead.
var errCtx = errors.New("caller's context ended")

// fanOut sends op to the nodes targets, counting its goroutines in g. The caller must be inside begin/end (or
// hold g from hold), and must call stop.
func fanOut[T any](ctx context.Context, c *Client, g group, timeout time.Duration, targets []int,
	op func(ctx context.Context, i int, rdb redis.Scripter) (T, error)) *call[T] {
	f := &call[T]{
		c:       c,
		g:       g,
		answers: make(chan answer[T], len(targets)),
		timeout: timeout,
		asked:   targets,
		got:     make([]bool, len(c.nodes)),
		left:    len(targets),
	}
	nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	f.expired, f.cancel = nctx.Done(), cancel
	if len(targets) == 0 {
		cancel()
	}
	var running atomic.Int32
	running.Store(int32(len(targets)))
	g.Add(1) // the collector's, until stop: it keeps the count above zero for stop's own goroutine
	for _, i := range targets {
		c.spawn(g, func() {
			v, err := op(nctx, i, c.nodes[i].scripts)
			// nctx is only cancelled below, once every node answered: an error now is the deadline's.
			f.deliver(answer[T]{node: i, val: v, err: err, timedOut: err != nil && nctx.Err() != nil})
			if running.Add(-1) == 0 {
				f.cancel()
			}
		})
	}
	return f
}

// workerIdle is how long a worker waits for its next operation before it ends.
const workerIdle = 5 * time.Second

// spawn runs job on an idle worker, or on a new one. Workers outlive their operation for a while: a fresh
// goroutine grows its stack through go-redis's deep call chains on every operation, which cost about a tenth
// of the client's CPU per lock in the uncontended benchmark. The caller must be inside begin/end, or a worker,
// with g the Client's work; a detached job (a held lock's, after Close) runs on a goroutine of its own.
func (c *Client) spawn(g group, job func()) {
	if _, ok := g.(detached); ok {
		go job()
		return
	}
	select {
	case c.jobs <- job:
	default:
		c.work.Add(1)
		go c.worker(job)
	}
}

func (c *Client) worker(job func()) {
	defer c.work.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		job()
		idle.Reset(workerIdle)
		select {
		case job = <-c.jobs:
		case <-idle.C:
			return
		case <-c.closing:
			return
		}
	}
}

func (f *call[T]) deliver(a answer[T]) {
	f.mu.Lock()
	if !f.done {
		f.answers <- a
		f.mu.Unlock()
		return
	}
	late := f.late
	f.mu.Unlock()
	if late != nil {
		late(a)
	}
}

// next returns the next answer. It returns errExpired once the node timeout has passed with answers missing, and
// errCtx when ctx ends first.
func (f *call[T]) next(ctx context.Context) (answer[T], error) {
	var a answer[T]
	select {
	case a = <-f.answers:
	case <-ctx.Done():
		return a, errCtx
	case <-f.expired:
		select {
		case a = <-f.answers: // answered just in time, or every node answered
		default:
			return a, errExpired
		}
	}
	f.left--
	f.got[a.node] = true
	return a, nil
}

// missing returns the nodes asked whose answers were not collected.
func (f *call[T]) missing() []int {
	var m []int
	for _, i := range f.asked {
		if !f.got[i] {
			m = append(m, i)
		}
	}
	return m
}

// stop ends the collection: answers not collected, now or later, go to late (in the background), or are dropped
// when late is nil.
func (f *call[T]) stop(late func(answer[T])) {
	f.mu.Lock()
	f.done, f.late = true, late
	var pending []answer[T]
	for len(f.answers) > 0 {
		pending = append(pending, <-f.answers)
	}
	f.mu.Unlock()
	if late == nil || len(pending) == 0 {
		f.g.Done()
		return
	}
	f.c.spawn(f.g, func() {
		defer f.g.Done()
		for _, a := range pending {
			late(a)
		}
	})
}

// noAnswer is the cause recorded for a node that did not answer within the node timeout. It does not match
// context.DeadlineExceeded: that would read as the caller's context having ended.
func noAnswer(timeout time.Duration, err error) error {
	if err == nil {
		return fmt.Errorf("no answer within the node timeout %v", timeout)
	}
	return fmt.Errorf("no answer within the node timeout %v (%v)", timeout, err)
}

// cause is the cause recorded for a node whose operation failed.
func (f *call[T]) cause(a answer[T]) error {
	if a.timedOut {
		return noAnswer(f.timeout, a.err)
	}
	return a.err
}

// tally counts the answers of a yes/no operation (is the lock still held by this holder on the node?).
type tally struct {
	yes, no int
	causes  []error // by node: why it did not say yes; nil for yes or not asked
	ended   bool    // the caller's ctx ended before the outcome was known
}

// vote sends op to the nodes targets and collects answers until need of them said yes, or so many did not that
// need cannot be reached, or the node timeout passed, or ctx ended. Nodes that answer later are not waited for.
func (c *Client) vote(ctx context.Context, g group, timeout time.Duration, targets []int, need int,
	op func(ctx context.Context, i int, rdb redis.Scripter) (bool, error)) tally {
	f := fanOut(ctx, c, g, timeout, targets, op)
	defer f.stop(nil)
	t := tally{causes: make([]error, len(c.nodes))}
	for t.yes < need && t.yes+f.left >= need {
		a, err := f.next(ctx)
		if errors.Is(err, errExpired) {
			for _, i := range f.missing() {
				t.causes[i] = noAnswer(timeout, nil)
			}
			break
		}
		if err != nil {
			t.ended = true
			break
		}
		switch {
		case a.err != nil:
			t.causes[a.node] = f.cause(a)
		case a.val:
			t.yes++
		default:
			t.no++
			t.causes[a.node] = errNotHeldOnNode
		}
	}
	return t
}

// errNotHeldOnNode is the cause recorded for a node that no longer holds the lock. It does not match ErrNotHeld:
// a minority of such nodes does not make the lock not held.
var errNotHeldOnNode = errors.New("not held by this holder on this node")

// errTakenOnNode is the cause recorded for a node on which another holder has the lock. It does not match
// ErrNotObtained: with a minority of such nodes, the lock may be free.
var errTakenOnNode = errors.New("held by another holder on this node")

// quorumError is the ErrQuorum error of an operation (op, on the lock key) that got got of the quorum: it
// carries a *keyward.NodeError for each node that failed, which errors.As finds, and errors.Is finds ErrQuorum
// and each node's cause.
type quorumError struct {
	op, key      string
	got, n, need int
	nodes        []error // *keyward.NodeError, by node index
}

// quorumError returns the ErrQuorum error of op on key, which got got of the quorum; causes are by node, nil for
// the nodes that did not fail.
func (c *Client) quorumError(op, key string, got int, causes []error) error {
	e := &quorumError{op: op, key: key, got: got, n: len(c.nodes), need: c.quorum}
	for i, err := range causes {
		if err != nil {
			e.nodes = append(e.nodes, c.nodeError(i, err))
		}
	}
	return e
}

func (e *quorumError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "redlock %q: %s: %v: %d of %d nodes (need %d)", e.key, e.op, ErrQuorum, e.got, e.n, e.need)
	for _, ne := range e.nodes {
		b.WriteString("\n")
		b.WriteString(ne.Error())
	}
	return b.String()
}

// Unwrap returns ErrQuorum and the NodeErrors.
func (e *quorumError) Unwrap() []error { return append([]error{ErrQuorum}, e.nodes...) }
