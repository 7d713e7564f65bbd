package ratelimit

import (
	"log/slog"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/observe"
)

// An Option changes how a [Limiter] works. Options are given to [New].
type Option func(*config)

type config struct {
	prefix   string
	observer keyward.Observer
}

// WithPrefix puts prefix in front of the limiter's name to make its Redis key, e.g. "limits:". Default: no
// prefix.
func WithPrefix(prefix string) Option { return func(c *config) { c.prefix = prefix } }

// WithObserver makes the Limiter tell o about its calls and waits, with Source "ratelimit" and Key the limiter's
// name: WaitStarted (a Wait or WaitN that has to sleep until its reservation's time), WaitEnded (Wait says how
// long it waited, Err why it ended without its tokens: its ctx ended first), CleanedUp (the reservation of a wait
// whose ctx ended first was cancelled; Err when the cancel failed), and at the end of every AllowN, Reserve and
// WaitN an Ended event with Op "allow", "reserve" or "wait" and the call's error; a refused Allow ends with an
// error matching keyward.ErrNotObtained. A [keyward.CallObserver] also hears each call begin, and the call runs
// on the context it returns (Wait sleeps on it). Given more than once, every observer hears every event, in
// order. Default: none.
func WithObserver(o keyward.Observer) Option {
	return func(c *config) { c.observer = observe.Join(c.observer, o) }
}

// WithLogger logs the Limiter's events to l, as [keyward.LogObserver] does: a failed clean-up at Warn, the rest
// at Debug. It adds to an observer given with WithObserver. A nil l logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.observer = observe.Join(c.observer, keyward.LogObserver(l)) }
}
