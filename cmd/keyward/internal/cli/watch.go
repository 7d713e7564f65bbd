package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/keys"
)

const watchUsage = `Usage: keyward watch [flags] KEY...

Prints what happens to each lock KEY as it happens, one line per event, until interrupted. It starts with the
lock's current state:

  15:04:05.120  nightly-report  held by host=web-2 pid=4242, ttl 9m52s
  15:04:07.311  nightly-report  released
  15:04:07.312  nightly-report  acquired by host=web-1 pid=977, ttl 10m0s
  15:14:07.950  nightly-report  expired: its holder did not refresh it in time

keyward's release script announces every release, on any server. Acquisitions, expiries and deletions by other
tools are seen only when the server sends keyspace notifications (notify-keyspace-events with K, $, g, x, e);
--notify turns them on. On a Cluster, watch subscribes on each master that serves a KEY, whose notifications
are its own; behind a Cluster or Sentinel URL it checks every 15s that these are still the masters, and
subscribes again after a failover.

Flags:
  --notify         turn on the keyspace notifications watch needs (CONFIG SET notify-keyspace-events, adding
                   K$gxe to the flags already set, never removing any); they stay on after watch ends
` + connHelp + `
Exit status: 0 interrupted (SIGINT, SIGTERM), 64 bad flags or URL, 69 Redis unreachable or failing, 77 Redis
refused the credentials.
`

// healthCheck is how long the subscription may stay silent before watch pings the server, and how long it waits
// for the answer before it reconnects.
const healthCheck = 15 * time.Second

// masterCheck is how often watch checks that the servers it subscribed to are still the masters. After a
// failover in which the old master lives on as a replica, a subscription to it goes on, and sees most events,
// which replicate; but not all: an expiry reaches a replica as a deletion. A variable for tests.
var masterCheck = healthCheck

// errMasterChanged ends a subscription to a server that is no longer the master.
var errMasterChanged = errors.New("the master changed (a failover)")

func watchCommand(ctx context.Context, env Env, args []string) error {
	var conn connFlags
	var notify bool
	fs := newFlagSet("watch")
	conn.register(fs)
	fs.BoolVar(&notify, "notify", false, "")
	names, err := parse(fs, args, -1)
	if done, err := help(env, watchUsage, err); done || err != nil {
		return err
	}
	if err := checkKeys(names, "keyward watch [flags] KEY..."); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	rdb, t, err := conn.connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()

	w := &watcher{env: env, rdb: rdb, where: t.where, cluster: t.cluster != nil, failover: t.failover != nil,
		notify: notify, keys: map[string]watched{}, pendingDel: map[string]bool{}, last: map[string]string{}}
	db := 0
	switch {
	case t.single != nil:
		db = t.single.DB
	case t.failover != nil:
		db = t.failover.DB
	}
	for _, k := range names {
		name := conn.prefix + k
		w.keys[k] = watched{key: k, name: name, release: keys.For(name).Channel, keyspace: keys.KeyspaceChannel(db, name)}
		w.order = append(w.order, k)
	}
	return w.run(ctx)
}

// Whether the server sends the keyspace notifications watch uses.
const (
	eventsOff     = "off"
	eventsOn      = "on"
	eventsUnknown = "unknown"
)

// keyspaceEvents finds out whether the server sends keyspace notifications for set, del, expired and evicted,
// turning them on first when asked.
func keyspaceEvents(ctx context.Context, env Env, rdb *redis.Client, enable bool) string {
	get := func() (string, error) {
		m, err := rdb.ConfigGet(ctx, "notify-keyspace-events").Result()
		return m["notify-keyspace-events"], err
	}
	flags, err := get()
	if err != nil {
		if enable {
			fmt.Fprintf(env.Stderr, "keyward watch: cannot read the server's notify-keyspace-events (%v): --notify ignored\n", err)
		}
		return eventsUnknown
	}
	if enable {
		merged := flags
		for _, f := range "K$gxe" {
			if !strings.ContainsRune(merged, f) && !(strings.ContainsRune("$gxe", f) && strings.Contains(merged, "A")) {
				merged += string(f)
			}
		}
		if merged != flags {
			if err := rdb.ConfigSet(ctx, "notify-keyspace-events", merged).Err(); err != nil {
				fmt.Fprintf(env.Stderr, "keyward watch: cannot turn keyspace notifications on (%v)\n", err)
			} else if f, err := get(); err == nil {
				flags = f
			}
		}
	}
	if strings.Contains(flags, "K") && (strings.Contains(flags, "A") || strings.Contains(flags, "$")) {
		return eventsOn
	}
	return eventsOff
}

// watched is a lock that watch follows.
type watched struct {
	key, name string
	// release is the channel of keyward's release messages, keyspace the channel of the key's keyspace
	// notifications.
	release, keyspace string
}

// A shard is one server that watch subscribes to, and the locks whose notifications it sends: the one server
// of a single-server URL or a Sentinel group's master, or one master of a Cluster, whose keyspace notifications
// are its own keys' only.
type shard struct {
	node *redis.Client
	keys []watched
}

// incoming is what one shard's subscription received: a message, or the error that ended it.
type incoming struct {
	ps  *redis.PubSub
	msg any
	err error
}

type watcher struct {
	env   Env
	rdb   redis.UniversalClient
	where string
	// cluster and failover say whether the URL names a Cluster or a Sentinel group.
	cluster, failover bool
	notify            bool   // --notify
	events            string // whether the servers send keyspace notifications, found at the first connection
	keys              map[string]watched
	order             []string // keys, as given
	// pendingDel marks keys whose keyspace "del" is waiting to learn whether the release script caused it.
	pendingDel map[string]bool
	// last is the value last seen under each key.
	last map[string]string
}

// run subscribes and prints events until ctx ends, subscribing again after a connection failure.
func (w *watcher) run(ctx context.Context) error {
	backoff := time.Duration(0)
	for first := true; ; first = false {
		subscribed, err := w.session(ctx, first)
		if ctx.Err() != nil {
			return nil
		}
		if first && !subscribed {
			return exitWith(exitFor(err), fmt.Errorf("subscribing: %v", explain(err)))
		}
		if subscribed {
			backoff = 0
		}
		if errors.Is(err, errMasterChanged) {
			fmt.Fprintln(w.env.Stderr, "keyward watch: the master changed (a failover); subscribing again")
		} else {
			fmt.Fprintf(w.env.Stderr, "keyward watch: connection lost (%v); reconnecting\n", err)
		}
		if c, ok := w.rdb.(*redis.ClusterClient); ok {
			c.ReloadState(ctx) // a failover may have moved a slot to another master
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// session subscribes on every shard, prints the locks' states, then their events until a subscription fails
// or ctx ends. It reports whether every subscription was confirmed.
func (w *watcher) session(ctx context.Context, first bool) (bool, error) {
	shards, err := w.shards(ctx)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var receivers sync.WaitGroup
	defer receivers.Wait()
	defer cancel()

	// Before subscribing: should a failover come in between, the subscription is to the new master, and the
	// next check only subscribes again.
	masters := make([]string, len(shards))
	for i, sh := range shards {
		masters[i] = w.masterID(ctx, sh)
	}
	subs := make([]*redis.PubSub, len(shards))
	for i, sh := range shards {
		var channels []string
		for _, k := range sh.keys {
			channels = append(channels, k.release, k.keyspace)
		}
		ps := sh.node.Subscribe(ctx, channels...)
		subs[i] = ps
		defer ps.Close()
		// A blocking read does not see ctx end: closing the connection ends it.
		defer context.AfterFunc(ctx, func() { _ = ps.Close() })()
		if err := w.confirm(ctx, ps, len(channels)); err != nil {
			return false, err
		}
	}
	if first {
		w.events = w.keyspaceEvents(ctx, shards)
		w.header()
	} else {
		fmt.Fprintln(w.env.Stderr, "keyward watch: reconnected")
	}
	if err := w.printStates(ctx); err != nil {
		return true, err
	}
	in := make(chan incoming)
	for _, ps := range subs {
		receivers.Go(func() { receive(ctx, ps, in) })
	}
	check := time.NewTicker(masterCheck)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, nil
		case <-check.C:
			for i, sh := range shards {
				if id := w.masterID(ctx, sh); masters[i] != "" && id != "" && id != masters[i] {
					return true, errMasterChanged
				}
			}
		case m := <-in:
			if m.err != nil {
				return true, m.err
			}
			if err := w.handle(ctx, m.ps, m.msg); err != nil {
				return true, err
			}
		}
	}
}

// shards groups the locks by the server that sends their notifications.
func (w *watcher) shards(ctx context.Context) ([]shard, error) {
	var all []watched
	for _, k := range w.order {
		all = append(all, w.keys[k])
	}
	c, ok := w.rdb.(*redis.ClusterClient)
	if !ok {
		return []shard{{node: w.rdb.(*redis.Client), keys: all}}, nil
	}
	var shards []shard
	index := map[*redis.Client]int{}
	for _, k := range all {
		node, err := c.MasterForKey(ctx, k.name)
		if err != nil {
			return nil, err
		}
		i, ok := index[node]
		if !ok {
			i = len(shards)
			index[node] = i
			shards = append(shards, shard{node: node})
		}
		shards[i].keys = append(shards[i].keys, k)
	}
	return shards, nil
}

// masterID identifies the master that sh's subscription is on, "" when that cannot be known: the node's role
// in a Cluster ("master", until a failover makes it a replica), the master's run_id behind a Sentinel URL. A
// single server does not change, and is not checked.
func (w *watcher) masterID(ctx context.Context, sh shard) string {
	ctx, cancel := context.WithTimeout(ctx, healthCheck)
	defer cancel()
	switch {
	case w.cluster:
		role, err := sh.node.Do(ctx, "ROLE").Slice()
		if err != nil || len(role) == 0 {
			return ""
		}
		return fmt.Sprint(role[0])
	case w.failover:
		info, err := sh.node.Info(ctx, "server").Result()
		if err != nil {
			return ""
		}
		for _, line := range strings.Split(info, "\n") {
			if id, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
				return id
			}
		}
	}
	return ""
}

// keyspaceEvents is whether every shard sends keyspace notifications: on when all do, off when one does not,
// unknown when one does not say.
func (w *watcher) keyspaceEvents(ctx context.Context, shards []shard) string {
	events := eventsOn
	for _, sh := range shards {
		switch keyspaceEvents(ctx, w.env, sh.node, w.notify) {
		case eventsOff:
			events = eventsOff
		case eventsUnknown:
			if events == eventsOn {
				events = eventsUnknown
			}
		}
	}
	return events
}

// confirm waits until the server confirmed n subscriptions: from then on, no event is missed.
func (w *watcher) confirm(ctx context.Context, ps *redis.PubSub, n int) error {
	for n > 0 {
		msg, err := ps.ReceiveTimeout(ctx, healthCheck)
		if err != nil {
			return err
		}
		if s, ok := msg.(*redis.Subscription); ok && s.Kind == "subscribe" {
			n--
		}
	}
	return nil
}

func (w *watcher) header() {
	what := "acquisitions, releases, expiries and deletions are shown"
	switch w.events {
	case eventsOff:
		what = "keyspace notifications are off, so only releases are shown (--notify turns them on)"
	case eventsUnknown:
		what = "the server's keyspace notifications are unknown (CONFIG GET refused): releases are shown, the rest if they are on"
	}
	fmt.Fprintf(w.env.Stderr, "keyward watch: watching %d lock(s) on %s; %s. Ctrl-C to stop.\n", len(w.order), w.where, what)
}

// printStates prints the current state of every lock: where the stream of events starts.
func (w *watcher) printStates(ctx context.Context) error {
	for _, k := range w.order {
		s, err := snapshot(ctx, w.rdb, k, w.keys[k].name)
		if err != nil {
			return err
		}
		w.last[k] = s.Value
		switch s.State {
		case stateHeld:
			w.print(k, "held by %s, ttl %s", holderOf(s), formatTTL(s.TTL))
		case stateFree:
			w.print(k, "free")
		default:
			w.print(k, "%s", s.describe())
		}
	}
	return nil
}

// receive passes on what ps receives until its connection fails or ctx ends, pinging the server when the
// subscription stays silent for a while.
func receive(ctx context.Context, ps *redis.PubSub, in chan<- incoming) {
	pass := func(m incoming) bool {
		select {
		case in <- m:
			return true
		case <-ctx.Done():
			return false
		}
	}
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, healthCheck)
		switch {
		case err == nil:
			pinged = false
			if !pass(incoming{ps: ps, msg: msg}) {
				return
			}
			continue
		case ctx.Err() != nil:
			return
		case isTimeout(err) && !pinged:
			// Silent for a while: the server answers a ping on this connection, or the connection is dead.
			if err = ps.Ping(ctx, "health"); err == nil {
				pinged = true
				continue
			}
		case isTimeout(err):
			err = errors.New("no answer to a ping")
		}
		pass(incoming{err: err})
		return
	}
}

func (w *watcher) handle(ctx context.Context, ps *redis.PubSub, msg any) error {
	switch m := msg.(type) {
	case *redis.Message:
		for _, k := range w.order {
			switch c := w.keys[k]; m.Channel {
			case c.release:
				w.released(c.key, m.Payload)
				return nil
			case c.keyspace:
				return w.keyspace(ctx, ps, c, m.Payload)
			}
		}
	case *redis.Pong:
		// The answer to the ping sent after a "del": any release message of the same script came before it.
		if key, ok := strings.CutPrefix(m.Payload, "del "); ok && w.pendingDel[key] {
			w.pendingDel[key] = false
			w.last[key] = ""
			w.print(key, "deleted by another client (not a keyward release)")
		}
	}
	return nil
}

// released prints a release announced by keyward's release script: "" when the lock was freed, "r <id> <ms>"
// when it was reserved for the first waiting process.
func (w *watcher) released(key, payload string) {
	w.pendingDel[key] = false
	if f := strings.Fields(payload); len(f) == 3 && f[0] == "r" {
		w.print(key, "released; reserved for the next waiting process for %s ms", f[2])
		return
	}
	w.last[key] = ""
	w.print(key, "released")
}

// keyspace prints a keyspace notification.
func (w *watcher) keyspace(ctx context.Context, ps *redis.PubSub, c watched, event string) error {
	switch event {
	case "set":
		s, err := snapshot(ctx, w.rdb, c.key, c.name)
		if err != nil {
			return err
		}
		prev := w.last[c.key]
		w.last[c.key] = s.Value
		switch {
		case s.State == stateReserved:
			// The release message that follows says it.
		case s.State == stateHeld && s.Value != prev:
			w.print(c.key, "acquired by %s, ttl %s", holderOf(s), formatTTL(s.TTL))
		case s.State == stateFree:
			w.print(c.key, "acquired, and already released")
		case s.State == stateOther:
			w.print(c.key, "overwritten by %s", s.describe())
		}
	case "del":
		// The release script deletes the key and then announces the release: ask the server for a pong, which
		// comes after that announcement if there is one, to tell a release from a DEL by another client.
		w.pendingDel[c.key] = true
		return ps.Ping(ctx, "del "+c.key)
	case "expired":
		if strings.HasPrefix(w.last[c.key], reservedPrefix) {
			w.print(c.key, "reservation expired: the waiting process did not claim the lock in time")
		} else {
			w.print(c.key, "expired: its holder did not refresh it in time")
		}
		w.last[c.key] = ""
	case "evicted":
		w.print(c.key, "evicted: the server reached maxmemory")
		w.last[c.key] = ""
	}
	return nil
}

func holderOf(s lockState) string {
	if s.Holder == "" {
		return "a holder without metadata"
	}
	return s.Holder
}

func (w *watcher) print(key, format string, args ...any) {
	fmt.Fprintf(w.env.Stdout, "%s  %s  %s\n", time.Now().Format("15:04:05.000"), key, fmt.Sprintf(format, args...))
}
