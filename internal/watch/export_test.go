package watch

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// Shared returns the Watcher the registry holds for rdb, nil when none.
func Shared(rdb redis.UniversalClient) *Watcher {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	return registry.m[rdb]
}

// Watcher returns the Watcher of the Handle.
func (h *Handle) Watcher() *Watcher { return h.w }

// Settings returns what the Watcher runs with: notifications asked for, health check, probe interval (< 0: off).
func (w *Watcher) Settings() (notifications bool, healthCheck, probe time.Duration) {
	c := w.config()
	return c.enableNotifications, c.healthCheck, c.probe
}
