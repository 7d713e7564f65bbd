package keyspace

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
	"github.com/keyward/keyward/internal/watch"
)

// A Watcher watches keys through the pub/sub connection of its Redis client, which it shares with every other
// Watcher, lock, semaphore and election observer of the same client. It is safe for concurrent use.
type Watcher struct {
	h *watch.Handle
}

// New returns a Watcher on the shared pub/sub connection of rdb (a *redis.Client, a Sentinel failover client or
// a *redis.ClusterClient, with go-redis's default options or the user's own). It does not talk to Redis: the
// connection is opened by the first Watch of any of its users. A nil rdb (also a typed nil such as a nil
// *redis.Client) makes every Watch return an error matching keyward.ErrInvalid.
//
// The options are preferences for the shared connection, and it runs with those of all its open users merged:
// the most watchful wins, whatever the order in which they were given. Notifications are turned on when one user
// asks ([WithNotifications]); the health check and the probe run at the shortest interval asked; the probe is
// off only when a user turned it off and none asked for an interval. A Watcher's preferences count from New until
// its Close.
func New(rdb redis.UniversalClient, opts ...Option) *Watcher {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return &Watcher{h: watch.Attach(rdb, c.observer, c.watch...)}
}

// Watch starts watching key: the release channel of a keyward lock named key (with the lock.Client's prefix, as
// the lock is stored) and, when the server sends keyspace notifications, the key's own notifications. It
// returns once the server has confirmed the subscription. The caller must Close the watch.
//
// It returns an error matching keyward.ErrInvalid for a nil ctx, an empty key or a nil client,
// keyward.ErrNoPermission when the server refuses the subscription to the release channel (an ACL user without
// &*:released: the error names the channel), keyward.ErrClosed after Close, and one matching ctx's error (and its
// cause) when ctx ends first. A refused keyspace-notification channel is not an error: watches then hear release
// messages only.
func (w *Watcher) Watch(ctx context.Context, key string) (*Watch, error) {
	if ctx == nil {
		return nil, errs.NilContext("keyspace", "watch", key)
	}
	wt, err := w.h.Watch(ctx, key)
	if err != nil {
		return nil, err
	}
	return newWatch(wt), nil
}

// Close ends the Watcher's watches (their Wait returns an error matching keyward.ErrClosed) and its use of the
// shared connection, which is closed when no other user is left; other users of the client are not disturbed.
// Its preferences and observer no longer count. A second Close returns nil.
func (w *Watcher) Close() error { return w.h.Close() }

// An Option is a preference of a Watcher for the shared connection, or its observer.
type Option func(*config)

type config struct {
	watch    []watch.Option
	observer keyward.Observer
}

// WithNotifications turns keyspace notifications for del, expired and evicted on at the server when they are off
// (CONFIG SET notify-keyspace-events, adding "Kgxe" to the flags already set, never removing any), so that a key
// deleted by another tool, expired or evicted wakes its watches at once — the watches of locks and semaphores too,
// since the connection is shared. On a cluster it does so at every master, and at each server connected to later
// (a promoted replica). Server settings are not undone when the Watcher is closed. A refused CONFIG (managed
// Redis, an ACL user without +config|set) leaves notifications as they are; the observer hears it as an Error
// event. Default: the server's notifications are used as they are.
func WithNotifications() Option {
	return func(c *config) { c.watch = append(c.watch, watch.WithNotifications()) }
}

// WithHealthCheck sets how long the connection may stay silent before it pings the server, and how long it then
// waits for the answer before it reconnects (every watch hears Reconnected). A d <= 0 keeps the default: 3 s.
func WithHealthCheck(d time.Duration) Option {
	return func(c *config) { c.watch = append(c.watch, watch.WithHealthCheck(d)) }
}

// WithProbe sets how often, while the connection has subscriptions, a probe is published through the client's
// command path (where locks are taken) and must be heard on the connection. A probe nobody receives, or that goes
// unheard, shows a connection that answers but no longer hears what is published where the locks live — after a
// Sentinel failover, or a DNS or proxy switch to a new primary — and the connection is rebuilt. A d < 0 turns the
// probe off, 0 keeps the default: 250 ms. An ACL user needs &keyward:probe:* for it; without, the probe turns
// itself off and watching goes on.
func WithProbe(d time.Duration) Option {
	return func(c *config) { c.watch = append(c.watch, watch.WithProbe(d)) }
}

// WithObserver gives the observer that hears, with Source "keyspace", each time the shared connection was rebuilt
// or a watched key moved to another cluster master (Reconnected, Err saying why), and the problems the connection
// handled in the background (Error: notifications that could not be turned on, a probe refused). It hears them
// while the Watcher is open, whichever user's watches are concerned. lock, redlock, semaphore and election pass
// the observer given to their own WithObserver the same way.
func WithObserver(o keyward.Observer) Option {
	return func(c *config) { c.observer = o }
}
