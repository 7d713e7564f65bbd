package keyspace

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"
)

// notifyFlags says which keyspace notifications that wake waiters a server sends.
type notifyFlags struct{ del, expired, evicted bool }

func (n notifyFlags) any() bool { return n.del || n.expired || n.evicted }

// detectNotifications reads the keyspace notifications node sends, first turning the needed ones on when the
// Watcher was asked to. ok is false when the server would not say (a refused CONFIG: managed Redis, miniredis),
// which counts as off.
func (w *Watcher) detectNotifications(ctx context.Context, node redis.UniversalClient) (flags notifyFlags, ok bool) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.healthCheck)
	defer cancel()
	current, err := notifyConfig(ctx, node)
	if err != nil {
		return notifyFlags{}, false
	}
	if w.cfg.enableNotifications {
		merged := mergeFlags(current, "Kgxe")
		if merged != current && node.ConfigSet(ctx, "notify-keyspace-events", merged).Err() == nil {
			if f, err := notifyConfig(ctx, node); err == nil {
				current = f
			}
		}
	}
	return parseFlags(current), true
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
