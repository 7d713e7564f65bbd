package keyspace

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// receive reads the connection until the Watcher is closed. It confirms subscriptions, turns messages into
// events, pings the server when the connection has been silent for the health-check interval, and rebuilds the
// connection when it fails or the ping goes unanswered.
func (w *Watcher) receive(ctx context.Context, ps *redis.PubSub) {
	defer close(w.done)
	pinged := false
	backoff := time.Duration(0)
	for {
		msg, err := ps.ReceiveTimeout(ctx, w.cfg.healthCheck)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			pinged = false
			backoff = 0
			w.handle(msg)
			continue
		}
		if isTimeout(err) && !pinged {
			// Silent for a while: ask the server, which answers on this connection.
			pctx, cancel := context.WithTimeout(ctx, w.cfg.healthCheck)
			pingErr := ps.Ping(pctx)
			cancel()
			if pingErr == nil {
				pinged = true
				continue
			}
		}
		// The connection failed, or the server did not answer the ping: start over on a new connection and
		// tell every waiter that messages may have been lost.
		if ps = w.reconnect(ctx, ps, backoff); ps == nil {
			return
		}
		pinged = false
		backoff = min(max(2*backoff, 10*time.Millisecond), time.Second)
	}
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// reconnect closes ps, wakes every watch with Reconnected, and opens a new connection subscribed to every
// channel that has watches, after waiting backoff. It returns nil once the Watcher is closed.
func (w *Watcher) reconnect(ctx context.Context, ps *redis.PubSub, backoff time.Duration) *redis.PubSub {
	w.mu.Lock()
	_ = ps.Close()
	w.ps = nil
	for name, c := range w.channels {
		if len(c.watches) == 0 {
			delete(w.channels, name)
			continue
		}
		if c.state == active {
			c.ready = make(chan struct{})
		}
		c.state = subscribing
		c.resubscribing = true
		for wt := range c.watches {
			wt.deliver(Event{Kind: Reconnected})
		}
	}
	w.mu.Unlock()

	if backoff > 0 {
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	ps = w.rdb.Subscribe(ctx)
	w.ps = ps
	var names []string
	for name := range w.channels {
		names = append(names, name)
	}
	if len(names) > 0 {
		sctx, cancel := context.WithTimeout(ctx, w.cfg.healthCheck)
		defer cancel()
		// An error here shows up again in ReceiveTimeout, which brings us back.
		_ = ps.Subscribe(sctx, names...)
	}
	return ps
}

// handle acts on one thing read from the connection.
func (w *Watcher) handle(msg any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch m := msg.(type) {
	case *redis.Subscription:
		c := w.channels[m.Channel]
		if c == nil {
			return
		}
		switch {
		case m.Kind == "subscribe" && c.state == subscribing:
			c.state = active
			close(c.ready)
			if c.resubscribing {
				c.resubscribing = false
				for wt := range c.watches {
					wt.deliver(Event{Kind: Reconnected})
				}
			}
			if len(c.watches) == 0 {
				w.sendLocked("UNSUBSCRIBE", c)
			}
		case m.Kind == "unsubscribe" && c.state == unsubscribing:
			if len(c.watches) == 0 {
				delete(w.channels, m.Channel)
				return
			}
			// A watch arrived while the UNSUBSCRIBE was in flight: subscribe again for it (c.ready is open
			// since the UNSUBSCRIBE was sent).
			w.sendLocked("SUBSCRIBE", c)
		}
	case *redis.Message:
		c := w.channels[m.Channel]
		if c == nil || c.state == unsubscribing {
			return
		}
		if e, ok := c.keyOf(m.Payload); ok {
			for wt := range c.watches {
				wt.deliver(e)
			}
		}
	}
}
