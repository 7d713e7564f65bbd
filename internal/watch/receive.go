package watch

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
)

// maxBackoff caps the wait before reconnecting; a connection that lived that long reconnects at once.
const maxBackoff = time.Second

// receive reads the connection until it is retired or the Watcher closed. It confirms subscriptions, turns
// messages into events, pings the server when the connection has been silent for the health-check interval, and
// rebuilds the connection when it fails, the ping goes unanswered, or the probe found it deaf (probe.go closes
// it then).
func (c *conn) receive(ps *redis.PubSub) {
	defer c.w.wg.Done()
	pinged := false
	// worked says the connection received something: it was subscribed and working, so losing it (a killed
	// client, a failover) is no reason to wait before the next one; only connections that fail before any
	// answer are rebuilt with a growing backoff.
	worked := false
	backoff := time.Duration(0)
	for {
		hc := c.w.config().healthCheck
		c.reading.Store(time.Now().UnixNano())
		msg, err := ps.ReceiveTimeout(c.ctx, hc)
		c.reading.Store(0)
		if c.ctx.Err() != nil {
			return
		}
		cause := err
		switch {
		case err == nil:
			pinged = false
			worked = true
			ok := c.handle(ps, msg)
			c.w.flush()
			if ok {
				continue
			}
			cause = fmt.Errorf("keyspace: the server sent %s, which answers no command sent", describe(msg))
		case isReply(err):
			// The server refused one of the commands sent: not a reason to reconnect when it is a SUBSCRIBE the
			// user may not make (reconnecting would only be refused again, in a loop).
			ok := c.refused(ps, err)
			c.w.flush()
			if ok {
				continue
			}
		case isTimeout(err) && !pinged:
			// Silent for a while: ask the server, which answers on this connection.
			if c.ping(ps) {
				pinged = true
				continue
			}
		case isTimeout(err):
			cause = fmt.Errorf("keyspace: no answer to PING within %v: %w", hc, err)
		}
		// The connection failed, or the server did not answer the ping, or it said something that matches no
		// command sent: start over on a new connection and tell every waiter that messages may have been lost.
		if worked {
			backoff = 0
		} else {
			backoff = c.backoff(backoff)
		}
		if ps = c.reconnect(ps, backoff, cause); ps == nil {
			return
		}
		pinged, worked = false, false
	}
}

// describe names what a pub/sub connection received, for errors.
func describe(msg any) string {
	switch m := msg.(type) {
	case *redis.Subscription:
		return fmt.Sprintf("%s %q", m.Kind, m.Channel)
	case *redis.Pong:
		return "a PONG"
	}
	return fmt.Sprintf("%T", msg)
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// isReply reports whether err is an error reply from the server.
func isReply(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply)
}

// isNoPerm reports whether err is the server's ACL refusal (NOPERM).
func isNoPerm(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply) && strings.HasPrefix(reply.Error(), "NOPERM")
}

// backoff returns how long to wait before the next connection, after one that received nothing: nothing after a
// connection that lived a while, else twice the last wait, from 10 ms up to maxBackoff, so that a connection that
// keeps failing at once is not rebuilt in a hot loop.
func (c *conn) backoff(last time.Duration) time.Duration {
	c.w.mu.Lock()
	age := time.Since(c.born)
	c.w.mu.Unlock()
	if age >= maxBackoff {
		return 0
	}
	return min(max(2*last, 10*time.Millisecond), maxBackoff)
}

// reconnect closes ps, wakes the watches of the connection's channels with Reconnected, tells the users'
// observers why (cause, unless something closed the connection on purpose: a failed send, the probe's verdict),
// and opens a new connection subscribed to every channel that has watches, after waiting backoff. It returns nil
// once the connection is retired or the Watcher closed.
func (c *conn) reconnect(ps *redis.PubSub, backoff time.Duration, cause error) *redis.PubSub {
	w := c.w
	w.mu.Lock()
	_ = ps.Close() // dropped either way: its Close error says nothing more than cause
	if c.broken != nil {
		cause = c.broken
	}
	c.ps = nil
	c.sent = nil
	c.probe.out = nil
	for _, ch := range w.channels {
		if ch.conn != c {
			continue
		}
		if len(ch.watches) == 0 {
			w.forgetLocked(ch)
			continue
		}
		if ch.state == active {
			ch.ready = make(chan struct{})
		}
		ch.state = subscribing
		ch.latest = nil
		ch.resubscribing = true
		for wt := range ch.watches {
			wt.deliver(Event{Kind: Reconnected})
		}
	}
	observers := w.observersLocked()
	w.mu.Unlock()
	notify(observers, keyward.Reconnected, fmt.Errorf("keyspace: pub/sub connection to %s rebuilt: %w", c.name(), cause))

	if backoff > 0 {
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-c.ctx.Done():
			t.Stop()
			return nil
		}
	}
	// The server may be another one now (a failover) or have restarted: look at its notifications again.
	flags, ok, problem := w.detectNotifications(c.ctx, c.node)
	if problem != nil && c.ctx.Err() == nil {
		w.emit(keyward.Error, problem)
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if c.ctx.Err() != nil {
		return nil
	}
	if ok {
		c.notify = flags
		w.nodes[c.addr] = flags
	}
	ps = c.openLocked()
	var chans []*channel
	for _, ch := range w.channels {
		if ch.conn != c {
			continue
		}
		if len(ch.watches) == 0 {
			w.forgetLocked(ch) // its last watch left while there was no connection
			continue
		}
		chans = append(chans, ch)
	}
	if len(chans) > 0 && w.probingLocked() {
		chans = append([]*channel{c.probe.ch}, chans...)
	}
	if len(chans) > 0 {
		c.sendLocked("subscribe", chans...)
	}
	return ps
}

// ping sends a PING on ps; false when it could not be sent.
func (c *conn) ping(ps *redis.PubSub) bool {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	return ps == c.ps && c.writeLocked("ping", nil) != nil
}

// popLocked matches a reply to the command it answers, the oldest one sent: nil when it answers none (the
// connection then says something we did not ask for, and is rebuilt).
func (c *conn) popLocked(kind, channel string) *command {
	if len(c.sent) == 0 || c.sent[0].name != kind {
		return nil
	}
	cmd := c.sent[0]
	if kind != "ping" {
		if len(cmd.channels) == 0 || cmd.channels[0] != channel {
			return nil
		}
		if cmd.channels = cmd.channels[1:]; len(cmd.channels) > 0 {
			return cmd
		}
	}
	c.sent = c.sent[1:]
	return cmd
}

// handle acts on one thing read from the connection; false when the connection must be rebuilt.
func (c *conn) handle(ps *redis.PubSub, msg any) bool {
	w := c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if ps != c.ps {
		return true
	}
	switch m := msg.(type) {
	case *redis.Subscription:
		cmd := c.popLocked(m.Kind, m.Channel)
		if cmd == nil {
			return false
		}
		ch := c.channelLocked(m.Channel)
		if ch == nil || ch.conn != c || ch.latest != cmd {
			return true // answers a command that a later one overrides
		}
		ch.latest = nil
		switch {
		case m.Kind == "subscribe" && ch.state == subscribing:
			ch.state = active
			close(ch.ready)
			if ch.resubscribing {
				ch.resubscribing = false
				for wt := range ch.watches {
					wt.deliver(Event{Kind: Reconnected})
				}
			}
		case m.Kind == "unsubscribe" && ch.state == unsubscribing && len(ch.watches) == 0:
			w.forgetLocked(ch)
		}
	case *redis.Pong:
		if c.popLocked("ping", "") == nil {
			return false
		}
	case *redis.Message:
		ch := c.channelLocked(m.Channel)
		if ch == nil {
			return true
		}
		var e Event
		switch ch.kind {
		case probeChannel:
			c.heardLocked(m.Payload)
			return true
		case releaseChannel:
			e = Event{Kind: Released, Payload: m.Payload}
		case keyspaceChannel:
			var ok bool
			if e, ok = keyspaceEvent(m.Payload); !ok {
				return true
			}
		}
		for wt := range ch.watches {
			wt.deliver(e)
		}
	}
	return true
}

// refused handles an error reply on ps; false when the connection must be rebuilt. A SUBSCRIBE refused for lack
// of permission (NOPERM) ends the channels it asked for: the server refuses the whole command when one of its
// channels is not allowed, so a SUBSCRIBE of several channels is sent again one channel at a time first.
func (c *conn) refused(ps *redis.PubSub, err error) bool {
	w := c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if ps != c.ps || len(c.sent) == 0 {
		return false
	}
	cmd := c.sent[0]
	c.sent = c.sent[1:]
	if cmd.name != "subscribe" || !isNoPerm(err) {
		return false
	}
	var chans []*channel
	for _, name := range cmd.channels {
		if ch := c.channelLocked(name); ch != nil && ch.conn == c && ch.latest == cmd {
			chans = append(chans, ch)
		}
	}
	if len(cmd.channels) > 1 {
		for _, ch := range chans {
			c.sendLocked("subscribe", ch)
		}
		return true
	}
	for _, ch := range chans {
		c.refuseLocked(ch, err)
	}
	return true
}

// refuseLocked ends the channel ch, which the server refused with err. A refused probe channel turns the probe
// off; a refused keyspace channel is dropped, and no keyspace channel is subscribed any more (waiters keep their
// release messages and timers); a refused release channel ends its watches with a Failed event, and makes Watch
// calls waiting for it return the error.
func (c *conn) refuseLocked(ch *channel, err error) {
	w := c.w
	ch.latest = nil
	switch ch.kind {
	case probeChannel:
		c.probeRefusedLocked(err)
	case keyspaceChannel:
		w.noKeyspace = true
		w.forgetLocked(ch)
		for wt := range ch.watches {
			wt.chans = slices.DeleteFunc(wt.chans, func(x *channel) bool { return x == ch })
		}
		close(ch.ready) // Watch calls waiting for it look again, without it
	case releaseChannel:
		ch.err = fmt.Errorf("keyspace: subscribe to %q: %w: %w", ch.name, keyward.ErrNoPermission, err)
		w.forgetLocked(ch)
		close(ch.ready)
		for wt := range ch.watches {
			wt.end(Event{Kind: Failed, Err: ch.err}, ch.err)
		}
	}
}
