package watch

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
)

// On a cluster, keyspace notifications are local to the node that holds the key, so the Watcher keeps one
// pub/sub connection per master (made from the master's client in the ClusterClient, which dials that node) and
// subscribes a key's channels on the connection of the master that serves the key's slot. Release messages are
// broadcast by the cluster and would be heard anywhere; they follow the key all the same, so that one
// connection carries everything about a key.
//
// Slots move (a failover promotes a replica, a resharding migrates slots): every probe interval, while there are
// subscriptions, followSlots reloads go-redis's view of the cluster — the view the lock scripts are routed by —
// and moves the channels of every key whose master changed: UNSUBSCRIBE on the old connection, SUBSCRIBE on the
// new one, Reconnected to the key's watches at once (a notification on the new master may have come before the
// move) and again when the new subscription is confirmed. A connection left without channels on a node that is
// no longer a master is closed.

// followSlots runs checkSlots every interval until the Watcher is closed.
func (w *Watcher) followSlots() {
	defer w.wg.Done()
	every := w.interval()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
			w.checkSlots()
			w.flush()
			if d := w.interval(); d != every {
				every = d
				t.Reset(d)
			}
		}
	}
}

// checkSlots moves the channels of the keys whose slot another master serves now.
func (w *Watcher) checkSlots() {
	w.mu.Lock()
	slots := map[int]string{} // a watched key of each slot
	for _, c := range w.channels {
		if len(c.watches) > 0 {
			slots[keys.Slot(c.key)] = c.key
		}
	}
	w.mu.Unlock()
	if len(slots) == 0 {
		return
	}

	ctx, cancel := context.WithTimeout(w.ctx, w.config().healthCheck)
	defer cancel()
	// ForEachMaster reloads the cluster's slot map (CLUSTER SLOTS) before it runs.
	var mu sync.Mutex
	masters := map[string]bool{}
	err := w.cluster.ForEachMaster(ctx, func(_ context.Context, node *redis.Client) error {
		mu.Lock()
		masters[node.Options().Addr] = true
		mu.Unlock()
		return nil
	})
	if err != nil {
		return
	}
	target := map[int]*conn{}
	for slot, key := range slots {
		node, err := w.cluster.MasterForKey(ctx, key)
		if err != nil {
			continue
		}
		cn, err := w.connTo(ctx, node)
		if err != nil {
			return
		}
		target[slot] = cn
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	moved := 0
	for _, c := range w.channels {
		to := target[keys.Slot(c.key)]
		if to == nil || to == c.conn || len(c.watches) == 0 || w.conns[to.addr] != to {
			continue
		}
		w.moveLocked(c, to)
		moved++
	}
	if moved > 0 {
		w.noteLocked(keyward.Reconnected, fmt.Errorf("keyspace: %d watched channels moved to the master that "+
			"serves their slot now", moved))
	}
	for addr, cn := range w.conns {
		if cn.count == 0 && !masters[addr] {
			cn.closeLocked()
			delete(w.conns, addr)
			delete(w.nodes, addr)
		}
	}
}

// closeLocked retires the connection, which has no channel left: its goroutines return. The error of the Close
// itself is of no use to anyone (nothing is watched on it).
func (c *conn) closeLocked() {
	c.retire()
	if c.ps != nil {
		_ = c.ps.Close()
	}
}
