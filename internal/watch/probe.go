package watch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/keyward/keyward"
)

// The probe checks, end to end, the one property waiters need: the connection hears what is published where
// the locks live. While a connection has subscriptions, it PUBLISHes a sequence number on the connection's own
// probe channel through the command path of the same client (or cluster node) the lock scripts use, every
// probe interval. The connection is deaf, and is rebuilt like a failed one (Reconnected to every waiter,
// subscribe again, Reconnected again on confirmation), when:
//
//   - the server that ran the PUBLISH says nobody received it (the count is 0): the subscription is on another
//     server than the one the commands go to, such as a demoted primary after a Sentinel failover, or the old
//     address after a DNS or proxy switch. Release messages published meanwhile may have been lost too;
//   - a later probe is heard before an earlier one, or a probe is not heard within probeDeadline while the
//     receive loop waits in a read (one that is behind on what it received gets no verdict): messages are being
//     lost on the way.
//
// The PING health check stays: it covers connections that are silent, which a probe cannot tell from deaf when
// the command path is down as well.
//
// Guards against rebuilding in a loop, each for the life of the Watcher:
//   - a second connection in a row found "elsewhere" at its first probe means the PUBLISH count does not
//     describe this Watcher's subscriptions (a proxy that answers for a server it did not publish on): counts
//     are ignored from then on, and only probes that go unheard make a verdict;
//   - a fourth connection in a row found deaf without hearing a single probe turns the probe off: here it
//     cannot tell anything;
//   - a PUBLISH the server refuses (an ACL user without permission for keyward:probe:*) turns the probe off.
//
// A PUBLISH that fails otherwise (timeout, connection error) is no verdict: the lock scripts fail the same way.
type probeState struct {
	ch       *channel    // this connection's probe channel
	seq      uint64      // the last probe sent
	out      []sentProbe // probes sent and not heard yet, oldest first
	heard    bool        // a probe was heard on this connection
	answered int         // PUBLISH replies received for this connection's probes
	verdict  dropReason  // why the probe rebuilds this connection, once it found it deaf
	// Carried from one connection to the next (openLocked keeps them):
	dropped    dropReason // why the probe rebuilt the previous connection, if it did
	lostStreak int        // connections in a row found deaf without a probe heard
}

type sentProbe struct {
	seq uint64
	at  time.Time
}

type dropReason int

const (
	notDropped dropReason = iota
	droppedLost
	droppedElsewhere
)

// probeDeadline is how long a probe may take to come back before the connection counts as deaf: several probe
// intervals and at least a second, so that a loaded machine that schedules the receive loop late does not
// trigger a reconnect (which would wake every waiter once).
func (w *Watcher) probeDeadline() time.Duration {
	return max(8*w.interval(), time.Second)
}

// probeLoop probes the connection every interval until it is retired or the Watcher closed. It runs while the
// probe is off too, doing nothing, since a user that attaches later may turn it on.
func (c *conn) probeLoop() {
	defer c.w.wg.Done()
	every := c.w.interval()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			c.probeOnce()
			c.w.flush()
			if d := c.w.interval(); d != every {
				every = d
				t.Reset(d)
			}
		}
	}
}

// probeOnce judges the probes sent so far and sends the next one.
func (c *conn) probeOnce() {
	w := c.w
	w.mu.Lock()
	ps, ch := c.ps, c.probe.ch
	if ps != nil && w.probingLocked() && ch.state == unsubscribing && c.count > 0 {
		// The probe was turned on (a user attached with WithProbe) while the connection had channels.
		c.sendLocked("subscribe", ch)
	}
	if ps == nil || !w.probingLocked() || ch.state != active || c.count == 0 {
		c.probe.out = nil // nothing to judge while there is nothing to hear
		w.mu.Unlock()
		return
	}
	now := time.Now()
	if len(c.probe.out) > 0 && now.Sub(c.probe.out[0].at) > w.probeDeadline() && c.idle(now) {
		c.deafLocked(droppedLost)
		w.mu.Unlock()
		return
	}
	c.probe.seq++
	seq := c.probe.seq
	c.probe.out = append(c.probe.out, sentProbe{seq: seq, at: now})
	w.mu.Unlock()

	ctx, cancel := context.WithTimeout(c.ctx, w.probeDeadline())
	n, err := c.node.Publish(ctx, ch.name, strconv.FormatUint(seq, 10)).Result()
	cancel()

	w.mu.Lock()
	defer w.mu.Unlock()
	if c.ps != ps || c.ctx.Err() != nil {
		return // rebuilt meanwhile: this probe is about a connection that is gone
	}
	c.probe.answered++
	switch {
	case isNoPerm(err):
		c.probeRefusedLocked(err)
	case err != nil:
		c.probe.out = slices.DeleteFunc(c.probe.out, func(p sentProbe) bool { return p.seq == seq })
	case n == 0 && w.trustCount:
		if c.probe.answered == 1 && c.probe.dropped == droppedElsewhere {
			w.trustCount = false
			return
		}
		c.deafLocked(droppedElsewhere)
	}
}

// idle reports whether the receive loop has been waiting in a read for a probe interval: it has read everything
// the connection received, so a probe it has not heard has not come. A loop that is behind (a loaded machine,
// a burst of messages) is no sign of a deaf connection, and gets no verdict.
func (c *conn) idle(now time.Time) bool {
	since := c.reading.Load()
	return since != 0 && now.Sub(time.Unix(0, since)) >= c.w.interval()
}

// heardLocked takes a probe heard on the connection.
func (c *conn) heardLocked(payload string) {
	seq, err := strconv.ParseUint(payload, 10, 64)
	if err != nil {
		return
	}
	c.probe.heard = true
	i := slices.IndexFunc(c.probe.out, func(p sentProbe) bool { return p.seq == seq })
	switch {
	case i < 0: // its PUBLISH failed, or it is older than the connection's last verdict
	case i > 0: // probes are published one after the other, so they come in order: the earlier ones were lost
		c.deafLocked(droppedLost)
	default:
		c.probe.out = c.probe.out[1:]
	}
}

// deafLocked rebuilds the connection, which the probe found deaf: it closes it, and the receive loop reconnects.
func (c *conn) deafLocked(reason dropReason) {
	w := c.w
	c.probe.out = nil
	if reason == droppedLost {
		if c.probe.heard {
			c.probe.lostStreak = 0
		}
		if c.probe.lostStreak++; c.probe.lostStreak > 3 {
			w.probeOff = true
			w.noteLocked(keyward.Error, errors.New("keyspace: probe turned off: no probe was heard on 4 pub/sub "+
				"connections in a row, so it cannot tell a deaf connection here"))
			return
		}
	}
	c.probe.verdict = reason
	why := errors.New("keyspace: deaf: a probe published where the locks live reached no subscriber " +
		"(the subscription is on another server than the commands)")
	if reason == droppedLost {
		why = errors.New("keyspace: deaf: probes published where the locks live went unheard or out of order")
	}
	c.breakLocked(why)
}

// probeRefusedLocked turns the probe off for the Watcher: the server refused its channel or its PUBLISH (an ACL
// user without permission for keyward:probe:*). Watching goes on; the observers hear it once.
func (c *conn) probeRefusedLocked(err error) {
	w := c.w
	c.probe.out = nil
	if !w.probeOff {
		w.probeOff = true
		w.noteLocked(keyward.Error, fmt.Errorf("keyspace: probe turned off: %w: %w", keyward.ErrNoPermission, err))
	}
}
