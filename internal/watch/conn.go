package watch

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// chanKind says what a channel carries.
type chanKind int

const (
	releaseChannel  chanKind = iota // keyward's release messages for a key
	keyspaceChannel                 // the server's keyspace notifications for a key
	probeChannel                    // a connection's own probes
)

// subState is where a channel's subscription stands on its connection.
type subState int

const (
	subscribing   subState = iota // SUBSCRIBE sent (or to be sent once reconnected), reply not yet received
	active                        // the server confirmed the subscription
	unsubscribing                 // UNSUBSCRIBE sent, reply not yet received
)

// A channel is one subscription shared by the watches of a key. Its fields are guarded by Watcher.mu.
type channel struct {
	name string
	kind chanKind
	key  string
	conn *conn // the connection it is subscribed on (or being subscribed on)

	state subState
	// ready is closed exactly while state is active (and when the server refused the channel): a watch that joins
	// in any other state waits for the confirmation of a SUBSCRIBE sent after it joined.
	ready chan struct{}
	// latest is the last command sent for the channel on conn whose reply is due, or nil. Only its reply changes
	// the state: with SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE in flight, the first confirmation arrives while the
	// server is about to unsubscribe, and a watcher that trusted it would tell a waiter "subscribed" when it is
	// not.
	latest *command
	// resubscribing is set while the channel is subscribed again after a reconnect or a move: its confirmation
	// wakes every watch once more, closing the window between the Reconnected event and the new subscription.
	resubscribing bool
	// err is set when the server refused the channel (ACL); the channel is then no longer in Watcher.channels.
	err     error
	watches map[*Watch]struct{}
}

// A command is a SUBSCRIBE, UNSUBSCRIBE or PING sent on a connection whose replies are due. The server answers
// the commands of a connection in order, one reply per channel for (UN)SUBSCRIBE, and one error for the whole
// command when it refuses it: the queue of commands sent is how an error reply, which names no channel, is
// matched to the channels it refuses.
type command struct {
	name     string   // "subscribe", "unsubscribe" or "ping"
	channels []string // the channels whose replies are still due, in order
}

// A conn is one pub/sub connection, to the server (or the Sentinel-managed primary) of a client, or to one
// master of a cluster, with the goroutines that read it and probe it.
type conn struct {
	w      *Watcher
	addr   string                // the cluster node's address; "" when the client is not a cluster client
	node   redis.UniversalClient // where the connection's subscriptions and probes go
	ctx    context.Context       // ends when the connection is retired or the Watcher closed
	retire context.CancelFunc
	// reading is when the receive loop began the read it is blocked in (Unix ns), 0 while it handles what it
	// read: a loop that has waited in a read for a while has taken everything the connection received.
	reading atomic.Int64

	// Guarded by Watcher.mu:
	ps     *redis.PubSub // replaced only by the receive loop, when it reconnects; nil while it does
	born   time.Time     // when ps was made
	sent   []*command    // commands sent on ps whose replies are due, oldest first
	broken error         // why ps was closed from outside the receive loop (a failed send, the probe's verdict)
	notify notifyFlags   // what the server sends, as last detected
	// detecting is closed when the notifications asked for by a later user are detected; nil when none is due.
	detecting chan struct{}
	count     int // channels of Watcher.channels on this connection
	probe     probeState
}

// newConnLocked opens a connection to node (lazily: go-redis dials on the first SUBSCRIBE) and starts its
// goroutines.
func (w *Watcher) newConnLocked(addr string, node redis.UniversalClient, flags notifyFlags) *conn {
	ctx, retire := context.WithCancel(w.ctx)
	c := &conn{w: w, addr: addr, node: node, ctx: ctx, retire: retire, notify: flags}
	ps := c.openLocked()
	w.conns[addr] = c
	w.wg.Add(2)
	go c.receive(ps)
	go c.probeLoop() // idle while the probe is off: a user may turn it on later
	return c
}

// openLocked makes a new PubSub for the connection, with a new probe channel (not subscribed yet).
func (c *conn) openLocked() *redis.PubSub {
	w := c.w
	w.conngen++
	c.ps = c.node.Subscribe(c.ctx)
	c.born = time.Now()
	c.sent = nil
	c.broken = nil
	c.probe = probeState{
		ch: &channel{
			name: fmt.Sprintf("keyward:probe:%s:%d", w.id, w.conngen), kind: probeChannel, conn: c,
			state: unsubscribing, ready: make(chan struct{}),
		},
		dropped:    c.probe.verdict,
		lostStreak: c.probe.lostStreak,
	}
	return c.ps
}

// gainLocked counts a channel more on the connection. When the probe channel is not subscribed (this is the
// first channel, or the last one is on its way out) it returns it, to be subscribed in the same command: one
// write, as without a probe.
func (c *conn) gainLocked() []*channel {
	c.count++
	if c.w.probingLocked() && c.probe.ch.state == unsubscribing {
		return []*channel{c.probe.ch}
	}
	return nil
}

// loseLocked counts a channel less on the connection; after the last one, the probe channel goes too (it
// normally went already, with the last channel's UNSUBSCRIBE).
func (c *conn) loseLocked() {
	c.count--
	if c.count == 0 && c.probe.ch.state != unsubscribing {
		c.sendLocked("unsubscribe", c.probe.ch)
	}
}

// channelLocked returns the channel name on this connection: the probe channel, or a channel of the Watcher.
func (c *conn) channelLocked(name string) *channel {
	if name == c.probe.ch.name {
		return c.probe.ch
	}
	return c.w.channels[name]
}

// addLocked registers wt on the channel name (subscribing on cn when it is the first) and returns the channel.
func (w *Watcher) addLocked(cn *conn, name string, kind chanKind, key string, wt *Watch) *channel {
	c := w.channels[name]
	switch {
	case c == nil:
		c = &channel{name: name, kind: kind, key: key, conn: cn, ready: make(chan struct{}), watches: map[*Watch]struct{}{}}
		w.channels[name] = c
		cn.sendLocked("subscribe", append(cn.gainLocked(), c)...)
	case c.state == unsubscribing:
		// Subscribe again at once: only the reply to this SUBSCRIBE, the latest, confirms the channel.
		c.conn.sendLocked("subscribe", c)
	}
	c.watches[wt] = struct{}{}
	return c
}

// removeLocked takes wt off its channels; the last watch of a channel unsubscribes it.
func (w *Watcher) removeLocked(wt *Watch) {
	for _, c := range wt.chans {
		if _, ok := c.watches[wt]; !ok {
			continue
		}
		delete(c.watches, wt)
		if len(c.watches) == 0 && w.channels[c.name] == c && c.state != unsubscribing {
			chans := []*channel{c}
			if p := c.conn.probe.ch; c.conn.count == 1 && p.state != unsubscribing {
				chans = append(chans, p) // the connection's last channel: the probe's goes with it
			}
			c.conn.sendLocked("unsubscribe", chans...)
		}
	}
}

// forgetLocked drops the channel c from the Watcher.
func (w *Watcher) forgetLocked(c *channel) {
	if w.channels[c.name] == c {
		delete(w.channels, c.name)
		c.conn.loseLocked()
	}
}

// sendLocked sends SUBSCRIBE or UNSUBSCRIBE for chans and records the state it leads to. A failed send is left
// to the receive loop, which reconnects and subscribes every channel again.
func (c *conn) sendLocked(name string, chans ...*channel) {
	names := make([]string, len(chans))
	for i, ch := range chans {
		if ch.state == active {
			ch.ready = make(chan struct{})
		}
		if name == "subscribe" {
			ch.state = subscribing
		} else {
			ch.state = unsubscribing
		}
		names[i] = ch.name
	}
	cmd := c.writeLocked(name, names)
	for _, ch := range chans {
		ch.latest = cmd
	}
}

// writeLocked sends a command on the connection and queues it until its replies come; it returns nil when the
// connection is being rebuilt or the send failed (the receive loop then sees the failure and reconnects).
func (c *conn) writeLocked(name string, channels []string) *command {
	if c.ps == nil {
		return nil // reconnecting: the new connection subscribes every channel that has watches
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.w.config().healthCheck)
	defer cancel()
	var err error
	switch name {
	case "subscribe":
		err = c.ps.Subscribe(ctx, channels...)
	case "unsubscribe":
		err = c.ps.Unsubscribe(ctx, channels...)
	case "ping":
		err = c.ps.Ping(ctx)
	}
	if err != nil {
		c.breakLocked(fmt.Errorf("keyspace: %s: %w", name, err))
		return nil
	}
	cmd := &command{name: name, channels: slices.Clone(channels)}
	c.sent = append(c.sent, cmd)
	return cmd
}

// moveLocked moves the channel c to the connection to, for a key whose slot another master serves now. The
// watches are told to look again (messages may have been lost on the way) and once more when the new
// subscription is confirmed.
func (w *Watcher) moveLocked(c *channel, to *conn) {
	from := c.conn
	if c.state != unsubscribing {
		// Not tracked: the channel's state follows its new connection. The reply is matched and dropped.
		from.writeLocked("unsubscribe", []string{c.name})
	}
	from.loseLocked()
	c.conn = to
	c.resubscribing = true
	for wt := range c.watches {
		wt.deliver(Event{Kind: Reconnected})
	}
	to.sendLocked("subscribe", append(to.gainLocked(), c)...)
}

// breakLocked closes the connection for why: the receive loop's read fails, and it reconnects, reporting why.
// The error of the Close itself says nothing more (the connection is dropped either way).
func (c *conn) breakLocked(why error) {
	if c.broken == nil {
		c.broken = why
	}
	_ = c.ps.Close()
}

// name names the connection's server in errors.
func (c *conn) name() string {
	if c.addr != "" {
		return c.addr
	}
	return nodeName(c.node)
}
