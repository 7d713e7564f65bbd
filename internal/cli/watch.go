package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/keys"
)

const watchUsage = `Usage: keyward watch [flags] KEY...

Prints what happens to each lock KEY as it happens, one line per event, until interrupted. It starts with the
lock's current state:

  15:04:05.120  nightly-report  held by host=web-2 pid=4242, fence 1767225600123456, ttl 9m52s
  15:04:07.311  nightly-report  released
  15:04:07.312  nightly-report  acquired by host=web-1 pid=977, fence 1767225600123457, ttl 10m0s
  15:14:07.950  nightly-report  expired: its holder did not refresh it in time

keyward's release script announces every release, on any server. Acquisitions, expiries and deletions by other
tools are seen only when the server sends keyspace notifications (notify-keyspace-events with K, $, g, x, e);
--notify turns them on.

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
	rdb, err := conn.connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()

	w := &watcher{env: env, rdb: rdb, channels: map[string]watched{}, pendingDel: map[string]bool{}, last: map[string]string{}}
	w.events = keyspaceEvents(ctx, env, rdb, notify)
	for _, k := range names {
		name := conn.prefix + k
		w.channels[keys.For(name).Channel] = watched{key: k, name: name, release: true}
		if w.events != eventsOff {
			w.channels[keys.KeyspaceChannel(rdb.Options().DB, name)] = watched{key: k, name: name}
		}
		w.order = append(w.order, k)
		w.names = append(w.names, name)
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

// watched is the lock a channel belongs to.
type watched struct {
	key, name string
	release   bool // the release channel (else the keyspace channel)
}

type watcher struct {
	env      Env
	rdb      *redis.Client
	events   string
	channels map[string]watched
	order    []string // keys, as given
	names    []string // their Redis names
	// pendingDel marks keys whose keyspace "del" is waiting to learn whether the release script caused it.
	pendingDel map[string]bool
	// last is the value last seen under each key.
	last map[string]string
}

// run subscribes and prints events until ctx ends, subscribing again after a connection failure.
func (w *watcher) run(ctx context.Context) error {
	var channels []string
	for c := range w.channels {
		channels = append(channels, c)
	}
	backoff := time.Duration(0)
	for first := true; ; first = false {
		ps := w.rdb.Subscribe(ctx, channels...)
		// A blocking read does not see ctx end: closing the connection ends it.
		unblock := context.AfterFunc(ctx, func() { _ = ps.Close() })
		err := w.confirm(ctx, ps, len(channels))
		if err == nil {
			backoff = 0
			if first {
				w.header()
			} else {
				fmt.Fprintln(w.env.Stderr, "keyward watch: reconnected")
			}
			if err = w.printStates(ctx); err == nil {
				err = w.receive(ctx, ps)
			}
		}
		unblock()
		_ = ps.Close()
		if ctx.Err() != nil {
			return nil
		}
		if first {
			return exitWith(exitFor(err), fmt.Errorf("subscribing: %v", err))
		}
		fmt.Fprintf(w.env.Stderr, "keyward watch: connection lost (%v); reconnecting\n", err)
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
	fmt.Fprintf(w.env.Stderr, "keyward watch: watching %d lock(s) at %s; %s. Ctrl-C to stop.\n", len(w.order), w.rdb.Options().Addr, what)
}

// printStates prints the current state of every lock: where the stream of events starts.
func (w *watcher) printStates(ctx context.Context) error {
	for i, k := range w.order {
		s, err := snapshot(ctx, w.rdb, k, w.names[i])
		if err != nil {
			return err
		}
		w.last[k] = s.Value
		switch s.State {
		case stateHeld:
			w.print(k, "held by %s, fence %d, ttl %s", holderOf(s), s.Fence, formatTTL(s.TTL))
		case stateFree:
			w.print(k, "free")
		default:
			w.print(k, "%s", s.describe())
		}
	}
	return nil
}

// receive prints events until the connection fails or ctx ends.
func (w *watcher) receive(ctx context.Context, ps *redis.PubSub) error {
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, healthCheck)
		switch {
		case err == nil:
			pinged = false
			if err := w.handle(ctx, ps, msg); err != nil {
				return err
			}
			continue
		case ctx.Err() != nil:
			return nil
		case isTimeout(err) && !pinged:
			// Silent for a while: the server answers a ping on this connection, or the connection is dead.
			if err := ps.Ping(ctx, "health"); err != nil {
				return err
			}
			pinged = true
			continue
		case isTimeout(err):
			return errors.New("no answer to a ping")
		}
		return err
	}
}

func (w *watcher) handle(ctx context.Context, ps *redis.PubSub, msg any) error {
	switch m := msg.(type) {
	case *redis.Message:
		c, ok := w.channels[m.Channel]
		if !ok {
			return nil
		}
		if c.release {
			w.released(c.key, m.Payload)
			return nil
		}
		return w.keyspace(ctx, ps, c, m.Payload)
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
			w.print(c.key, "acquired by %s, fence %d, ttl %s", holderOf(s), s.Fence, formatTTL(s.TTL))
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
