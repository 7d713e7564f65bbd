package redlock

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/bound"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/lockopt"
	"github.com/keyward/keyward/internal/observe"
	"github.com/keyward/keyward/internal/token"
	"github.com/keyward/keyward/internal/watch"
)

// A Client takes locks on a majority of independent Redis nodes, through the caller's clients. It is safe for
// concurrent use and meant to be kept for the life of the program.
//
// Some work outlives the call that started it: a node that answers an acquire after the attempt was decided
// still has its key released, in the background, and waiters share one pub/sub connection per node. [Client.Close]
// waits for the first and closes the second.
type Client struct {
	nodes    []node
	all      []int // 0, 1, …, len(nodes)-1
	quorum   int
	opts     config
	observer keyward.Observer
	id       string // this Client's place name in the nodes' queues of the locks it waits for

	tries, failedTries, handOffs atomic.Int64

	mu       sync.Mutex
	closed   bool
	closing  chan struct{}    // closed by Close
	lines    map[string]*line // goroutines waiting in Obtain, by lock key
	watchers []*watch.Handle  // by node: its use of the pub/sub connection of the node's client, shared
	work     sync.WaitGroup   // calls in progress, their background work, and the workers
	jobs     chan func()      // hands an operation to an idle worker
}

// node is one of the independent Redis deployments of the quorum.
type node struct {
	rdb  redis.UniversalClient
	addr string // for NodeErrors: the address its client reports, or ""
	// scripts runs the scripts on rdb so that they return at their ctx's deadline (the node timeout), whatever
	// rdb's options (internal/bound); bounded does the same for other commands.
	scripts redis.Scripter
	bounded *bound.Client
}

// New returns a Client that takes locks on the nodes, configured by opts. Each node must be an independent Redis
// deployment (a server, or a Sentinel- or Cluster-managed one): the lock is held when a majority of them hold it,
// so it survives the loss of any minority. Use an odd number of nodes: 4 nodes tolerate one failure, like 3, and
// cost more.
//
// It returns an ErrInvalid error for no nodes, a nil node (also a typed nil such as a nil *redis.Client), the
// same client given twice, or an invalid option.
func New(nodes []redis.UniversalClient, opts ...Option) (*Client, error) {
	if len(nodes) == 0 {
		return nil, fmt.Errorf("%w: no redis nodes", keyward.ErrInvalid)
	}
	o, err := defaults().with(opts)
	if err != nil {
		return nil, err
	}
	c := &Client{
		quorum:   len(nodes)/2 + 1,
		opts:     o,
		observer: o.observer,
		id:       token.New(""),
		closing:  make(chan struct{}),
		jobs:     make(chan func()),
		lines:    map[string]*line{},
		watchers: make([]*watch.Handle, len(nodes)),
	}
	for i, rdb := range nodes {
		if lockopt.IsNil(rdb) {
			return nil, fmt.Errorf("%w: node %d is nil", keyward.ErrInvalid, i)
		}
		for j := range i {
			if sameClient(nodes[j], rdb) {
				return nil, fmt.Errorf("%w: nodes %d and %d are the same client: a quorum needs independent nodes",
					keyward.ErrInvalid, j, i)
			}
		}
		b := bound.New(rdb)
		c.nodes = append(c.nodes, node{rdb: rdb, addr: nodeAddr(rdb), scripts: b.Scripter(), bounded: b})
		c.all = append(c.all, i)
	}
	for i, n := range c.nodes {
		c.watchers[i] = watch.Attach(n.rdb, c.observer) // its Reconnected and Error events go to the observer too
	}
	return c, nil
}

func sameClient(a, b redis.UniversalClient) bool {
	return reflect.TypeOf(a) == reflect.TypeOf(b) && reflect.TypeOf(a).Comparable() && a == b
}

// failoverAddr is the address go-redis reports for a Sentinel-managed client (redis.NewFailoverClient), which
// says nothing of the node.
const failoverAddr = "FailoverClient"

// nodeAddr returns the node's address as its client reports it: a client's address, a cluster's first seed
// address; "" for a Sentinel-managed client (whose master name its options do not keep) or a ring.
func nodeAddr(rdb redis.UniversalClient) string {
	switch r := rdb.(type) {
	case *redis.Client:
		if a := r.Options().Addr; a != failoverAddr {
			return a
		}
	case *redis.ClusterClient:
		if addrs := r.Options().Addrs; len(addrs) > 0 {
			return addrs[0]
		}
	}
	return ""
}

// nodeError returns node i's part in a failed operation.
func (c *Client) nodeError(i int, err error) *keyward.NodeError {
	return &keyward.NodeError{Node: i, Addr: c.nodes[i].addr, Err: err}
}

// Nodes returns how many nodes the Client takes locks on.
func (c *Client) Nodes() int { return len(c.nodes) }

// Quorum returns how many nodes make a majority: len(nodes)/2 + 1.
func (c *Client) Quorum() int { return c.quorum }

// Stats returns the Client's counts so far: Tries counts the attempts sent to the nodes (each goes to every
// node), FailedTries those that did not get a majority and found the lock taken on some node, and HandOffs the
// releases that reserved the lock on a majority for a waiter of this Client (a cohort: the waiter claims it with
// a try of its own, which Tries counts).
func (c *Client) Stats() keyward.Stats {
	return keyward.Stats{Tries: c.tries.Load(), FailedTries: c.failedTries.Load(), HandOffs: c.handOffs.Load()}
}

// Close ends the Client: it ends its use of the pub/sub connections of the nodes' clients, which it shares with
// every other user of those clients (a connection is closed when its last user is), and waits until every call in
// progress has returned and the releases it sends in the background are done (each is bounded: by the node
// timeout, or at most 2 s for a clean-up). A TryObtain, Obtain, Do or Locker call after Close, and an Obtain
// that was waiting when Close ran, returns an error matching ErrClosed.
//
// Locks already held are not released by Close and stay usable until released: Release, Refresh, TTL and
// auto-refresh go on working (with the Client's workers gone, each of their operations runs on goroutines of its
// own, bounded by the node timeout, which Close does not wait for). The nodes' clients belong to the caller and
// stay open; close them after the locks are released. A second Close returns nil.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.closing)
	watchers := slices.Clone(c.watchers)
	c.mu.Unlock()
	var failed []error
	for _, w := range watchers {
		failed = append(failed, w.Close())
	}
	c.work.Wait()
	return errors.Join(failed...)
}

// group counts goroutines for Close: the Client's work, or nothing (detached).
type group interface {
	Add(int)
	Done()
}

// detached is the group of the operations of locks held past Close: nobody waits for them (each is bounded by
// the node timeout), and they run on goroutines of their own.
type detached struct{}

func (detached) Add(int) {}
func (detached) Done()   {}

// begin registers a call that takes something new (op on key), so that Close waits for it; every goroutine the
// Client starts is counted while a call is registered, which keeps the count above zero whenever it grows. end
// undoes begin. It returns an error matching ErrInvalid for a nil ctx, and, after Close, the ErrClosed error.
func (c *Client) begin(ctx context.Context, op, key string) error {
	if ctx == nil {
		return errs.NilContext("redlock", op, key)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errs.Closed("redlock", op, key)
	}
	c.work.Add(1)
	return nil
}

func (c *Client) end() { c.work.Done() }

// hold registers an operation of a held lock: counted like a call before Close, detached after it. The caller
// calls Done on the group returned.
func (c *Client) hold() group {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return detached{}
	}
	c.work.Add(1)
	return &c.work
}

// errClosedInternal is what the Client's internals say when they find it closed; the public calls turn it into
// errs.Closed with their operation and key.
var errClosedInternal = errors.New("redlock: client closed")

// watcher returns node i's use of the pub/sub connection of its client.
func (c *Client) watcher(i int) (*watch.Handle, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClosedInternal
	}
	return c.watchers[i], nil
}

// emit passes e, from this package, to the Client's observer.
func (c *Client) emit(ctx context.Context, e keyward.Event) {
	if c.observer == nil {
		return
	}
	e.Source = "redlock"
	observe.Emit(ctx, c.observer, e)
}

// TryObtain takes the lock key for ttl if a majority of the nodes grant it, and never waits for another
// holder: it returns an error matching ErrNotObtained when others hold the lock on so many nodes that no
// majority is left, and one matching ErrQuorum when too few nodes answered in time or some refused (with a
// [keyward.NodeError] for each node that failed). When ctx ends first, the error matches ctx's error and its
// cause; after Close, ErrClosed.
//
// The acquire goes to every node at once, each bounded by the node timeout ([WithNodeTimeout]). It succeeds
// once a majority have taken the lock, without waiting for the others, and when validity is left: the lock is
// trusted until (time before sending) + ttl − drift, and an attempt that reaches it first has failed. The
// fencing token is agreed in the same round trip in the common case (see [Lock.Fence]).
//
// A failed attempt releases the lock on every node it may have taken it on, including nodes whose answer was
// lost (a timeout: the node may have run the acquire) and nodes that answer after the attempt was decided.
func (c *Client) TryObtain(ctx context.Context, key string, ttl time.Duration, opts ...ObtainOption) (l *Lock, err error) {
	const op = "try obtain"
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
	l, res := a.try(ctx, false)
	if l == nil {
		return nil, res.err
	}
	a.obtained(ctx, l)
	return l, nil
}

// start begins the call op on key for the observer (see keyward.CallObserver): the call runs on the context it
// returns, and ends with the Call's End. A nil ctx stays nil, whatever the observer, so that begin refuses it.
func (c *Client) start(ctx context.Context, op, key string) (context.Context, observe.Call) {
	return observe.Start(ctx, c.observer, "redlock", op, c.opts.Prefix, key)
}

// attempt is one caller's attempt to take a lock: TryObtain's single try, or Obtain's tries.
type attempt struct {
	c           *Client
	op          string // the caller's operation, for errors: "try obtain", "obtain"
	key         string
	names       keys.Names
	ttl         time.Duration
	timeout     time.Duration // per node
	autoRefresh bool
	started     time.Time // when the call started
}

func (c *Client) newAttempt(ctx context.Context, op, key string, ttl time.Duration, opts []ObtainOption) (*attempt, error) {
	started := time.Now()
	name, err := c.opts.Key(key)
	if err != nil {
		return nil, err
	}
	if ttl, err = c.opts.Check(ctx, "redlock", op, key, ttl, nil); err != nil { // begin checked Close
		return nil, err
	}
	o := obtainWith(opts)
	return &attempt{c: c, op: op, key: key, names: keys.For(name), ttl: ttl, timeout: c.opts.timeout(ttl),
		autoRefresh: o.autoRefresh, started: started}, nil
}

// obtained reports a lock the attempt took.
func (a *attempt) obtained(ctx context.Context, l *Lock) {
	a.c.emit(ctx, keyward.Event{Kind: keyward.Obtained, Key: a.names.Lock, Fence: l.fence, Wait: time.Since(a.started)})
}
