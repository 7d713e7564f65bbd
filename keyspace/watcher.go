package keyspace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/nilness"
)

// ErrClosed is returned by Watch after the Watcher was closed.
var ErrClosed = errors.New("keyspace: watcher closed")

// Kind says what an Event reports.
type Kind int

const (
	// Released: keyward's release script announced a release (or a hand-off) of the key; Payload is the message.
	Released Kind = iota + 1
	// Deleted: a keyspace notification says the key was deleted (DEL, UNLINK).
	Deleted
	// Expired: a keyspace notification says the key expired.
	Expired
	// Evicted: a keyspace notification says the key was evicted under maxmemory.
	Evicted
	// Reconnected: the pub/sub connection was lost (or found deaf by the probe, or the key moved to another
	// cluster master) and is subscribed again; messages may have been lost.
	Reconnected
	// Closed: the Watcher was closed; the watch receives nothing more.
	Closed
	// Failed: the server refused the subscription the watch needs (an ACL user without permission for the
	// channel); the watch receives nothing more, and Err says why (an error matching keyward.ErrNoPermission).
	Failed
)

func (k Kind) String() string {
	switch k {
	case Released:
		return "released"
	case Deleted:
		return "deleted"
	case Expired:
		return "expired"
	case Evicted:
		return "evicted"
	case Reconnected:
		return "reconnected"
	case Closed:
		return "closed"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// An Event is something that happened to a watched key.
type Event struct {
	Kind Kind
	// Payload is the release message, for Released events.
	Payload string
	// Err is why the watch failed, for Failed events.
	Err error
}

// An Option configures a Watcher.
type Option func(*config)

type config struct {
	enableNotifications bool
	healthCheck         time.Duration
	probe               time.Duration // < 0: no probe
}

// DefaultProbe is how often, by default, a Watcher checks that its connections still hear what is published
// where the locks live (see WithProbe).
const DefaultProbe = 250 * time.Millisecond

// WithNotifications turns keyspace notifications for del, expired and evicted on at the server when they are
// off (CONFIG SET notify-keyspace-events, merging "Kgxe" into the flags already set, never removing any), so
// that a key deleted by another tool, expired or evicted wakes waiters at once. On a cluster it does so at every
// master, and at each server the Watcher connects to later (a promoted replica, a new master). Default: off; a
// server whose notifications are already on is used as it is, and a refused CONFIG SET is not an error (release
// messages and timers still work).
func WithNotifications() Option {
	return func(c *config) { c.enableNotifications = true }
}

// WithHealthCheck sets how long a connection may stay silent before the Watcher pings the server, and how
// long it waits for the answer before it reconnects and wakes every waiter. Default: 3 s.
func WithHealthCheck(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.healthCheck = d
		}
	}
}

// WithProbe sets how often, while a connection has subscriptions, the Watcher publishes a probe through the
// client's command path (where the lock scripts run) on a channel that connection is subscribed to. A probe
// that is not heard on the connection, or that the server says nobody received, shows that the connection no
// longer hears what is published where the locks live — after a Sentinel failover, a DNS or proxy switch to a
// new primary — and the connection is rebuilt (every waiter gets Reconnected). On a cluster the same tick
// checks which master serves each watched key. A d < 0 turns the probe off (the cluster check keeps the default
// interval); 0 keeps the default. Default: 250 ms. A probe the server refuses (an ACL user without permission
// to publish on keyward:probe:*) turns the probe off for the Watcher; watching goes on.
func WithProbe(d time.Duration) Option {
	return func(c *config) {
		if d != 0 {
			c.probe = d
		}
	}
}

// A Watcher wakes waiters on the keys of one Redis deployment. It is safe for concurrent use. Create one per
// client and share it; it connects on the first Watch. It holds one pub/sub connection for a single server
// or a Sentinel-managed primary, and one per master for a cluster (keyspace notifications are local to the
// node that holds the key).
type Watcher struct {
	rdb     redis.UniversalClient
	invalid error                // why rdb cannot be used (nil, or a typed nil): every Watch returns it
	cluster *redis.ClusterClient // rdb, when it is a cluster client
	cfg     config
	db      int
	id      string // names this Watcher's probe channels

	ctx  context.Context // ends with Close
	stop context.CancelFunc
	wg   sync.WaitGroup // every goroutine of the Watcher

	mu       sync.Mutex
	started  bool
	closed   bool
	conns    map[string]*conn    // by node address; "" for a client that is not a cluster client
	channels map[string]*channel // the channels watches use, by name (probe channels are the connections')
	nodes    map[string]notifyFlags
	// probing is false once the probe was turned off, refused or proved useless (see probe.go).
	probing bool
	// trustCount is false once a server's PUBLISH count proved not to describe this Watcher's subscriptions (a
	// proxy): only probes that go unheard count then.
	trustCount bool
	// noKeyspace is set when the server refused a keyspace channel: later watches subscribe none.
	noKeyspace bool
	conngen    uint64 // numbers the pub/sub connections, for their probe channels
}

// New returns a Watcher for rdb. It opens its connections on the first Watch. A nil rdb (or an interface holding
// a nil client) makes every Watch return an error matching keyward.ErrInvalid.
func New(rdb redis.UniversalClient, opts ...Option) *Watcher {
	cfg := config{healthCheck: 3 * time.Second, probe: DefaultProbe}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	w := &Watcher{
		rdb: rdb, cfg: cfg, id: newID(), ctx: ctx, stop: stop,
		conns: map[string]*conn{}, channels: map[string]*channel{}, nodes: map[string]notifyFlags{},
		probing: cfg.probe > 0, trustCount: true,
	}
	if err := nilness.CheckClient(rdb); err != nil {
		w.invalid = fmt.Errorf("keyspace: %w", err)
		return w
	}
	switch c := rdb.(type) {
	case *redis.Client:
		w.db = c.Options().DB
	case *redis.ClusterClient:
		w.cluster = c
	}
	return w
}

func newID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// interval is the period of the probe and of the cluster check.
func (w *Watcher) interval() time.Duration {
	if w.cfg.probe > 0 {
		return w.cfg.probe
	}
	return DefaultProbe
}

// KeyEvents reports whether the server sends keyspace notifications that wake waiters (known after the first
// Watch); for a cluster, whether every master the Watcher knows of sends them.
func (w *Watcher) KeyEvents() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.noKeyspace || len(w.nodes) == 0 {
		return false
	}
	for _, n := range w.nodes {
		if !n.any() {
			return false
		}
	}
	return true
}

// Watch starts watching the lock key key and returns once the server has confirmed every subscription it needs,
// or ctx ends, or the Watcher is closed. The caller must Close the watch.
//
// When the server refuses the subscription to the key's release channel (an ACL user without permission for
// the channel), Watch returns an error matching keyward.ErrNoPermission that names the channel and wraps the
// server's error. A refused keyspace-notification channel is not an error: the Watcher stops subscribing to
// keyspace channels, and waiters rely on release messages and their timers.
func (w *Watcher) Watch(ctx context.Context, key string) (*Watch, error) {
	if key == "" {
		return nil, fmt.Errorf("%w: empty key", keyward.ErrInvalid)
	}
	if w.invalid != nil {
		return nil, w.invalid
	}
	if err := w.start(ctx); err != nil {
		return nil, err
	}
	wt := &Watch{w: w, key: key, signal: make(chan struct{}, 1)}
	var cn *conn
	for {
		var err error
		if cn, err = w.connFor(ctx, key); err != nil {
			return nil, err
		}
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			return nil, ErrClosed
		}
		if w.conns[cn.addr] == cn {
			break // w.mu is held
		}
		w.mu.Unlock() // retired meanwhile (its node is no longer a master): ask again
	}
	wt.chans = append(wt.chans, w.addLocked(cn, keys.For(key).Channel, releaseChannel, key, wt))
	if cn.notify.any() && !w.noKeyspace {
		wt.chans = append(wt.chans, w.addLocked(cn, keys.KeyspaceChannel(w.db, key), keyspaceChannel, key, wt))
	}
	w.mu.Unlock()
	return w.await(ctx, wt)
}

// await waits until every channel of wt is confirmed, or refused, or ctx ends, or the Watcher is closed.
func (w *Watcher) await(ctx context.Context, wt *Watch) (*Watch, error) {
	interrupted := false
	for {
		w.mu.Lock()
		var pending chan struct{}
		var refused error
		for _, c := range wt.chans {
			if c.err != nil {
				refused = c.err
				break
			}
			if c.state != active {
				pending = c.ready
				break
			}
		}
		closed := w.closed
		w.mu.Unlock()
		switch {
		case closed:
			wt.Close()
			return nil, ErrClosed
		case refused != nil:
			wt.Close()
			return nil, refused
		case pending == nil:
			if interrupted {
				wt.take() // a reconnect or a move while waiting: this confirmation accounts for it
			}
			return wt, nil
		}
		select {
		case <-pending:
		case <-wt.signal:
			interrupted = true
		case <-ctx.Done():
			wt.Close()
			return nil, context.Cause(ctx)
		}
	}
}

// start runs on the first Watch: it learns which keyspace notifications the server (each master of a cluster)
// sends, turning them on if asked, and starts the goroutines that are not a connection's.
func (w *Watcher) start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if w.started {
		return nil
	}
	if w.cluster == nil {
		flags, _ := w.detectNotifications(ctx, w.rdb)
		w.nodes[""] = flags
		w.newConnLocked("", w.rdb, flags)
	} else {
		var mu sync.Mutex
		_ = w.cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			flags, ok := w.detectNotifications(ctx, node)
			if ok {
				mu.Lock()
				w.nodes[node.Options().Addr] = flags
				mu.Unlock()
			}
			return nil
		})
		w.wg.Add(1)
		go w.followSlots()
	}
	w.started = true
	return nil
}

// connFor returns the connection on which key's channels are to be subscribed: the only one, or the one to the
// cluster master that serves key's slot.
func (w *Watcher) connFor(ctx context.Context, key string) (*conn, error) {
	if w.cluster == nil {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.closed {
			return nil, ErrClosed
		}
		return w.conns[""], nil
	}
	node, err := w.cluster.MasterForKey(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("keyspace: watch %q: no master for its slot: %w", key, err)
	}
	return w.connTo(ctx, node)
}

// connTo returns the connection to the cluster node node, creating it when there is none.
func (w *Watcher) connTo(ctx context.Context, node *redis.Client) (*conn, error) {
	addr := node.Options().Addr
	w.mu.Lock()
	cn, closed := w.conns[addr], w.closed
	w.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if cn != nil {
		return cn, nil
	}
	flags, ok := w.detectNotifications(ctx, node)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, ErrClosed
	}
	if ok {
		w.nodes[addr] = flags
	}
	if cn = w.conns[addr]; cn == nil {
		cn = w.newConnLocked(addr, node, flags)
	}
	return cn, nil
}

// Close ends the connections, wakes every waiter with a Closed event and waits for the Watcher's goroutines to
// return: a probe in flight ends with its reply or with the client's read timeout.
func (w *Watcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.stop()
	var errs []error
	for _, cn := range w.conns {
		if cn.ps != nil {
			if err := cn.ps.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	for _, c := range w.channels {
		for wt := range c.watches {
			wt.end(Event{Kind: Closed}, ErrClosed)
		}
	}
	w.mu.Unlock()
	w.wg.Wait()
	return errors.Join(errs...)
}
