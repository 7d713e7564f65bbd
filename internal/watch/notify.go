package watch

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
)

// notifyFlags says which keyspace notifications that wake waiters a server sends.
type notifyFlags struct{ del, expired, evicted bool }

func (n notifyFlags) any() bool { return n.del || n.expired || n.evicted }

// detectNotifications reads the keyspace notifications node sends, first turning the needed ones on when the
// Watcher was asked to. ok is false when the server would not say (a refused CONFIG: managed Redis, miniredis),
// which counts as off. problem says why notifications asked for could not be turned on (a refused CONFIG GET or
// CONFIG SET): not an error for waiters, who keep release messages and timers, but one for the observers.
func (w *Watcher) detectNotifications(ctx context.Context, node redis.UniversalClient) (flags notifyFlags, ok bool, problem error) {
	cfg := w.config()
	ctx, cancel := context.WithTimeout(ctx, cfg.healthCheck)
	defer cancel()
	current, err := notifyConfig(ctx, node)
	if err != nil {
		if cfg.enableNotifications {
			problem = fmt.Errorf("keyspace: reading notify-keyspace-events at %s: %w", nodeName(node), err)
		}
		return notifyFlags{}, false, problem
	}
	if cfg.enableNotifications {
		if merged := mergeFlags(current, "Kgxe"); merged != current {
			if err := node.ConfigSet(ctx, "notify-keyspace-events", merged).Err(); err != nil {
				problem = fmt.Errorf("keyspace: turning keyspace notifications on at %s: %w", nodeName(node), err)
			} else if f, err := notifyConfig(ctx, node); err == nil {
				current = f
			}
		}
	}
	return parseFlags(current), true, problem
}

// nodeName names node in errors: its address, when it has one.
func nodeName(node redis.UniversalClient) string {
	if c, ok := node.(*redis.Client); ok && c.Options().Addr != "" {
		return c.Options().Addr
	}
	return "the server"
}

// redetect reads the connection's server's notifications again, after a user asked for them (WithNotifications)
// while the connection was open, and closes done: keys watched from then on get their keyspace channel.
func (c *conn) redetect(done chan struct{}) {
	w := c.w
	defer w.wg.Done()
	flags, ok, problem := w.detectNotifications(c.ctx, c.node)
	if problem != nil && c.ctx.Err() == nil {
		w.emit(keyward.Error, problem)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if ok && c.ctx.Err() == nil && w.conns[c.addr] == c {
		c.notify = flags
		w.nodes[c.addr] = flags
	}
	if c.detecting == done {
		c.detecting = nil
	}
	close(done)
}

func notifyConfig(ctx context.Context, node redis.UniversalClient) (string, error) {
	m, err := node.ConfigGet(ctx, "notify-keyspace-events").Result()
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

// keyspaceEvent turns a keyspace notification into an Event; other operations on the key (set, expire, ...)
// wake nobody.
func keyspaceEvent(op string) (Event, bool) {
	switch op {
	case "del":
		return Event{Kind: Deleted}, true
	case "expired":
		return Event{Kind: Expired}, true
	case "evicted":
		return Event{Kind: Evicted}, true
	}
	return Event{}, false
}
