package redlock

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/bound"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/lockopt"
	"github.com/keyward/keyward/internal/retry"
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
	nodes  []node
	all    []int // 0, 1, …, len(nodes)-1
	quorum int
	opts   settings
	id     string // this Client's place name in the nodes' queues of the locks it waits for

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
	name string // for errors: "node 1 (10.0.0.2:6379)"
	// scripts runs the scripts on rdb so that they return at their ctx's deadline (the node timeout), whatever
	// rdb's options (internal/bound); bounded does the same for other commands.
	scripts redis.Scripter
	bounded *bound.Client
}

// errClosed is returned by calls on a closed Client, and by Obtain calls that were waiting when it closed. It
// matches ErrInvalid, and keyward.ErrClosed like the waiters of lock/ do.
var errClosed error = closedError{}

type closedError struct{}

func (closedError) Error() string { return "redlock: client closed" }
func (closedError) Is(target error) bool {
	return target == keyward.ErrInvalid || target == keyward.ErrClosed
}

// New returns a Client that takes locks on the nodes, with opts as the defaults for every lock. Each node must
// be an independent Redis deployment (a server, or a Sentinel- or Cluster-managed one): the lock is held when a
// majority of them hold it, so it survives the loss of any minority. Use an odd number of nodes: 4 nodes
// tolerate one failure, like 3, and cost more.
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
		c.nodes = append(c.nodes, node{rdb: rdb, name: nodeName(i, rdb), scripts: b.Scripter(), bounded: b})
		c.all = append(c.all, i)
	}
	for i, n := range c.nodes {
		c.watchers[i] = watch.Attach(n.rdb, nil)
	}
	return c, nil
}

func sameClient(a, b redis.UniversalClient) bool {
	return reflect.TypeOf(a) == reflect.TypeOf(b) && reflect.TypeOf(a).Comparable() && a == b
}

func nodeName(i int, rdb redis.UniversalClient) string {
	var addr string
	switch r := rdb.(type) {
	case *redis.Client:
		addr = r.Options().Addr
	case *redis.ClusterClient:
		addr = "cluster " + strings.Join(r.Options().Addrs, ",")
	case *redis.Ring:
		addr = "ring"
	}
	if addr == "" {
		return fmt.Sprintf("node %d", i)
	}
	return fmt.Sprintf("node %d (%s)", i, addr)
}

// Nodes returns how many nodes the Client takes locks on.
func (c *Client) Nodes() int { return len(c.nodes) }

// Quorum returns how many nodes make a majority: len(nodes)/2 + 1.
func (c *Client) Quorum() int { return c.quorum }

// Close ends the Client: it ends its use of the pub/sub connections of the nodes' clients, which it shares with
// every other user of those clients (a connection is closed when its last user is; Obtain calls still waiting
// return an error matching ErrInvalid and ErrClosed), and waits until every call in progress has returned and
// the releases it sends in the background are done (each is bounded: by the node timeout, or at most 2 s for a
// clean-up). Later calls return an error matching ErrInvalid. Locks still held are not released: release them
// before. The nodes' clients belong to the caller and stay open.
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
	var errs []error
	for _, w := range watchers {
		errs = append(errs, w.Close())
	}
	c.work.Wait()
	return errors.Join(errs...)
}

// begin registers a call, so that Close waits for it; every goroutine the Client starts is counted while a call
// is registered, which keeps the count above zero whenever it grows. end undoes begin.
func (c *Client) begin() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errClosed
	}
	c.work.Add(1)
	return nil
}

func (c *Client) end() { c.work.Done() }

// watcher returns node i's use of the pub/sub connection of its client.
func (c *Client) watcher(i int) (*watch.Handle, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errClosed
	}
	return c.watchers[i], nil
}

// TryObtain takes the lock key for ttl if a majority of the nodes grant it, and never waits for another
// holder: it returns an error matching ErrNotObtained when others hold the lock on so many nodes that no
// majority is left, and one matching ErrQuorum when too few nodes answered in time or some refused.
//
// The acquire goes to every node at once, each bounded by the node timeout ([WithNodeTimeout]). It succeeds
// once a majority have taken the lock, without waiting for the others, and when validity is left: the lock is
// trusted until (time before sending) + ttl − drift, and an attempt that reaches it first has failed. The
// fencing token is agreed in the same round trip in the common case (see [Lock.Fence]).
//
// A failed attempt releases the lock on every node it may have taken it on, including nodes whose answer was
// lost (a timeout: the node may have run the acquire) and nodes that answer after the attempt was decided.
func (c *Client) TryObtain(ctx context.Context, key string, ttl time.Duration, opts ...Option) (*Lock, error) {
	if err := c.begin(); err != nil {
		return nil, err
	}
	defer c.end()
	a, err := c.newAttempt(ctx, key, ttl, opts)
	if err != nil {
		return nil, err
	}
	l, res := a.try(ctx, false)
	if l == nil {
		return nil, res.err
	}
	return l, nil
}

// attempt is one caller's attempt to take a lock: TryObtain's single try, or Obtain's tries.
type attempt struct {
	c       *Client
	key     string
	names   keys.Names
	ttl     time.Duration
	timeout time.Duration // per node
	opts    settings
}

func (c *Client) newAttempt(ctx context.Context, key string, ttl time.Duration, opts []Option) (*attempt, error) {
	o, err := c.opts.with(opts)
	if err != nil {
		return nil, err
	}
	name, err := o.Key(key)
	if err != nil {
		return nil, err
	}
	if ttl, err = o.TTL(ttl); err != nil {
		return nil, fmt.Errorf("redlock %q: %w", key, err)
	}
	if err := context.Cause(ctx); err != nil {
		return nil, retry.CtxErr(ctx)
	}
	return &attempt{c: c, key: key, names: keys.For(name), ttl: ttl, timeout: o.timeout(ttl), opts: o}, nil
}
