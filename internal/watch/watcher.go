package watch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/nilness"
)

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

// An Option is a preference for the pub/sub connections of a Watcher. The connections of a client are shared by
// every user of it (see Attach), so a Watcher runs with the preferences of all its users merged (see merge).
type Option func(*prefs)

// prefs are one user's preferences; a zero field has no preference.
type prefs struct {
	notifications bool
	healthCheck   time.Duration // > 0 when given
	probe         time.Duration // > 0: an interval; < 0: off; 0: not given
}

func newPrefs(opts []Option) prefs {
	var p prefs
	for _, o := range opts {
		if o != nil {
			o(&p)
		}
	}
	return p
}

// config is what a Watcher runs with: the preferences of its users merged, and the defaults where nobody gave one.
type config struct {
	enableNotifications bool
	healthCheck         time.Duration
	probe               time.Duration // < 0: no probe
}

// DefaultHealthCheck is how long, by default, a connection may stay silent before the Watcher pings the server
// (see WithHealthCheck).
const DefaultHealthCheck = 3 * time.Second

// DefaultProbe is how often, by default, a Watcher checks that its connections still hear what is published
// where the locks live (see WithProbe).
const DefaultProbe = 250 * time.Millisecond

// merge gives the configuration that serves every user: the most watchful of their preferences. Notifications
// are turned on when one user asks; the health check and the probe run at the shortest interval asked; the probe
// is off only when a user asked it off and none asked for an interval. Nobody's preference makes the waiting of
// another user slower or blind.
func merge(ps ...prefs) config {
	cfg := config{healthCheck: DefaultHealthCheck, probe: DefaultProbe}
	var hc, probe time.Duration
	off := false
	for _, p := range ps {
		cfg.enableNotifications = cfg.enableNotifications || p.notifications
		if p.healthCheck > 0 && (hc == 0 || p.healthCheck < hc) {
			hc = p.healthCheck
		}
		switch {
		case p.probe > 0 && (probe == 0 || p.probe < probe):
			probe = p.probe
		case p.probe < 0:
			off = true
		}
	}
	if hc > 0 {
		cfg.healthCheck = hc
	}
	switch {
	case probe > 0:
		cfg.probe = probe
	case off:
		cfg.probe = -1
	}
	return cfg
}

// WithNotifications turns keyspace notifications for del, expired and evicted on at the server when they are
// off (CONFIG SET notify-keyspace-events, merging "Kgxe" into the flags already set, never removing any), so
// that a key deleted by another tool, expired or evicted wakes waiters at once. On a cluster it does so at every
// master, and at each server the Watcher connects to later (a promoted replica, a new master). Default: off; a
// server whose notifications are already on is used as it is, and a refused CONFIG SET is not an error for
// waiters (release messages and timers still work); it is reported to the observers as an Error event.
func WithNotifications() Option {
	return func(p *prefs) { p.notifications = true }
}

// WithHealthCheck sets how long a connection may stay silent before the Watcher pings the server, and how
// long it waits for the answer before it reconnects and wakes every waiter. Default: 3 s.
func WithHealthCheck(d time.Duration) Option {
	return func(p *prefs) {
		if d > 0 {
			p.healthCheck = d
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
	return func(p *prefs) {
		if d != 0 {
			p.probe = d
		}
	}
}

// A Watcher wakes waiters on the keys of one Redis deployment. It is safe for concurrent use. It connects on the
// first Watch. It holds one pub/sub connection for a single server or a Sentinel-managed primary, and one per
// master for a cluster (keyspace notifications are local to the node that holds the key). The library's packages
// share one Watcher per client through Attach; New makes one of one's own.
type Watcher struct {
	rdb     redis.UniversalClient
	invalid error                // why rdb cannot be used (nil, or a typed nil): every Watch returns it
	cluster *redis.ClusterClient // rdb, when it is a cluster client
	cfg     atomic.Pointer[config]
	db      int
	id      string // names this Watcher's probe channels

	ctx  context.Context // ends with Close
	stop context.CancelFunc
	wg   sync.WaitGroup // every goroutine of the Watcher

	refs int // the Handles of the registry's Watcher that are not closed; guarded by registry.mu

	mu       sync.Mutex
	started  bool
	closed   bool
	own      prefs                // the preferences given to New
	users    map[*Handle]struct{} // the Handles attached and not closed
	conns    map[string]*conn     // by node address; "" for a client that is not a cluster client
	channels map[string]*channel  // the channels watches use, by name (probe channels are the connections')
	nodes    map[string]notifyFlags
	// probeOff is set once the probe was refused or proved useless (see probe.go): it stays off whatever the
	// configuration asks.
	probeOff bool
	// trustCount is false once a server's PUBLISH count proved not to describe this Watcher's subscriptions (a
	// proxy): only probes that go unheard count then.
	trustCount bool
	// noKeyspace is set when the server refused a keyspace channel: later watches subscribe none.
	noKeyspace bool
	conngen    uint64    // numbers the pub/sub connections, for their probe channels
	outbox     []pending // events for the observers, noted under mu (see flush)
}

// New returns a Watcher of its own for rdb, shared with nobody. It opens its connections on the first Watch. A
// nil rdb (or an interface holding a nil client) makes every Watch return an error matching keyward.ErrInvalid.
func New(rdb redis.UniversalClient, opts ...Option) *Watcher {
	w := newWatcher(rdb)
	w.own = newPrefs(opts)
	w.mu.Lock()
	w.configureLocked()
	w.mu.Unlock()
	return w
}

func newWatcher(rdb redis.UniversalClient) *Watcher {
	ctx, stop := context.WithCancel(context.Background())
	w := &Watcher{
		rdb: rdb, id: newID(), ctx: ctx, stop: stop, users: map[*Handle]struct{}{},
		conns: map[string]*conn{}, channels: map[string]*channel{}, nodes: map[string]notifyFlags{},
		trustCount: true,
	}
	cfg := merge()
	w.cfg.Store(&cfg)
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
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// config returns what the Watcher runs with now.
func (w *Watcher) config() *config { return w.cfg.Load() }

// configureLocked merges the preferences of New and of every attached user into the configuration. Turning
// notifications on reaches the connections already open at once (the watches that begin meanwhile wait for it);
// the other settings take effect at the next health check, probe or cluster check.
func (w *Watcher) configureLocked() {
	ps := []prefs{w.own}
	for h := range w.users {
		ps = append(ps, h.prefs)
	}
	cfg := merge(ps...)
	old := w.cfg.Swap(&cfg)
	if cfg.enableNotifications && !old.enableNotifications && w.started && !w.closed {
		for _, cn := range w.conns {
			cn.detecting = make(chan struct{})
			w.wg.Add(1)
			go cn.redetect(cn.detecting)
		}
	}
}

// probingLocked reports whether the connections probe: the configuration asks for it and nothing turned it off.
func (w *Watcher) probingLocked() bool { return w.config().probe > 0 && !w.probeOff }

// interval is the period of the probe and of the cluster check.
func (w *Watcher) interval() time.Duration {
	if p := w.config().probe; p > 0 {
		return p
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
// or ctx ends (an error of errs.Context), or the Watcher is closed (an error matching keyward.ErrClosed). The
// caller must Close the watch.
//
// When the server refuses the subscription to the key's release channel (an ACL user without permission for
// the channel), Watch returns an error matching keyward.ErrNoPermission that names the channel and wraps the
// server's error. A refused keyspace-notification channel is not an error: the Watcher stops subscribing to
// keyspace channels, and waiters rely on release messages and their timers.
func (w *Watcher) Watch(ctx context.Context, key string) (*Watch, error) {
	return w.watch(ctx, key, nil, false)
}

// watch is Watch for the user h (nil for the Watcher's own watches). With channel set, key is the name of a
// channel of keyward's scripts, watched alone (its messages are Released events), and subscribed on the
// connection of the cluster master that serves the slot of its hash tag.
func (w *Watcher) watch(ctx context.Context, key string, h *Handle, channel bool) (*Watch, error) {
	if key == "" {
		return nil, fmt.Errorf("%w: empty key", keyward.ErrInvalid)
	}
	if w.invalid != nil {
		return nil, w.invalid
	}
	if h != nil {
		w.mu.Lock()
		closed := h.closed
		w.mu.Unlock()
		if closed {
			return nil, closedErr(key)
		}
	}
	if err := w.start(ctx); err != nil {
		return nil, closedOr(err, key)
	}
	wt := &Watch{w: w, h: h, key: key, signal: make(chan struct{}, 1)}
	var cn *conn
	for {
		var err error
		if cn, err = w.connFor(ctx, key); err != nil {
			return nil, closedOr(err, key)
		}
		w.mu.Lock()
		if d := cn.detecting; d != nil {
			// A user asked for notifications: this watch gets a keyspace channel if the server now has them.
			w.mu.Unlock()
			select {
			case <-d:
			case <-ctx.Done():
				return nil, errs.Context(ctx, Source, "watch", key)
			}
			w.mu.Lock()
		}
		if w.closed || h != nil && h.closed {
			w.mu.Unlock()
			return nil, closedErr(key)
		}
		if w.conns[cn.addr] == cn {
			break // w.mu is held
		}
		w.mu.Unlock() // retired meanwhile (its node is no longer a master): ask again
	}
	if h != nil {
		h.watches[wt] = struct{}{}
	}
	if channel {
		wt.chans = append(wt.chans, w.addLocked(cn, key, releaseChannel, key, wt))
	} else {
		wt.chans = append(wt.chans, w.addLocked(cn, keys.For(key).Channel, releaseChannel, key, wt))
	}
	if !channel && cn.notify.any() && !w.noKeyspace {
		wt.chans = append(wt.chans, w.addLocked(cn, keys.KeyspaceChannel(w.db, key), keyspaceChannel, key, wt))
	}
	w.mu.Unlock()
	return w.await(ctx, wt)
}

// closedErr is the error of a watch of key that ended, or could not begin, because the Watcher or its user was
// closed.
func closedErr(key string) error { return errs.Closed(Source, "watch", key) }

// closedOr returns err, or the error of a Watch of key on a closed Watcher when err says it was closed.
func closedOr(err error, key string) error {
	if errors.Is(err, keyward.ErrClosed) {
		return closedErr(key)
	}
	return err
}

// await waits until every channel of wt is confirmed, or refused, or ctx ends, or the Watcher (or wt's user) is
// closed.
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
		closed := w.closed || wt.h != nil && wt.h.closed
		w.mu.Unlock()
		switch {
		case closed:
			wt.Close()
			return nil, closedErr(wt.key)
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
			return nil, errs.Context(ctx, Source, "watch", wt.key)
		}
	}
}

// start runs on the first Watch: it learns which keyspace notifications the server (each master of a cluster)
// sends, turning them on if asked, and starts the goroutines that are not a connection's.
func (w *Watcher) start(ctx context.Context) error {
	var problems []error
	defer func() {
		for _, err := range problems {
			w.emit(keyward.Error, err)
		}
	}()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return keyward.ErrClosed
	}
	if w.started {
		return nil
	}
	if w.cluster == nil {
		flags, _, err := w.detectNotifications(ctx, w.rdb)
		if err != nil {
			problems = append(problems, err)
		}
		w.nodes[""] = flags
		w.newConnLocked("", w.rdb, flags)
	} else {
		var mu sync.Mutex
		err := w.cluster.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			flags, ok, err := w.detectNotifications(ctx, node)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				problems = append(problems, err)
			}
			if ok {
				w.nodes[node.Options().Addr] = flags
			}
			return nil
		})
		if err != nil {
			// Not fatal: the connection to the master of each watched key is made when it is first needed.
			problems = append(problems, fmt.Errorf("keyspace: listing the cluster's masters: %w", err))
		}
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
			return nil, keyward.ErrClosed
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
		return nil, keyward.ErrClosed
	}
	if cn != nil {
		return cn, nil
	}
	flags, ok, problem := w.detectNotifications(ctx, node)
	if problem != nil {
		w.emit(keyward.Error, problem)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, keyward.ErrClosed
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
	var problems []error
	for _, cn := range w.conns {
		if cn.ps != nil {
			if err := cn.ps.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
				problems = append(problems, err)
			}
		}
	}
	for _, c := range w.channels {
		for wt := range c.watches {
			wt.end(Event{Kind: Closed}, closedErr(wt.key))
		}
	}
	w.mu.Unlock()
	w.wg.Wait()
	return errors.Join(problems...)
}
