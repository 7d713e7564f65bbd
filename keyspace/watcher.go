package keyspace

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
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
	// Reconnected: the pub/sub connection was lost and is subscribed again; messages may have been lost.
	Reconnected
	// Closed: the Watcher was closed; the watch receives nothing more.
	Closed
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
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// An Event is something that happened to a watched key.
type Event struct {
	Kind Kind
	// Payload is the release message, for Released events.
	Payload string
}

// An Option configures a Watcher.
type Option func(*config)

type config struct {
	enableNotifications bool
	healthCheck         time.Duration
}

// WithNotifications turns keyspace notifications for del, expired and evicted on at the server when they are
// off (CONFIG SET notify-keyspace-events, merging "Kgxe" into the flags already set, never removing any), so
// that a key deleted by another tool, expired or evicted wakes waiters at once. Default: off; a server whose
// notifications are already on is used as it is, and a refused CONFIG SET is not an error (release messages and
// timers still work).
func WithNotifications() Option {
	return func(c *config) { c.enableNotifications = true }
}

// WithHealthCheck sets how long the connection may stay silent before the Watcher pings the server, and how
// long it waits for the answer before it reconnects and wakes every waiter. Default: 3 s.
func WithHealthCheck(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.healthCheck = d
		}
	}
}

// A Watcher wakes waiters on the keys of one Redis deployment through one pub/sub connection. It is safe for
// concurrent use. Create one per client and share it; it connects on the first Watch.
type Watcher struct {
	rdb redis.UniversalClient
	cfg config
	db  int

	mu       sync.Mutex
	ps       *redis.PubSub // nil until the first Watch, and while reconnecting
	channels map[string]*channel
	started  bool
	closed   bool
	notify   notifyFlags   // what keyspace notifications the server sends
	done     chan struct{} // closed when the receive loop has returned
	stop     context.CancelFunc
}

type notifyFlags struct{ del, expired, evicted bool }

func (n notifyFlags) any() bool { return n.del || n.expired || n.evicted }

// subState is where a channel's subscription stands on the connection.
type subState int

const (
	subscribing   subState = iota // SUBSCRIBE sent, reply not yet received
	active                        // the server confirmed the subscription
	unsubscribing                 // UNSUBSCRIBE sent, reply not yet received
)

type channel struct {
	name  string
	state subState
	// ready is closed exactly while state is active: a watch that joins in any other state waits for the
	// confirmation of a SUBSCRIBE sent after it joined (or re-sent when an UNSUBSCRIBE in flight completes).
	ready chan struct{}
	// resubscribing is set while the channel is subscribed again after a reconnect: its confirmation wakes
	// every watch once more, closing the window between the Reconnected event and the new subscription.
	resubscribing bool
	watches       map[*Watch]struct{}
	keyOf         func(payload string) (Event, bool)
}

// New returns a Watcher for rdb. It opens its connection on the first Watch.
func New(rdb redis.UniversalClient, opts ...Option) *Watcher {
	cfg := config{healthCheck: 3 * time.Second}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	w := &Watcher{rdb: rdb, cfg: cfg, channels: map[string]*channel{}, done: make(chan struct{})}
	if c, ok := rdb.(*redis.Client); ok {
		w.db = c.Options().DB
	}
	return w
}

// KeyEvents reports whether the server sends keyspace notifications that wake waiters (known after the first
// Watch).
func (w *Watcher) KeyEvents() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.notify.any()
}

// Watch starts watching the lock key key and returns once the server has confirmed every subscription it needs,
// or ctx ends, or the Watcher is closed. The caller must Close the watch.
func (w *Watcher) Watch(ctx context.Context, key string) (*Watch, error) {
	if key == "" {
		return nil, fmt.Errorf("%w: empty key", keyward.ErrInvalid)
	}
	if err := w.start(ctx); err != nil {
		return nil, err
	}
	wt := &Watch{w: w, key: key, signal: make(chan struct{}, 1)}

	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, ErrClosed
	}
	wt.channels = w.channelNames(key)
	var ready []chan struct{}
	for _, name := range wt.channels {
		ready = append(ready, w.addLocked(name, wt, key))
	}
	w.mu.Unlock()

	for _, r := range ready {
		select {
		case <-r:
		case <-ctx.Done():
			wt.Close()
			return nil, context.Cause(ctx)
		case <-wt.signal:
			// Closed (or a Reconnected that will be followed by a new confirmation): look at the state again.
			if w.isClosed() {
				wt.Close()
				return nil, ErrClosed
			}
			// The SUBSCRIBE is pending again on the new connection; wait for its confirmation.
			return w.awaitAgain(ctx, wt)
		}
	}
	return wt, nil
}

// awaitAgain waits until every channel of wt is confirmed, after a reconnect interrupted the first wait.
func (w *Watcher) awaitAgain(ctx context.Context, wt *Watch) (*Watch, error) {
	for {
		w.mu.Lock()
		var pending chan struct{}
		for _, name := range wt.channels {
			if c := w.channels[name]; c != nil && c.state != active {
				pending = c.ready
				break
			}
		}
		closed := w.closed
		w.mu.Unlock()
		if closed {
			wt.Close()
			return nil, ErrClosed
		}
		if pending == nil {
			wt.take() // the reconnect is already accounted for by this confirmation
			return wt, nil
		}
		select {
		case <-pending:
		case <-wt.signal:
		case <-ctx.Done():
			wt.Close()
			return nil, context.Cause(ctx)
		}
	}
}

func (w *Watcher) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

// channelNames returns the channels to subscribe for key: the release channel, and the keyspace channel when the
// server sends keyspace notifications.
func (w *Watcher) channelNames(key string) []string {
	names := []string{keys.For(key).Channel}
	if w.notify.any() {
		names = append(names, keys.KeyspaceChannel(w.db, key))
	}
	return names
}

// addLocked registers wt on the channel name, subscribing when it is the first, and returns a channel that is
// closed once the subscription is confirmed.
func (w *Watcher) addLocked(name string, wt *Watch, key string) chan struct{} {
	c := w.channels[name]
	if c == nil {
		c = &channel{name: name, ready: make(chan struct{}), watches: map[*Watch]struct{}{}, keyOf: w.eventOf(name, key)}
		w.channels[name] = c
		w.sendLocked("SUBSCRIBE", c)
	}
	c.watches[wt] = struct{}{}
	return c.ready
}

// eventOf returns how a message on the channel name becomes an Event.
func (w *Watcher) eventOf(name, key string) func(string) (Event, bool) {
	if name != keys.KeyspaceChannel(w.db, key) {
		return func(p string) (Event, bool) { return Event{Kind: Released, Payload: p}, true }
	}
	n := w.notify
	return func(p string) (Event, bool) {
		switch {
		case p == "del" && n.del:
			return Event{Kind: Deleted}, true
		case p == "expired" && n.expired:
			return Event{Kind: Expired}, true
		case p == "evicted" && n.evicted:
			return Event{Kind: Evicted}, true
		}
		return Event{}, false
	}
}

// sendLocked sends SUBSCRIBE or UNSUBSCRIBE for c and records the state it leads to. A failed send is left to
// the receive loop, which reconnects and subscribes every channel again.
func (w *Watcher) sendLocked(cmd string, c *channel) {
	if c.state == active {
		c.ready = make(chan struct{})
	}
	if cmd == "SUBSCRIBE" {
		c.state = subscribing
	} else {
		c.state = unsubscribing
	}
	if w.ps == nil {
		return // reconnecting: the new connection subscribes every channel that has watches
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.healthCheck)
	defer cancel()
	var err error
	if cmd == "SUBSCRIBE" {
		err = w.ps.Subscribe(ctx, c.name)
	} else {
		err = w.ps.Unsubscribe(ctx, c.name)
	}
	if err != nil {
		w.ps.Close() // the receive loop sees the error and reconnects
	}
}

func (w *Watcher) removeLocked(wt *Watch) {
	for _, name := range wt.channels {
		c := w.channels[name]
		if c == nil {
			continue
		}
		delete(c.watches, wt)
		if len(c.watches) == 0 && c.state == active {
			w.sendLocked("UNSUBSCRIBE", c)
		}
	}
}

// start connects on the first call: it learns which keyspace notifications the server sends (turning them on
// if asked) and starts the receive loop.
func (w *Watcher) start(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if w.started {
		return nil
	}
	w.notify = w.detectNotifications(ctx)
	ps := w.rdb.Subscribe(ctx)
	w.ps = ps
	loopCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	w.stop = stop
	w.started = true
	go w.receive(loopCtx, ps)
	return nil
}

func (w *Watcher) detectNotifications(ctx context.Context) notifyFlags {
	flags, err := w.notifyConfig(ctx)
	if err != nil {
		return notifyFlags{}
	}
	if w.cfg.enableNotifications {
		merged := mergeFlags(flags, "Kgxe")
		if merged != flags && w.rdb.ConfigSet(ctx, "notify-keyspace-events", merged).Err() == nil {
			if f, err := w.notifyConfig(ctx); err == nil {
				flags = f
			}
		}
	}
	return parseFlags(flags)
}

func (w *Watcher) notifyConfig(ctx context.Context) (string, error) {
	m, err := w.rdb.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		return "", err
	}
	return m["notify-keyspace-events"], nil
}

// parseFlags reads notify-keyspace-events: keyspace events (K) for del (g), expired (x) and evicted (e); A is
// all of g$lshzxe.
func parseFlags(flags string) notifyFlags {
	if !strings.Contains(flags, "K") {
		return notifyFlags{}
	}
	all := strings.Contains(flags, "A")
	return notifyFlags{
		del:     all || strings.Contains(flags, "g"),
		expired: all || strings.Contains(flags, "x"),
		evicted: all || strings.Contains(flags, "e"),
	}
}

// mergeFlags adds the flags in want that flags lacks ("A" already covers g, x and e).
func mergeFlags(flags, want string) string {
	out := flags
	for _, f := range want {
		if strings.ContainsRune(out, f) || (strings.ContainsRune("gxe", f) && strings.Contains(out, "A")) {
			continue
		}
		out += string(f)
	}
	return out
}

// Close ends the connection, wakes every waiter with a Closed event and waits for the receive loop to return.
func (w *Watcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	started := w.started
	if w.stop != nil {
		w.stop()
	}
	var err error
	if w.ps != nil {
		err = w.ps.Close()
	}
	for _, c := range w.channels {
		for wt := range c.watches {
			wt.deliver(Event{Kind: Closed})
		}
	}
	w.mu.Unlock()
	if started {
		<-w.done
	}
	return err
}
