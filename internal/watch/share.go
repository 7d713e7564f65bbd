package watch

import (
	"context"
	"reflect"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/nilness"
	"github.com/keyward/keyward/internal/observe"
)

// Source is the Source of the events a Watcher passes to its users' observers.
const Source = "keyspace"

// The registry holds one Watcher per client, shared by every user of that client: the lock.Clients, the nodes of
// redlock.Clients, the semaphores and election observers, and the public keyspace.Watchers. A client is its
// redis.UniversalClient value (the pointer the user built), so two users of one client share one pub/sub
// connection (one per master on a cluster), and users of two clients do not, even to the same server.
var registry = struct {
	mu     sync.Mutex
	m      map[redis.UniversalClient]*Watcher
	routes map[redis.UniversalClient]redis.UniversalClient // see Redirect
}{m: map[redis.UniversalClient]*Watcher{}, routes: map[redis.UniversalClient]redis.UniversalClient{}}

// Redirect makes the users of the client from that attach from now on share the Watcher of the client to instead:
// their pub/sub connection, probes and CONFIG commands go where to connects, while their commands go where from
// does. It is for the fault harness, whose waiters hear releases on a path that its faults do not slow. undo
// removes the redirection for later users; users attached meanwhile keep to's Watcher until they close.
func Redirect(from, to redis.UniversalClient) (undo func()) {
	if nilness.Is(from) || !hashable(from) {
		return func() {}
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	registry.routes[from] = to
	return func() {
		registry.mu.Lock()
		defer registry.mu.Unlock()
		if registry.routes[from] == to {
			delete(registry.routes, from)
		}
	}
}

// A Handle is one user's attachment to the Watcher of its client. Its watches are its own: closing the Handle
// ends them (their owners hear Closed) and leaves the other users' watches as they are. The last Handle of a
// Watcher to close closes the Watcher: its connections, and every goroutine.
type Handle struct {
	w       *Watcher
	obs     keyward.Observer
	prefs   prefs
	private bool // w is this Handle's alone: a client that cannot be shared (nil, or not comparable)

	// Guarded by w.mu:
	closed  bool
	watches map[*Watch]struct{}
}

// Attach attaches a user to the Watcher of rdb, creating it on first use (it connects on the first Watch). o
// receives the Watcher's Reconnected and Error events, with Source "keyspace", while the Handle is open; nil
// receives nothing. opts are the user's preferences for the connections: the Watcher runs with those of every
// user merged (the most watchful: see WithNotifications, WithHealthCheck, WithProbe), from the moment they
// attach until they close. A nil rdb (or an interface holding a nil client) gives a Handle whose every Watch
// returns an error matching keyward.ErrInvalid. A client whose type cannot be a map key (a user's own
// implementation of redis.UniversalClient as a struct value holding a slice) gets a Watcher of the Handle's own.
func Attach(rdb redis.UniversalClient, o keyward.Observer, opts ...Option) *Handle {
	h := &Handle{obs: o, prefs: newPrefs(opts), watches: map[*Watch]struct{}{}}
	if nilness.CheckClient(rdb) != nil || !hashable(rdb) {
		h.w, h.private = newWatcher(rdb), true
		h.w.join(h)
		return h
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if to, ok := registry.routes[rdb]; ok {
		rdb = to
	}
	w := registry.m[rdb]
	if w == nil {
		w = newWatcher(rdb)
		registry.m[rdb] = w
	}
	w.refs++
	h.w = w
	w.join(h)
	return h
}

// join adds h to the Watcher's users.
func (w *Watcher) join(h *Handle) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.users[h] = struct{}{}
	w.configureLocked()
}

// Watch is Watcher.Watch for this user: closing the Handle ends the watch. After Close it returns an error
// matching keyward.ErrClosed.
func (h *Handle) Watch(ctx context.Context, key string) (*Watch, error) {
	return h.w.watch(ctx, key, h, false)
}

// WatchChannel is Watch for one channel that keyward's scripts publish on, named in full (with the hash tag of
// the keys it concerns, which places it on a cluster): no keyspace notifications, and no key derived from a
// name that is no key. Its messages are Released events.
func (h *Handle) WatchChannel(ctx context.Context, channel string) (*Watch, error) {
	return h.w.watch(ctx, channel, h, true)
}

// KeyEvents is Watcher.KeyEvents.
func (h *Handle) KeyEvents() bool { return h.w.KeyEvents() }

// Close detaches the user: its watches end with a Closed event (their channels are unsubscribed when no other
// user watches them), its observer hears nothing more, and its preferences no longer count. The last user's
// Close closes the Watcher and returns what that returns, which it also passes to the user's observer as an
// Error event (callers that have nobody to return it to may drop it). Close is idempotent.
func (h *Handle) Close() error {
	err := h.close()
	if err != nil {
		notify([]keyward.Observer{h.obs}, keyward.Error, err)
	}
	return err
}

func (h *Handle) close() error {
	w := h.w
	w.mu.Lock()
	if h.closed {
		w.mu.Unlock()
		return nil
	}
	h.closed = true
	for wt := range h.watches {
		w.removeLocked(wt)
		wt.end(Event{Kind: Closed}, closedErr(wt.key))
	}
	h.watches = nil
	delete(w.users, h)
	w.configureLocked()
	w.mu.Unlock()

	if h.private {
		return w.Close()
	}
	registry.mu.Lock()
	w.refs--
	last := w.refs == 0
	if last && registry.m[w.rdb] == w {
		delete(registry.m, w.rdb)
	}
	registry.mu.Unlock()
	if last {
		return w.Close()
	}
	return nil
}

// observers returns the observers of the users attached now.
func (w *Watcher) observers() []keyward.Observer {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.observersLocked()
}

// An observer given by several users (a program that passes one to its lock.Client, its semaphores and its
// election) hears each event once, when it can be compared (a pointer, a comparable value); one that cannot (a
// func, observe.Join's list) is called once per user that gave it.
func (w *Watcher) observersLocked() []keyward.Observer {
	var os []keyward.Observer
	seen := map[keyward.Observer]bool{}
	for h := range w.users {
		o := h.obs
		if o == nil {
			continue
		}
		if hashable(o) {
			if seen[o] {
				continue
			}
			seen[o] = true
		}
		os = append(os, o)
	}
	return os
}

// A pending is an event for the observers, noted while w.mu was held and passed on by flush.
type pending struct {
	to   []keyward.Observer
	kind keyward.EventKind
	err  error
}

// noteLocked notes an event for the observers of the users attached now; flush passes it on once w.mu is
// released (observers are never called with a mutex of the Watcher held).
func (w *Watcher) noteLocked(kind keyward.EventKind, err error) {
	w.outbox = append(w.outbox, pending{w.observersLocked(), kind, err})
}

// flush passes on the events noted.
func (w *Watcher) flush() {
	w.mu.Lock()
	out := w.outbox
	w.outbox = nil
	w.mu.Unlock()
	for _, p := range out {
		notify(p.to, p.kind, p.err)
	}
}

// hashable reports whether v can be a map key: a comparable type whose value holds nothing that is not (a struct
// of comparable type can hold a func or a slice in an interface field, and hashing it panics).
func hashable(v any) (ok bool) {
	if !reflect.TypeOf(v).Comparable() {
		return false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	_ = map[any]struct{}{v: {}}
	return true
}

// emit passes an event of kind with err to the observer of every user. It must not be called with w.mu held.
func (w *Watcher) emit(kind keyward.EventKind, err error) {
	notify(w.observers(), kind, err)
}

// notify passes an event of kind with err to os.
func notify(os []keyward.Observer, kind keyward.EventKind, err error) {
	e := keyward.Event{Kind: kind, Source: Source, Err: err}
	for _, o := range os {
		observe.Emit(context.Background(), o, e)
	}
}
