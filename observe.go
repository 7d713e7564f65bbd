package keyward

import (
	"context"
	"log/slog"
	"time"
)

// An Observer hears what keyward's clients do, in the foreground (a lock obtained, a wait started) and in the
// background (an auto-refresh that failed, a lock lost, a watcher reconnected): the hook for logs, metrics and
// traces. Every package takes one with its WithObserver option, and a *slog.Logger with WithLogger.
//
// Observe is called synchronously, on the goroutine where the event happened, possibly from several goroutines
// at once: it must be safe for concurrent use and must not block. ctx is the caller's context for events of a
// call (Obtained, WaitStarted, WaitEnded, Released by Release) and a background context for the others.
type Observer interface {
	Observe(ctx context.Context, e Event)
}

// ObserverFunc adapts a function to an Observer.
type ObserverFunc func(ctx context.Context, e Event)

// Observe calls f(ctx, e).
func (f ObserverFunc) Observe(ctx context.Context, e Event) { f(ctx, e) }

// An Event is one thing an Observer hears. Which fields are set depends on Kind.
type Event struct {
	// Kind says what happened.
	Kind EventKind
	// Source is the package the event comes from: "lock", "redlock", "semaphore", "election" or "keyspace".
	Source string
	// Key is the lock key (with its prefix), the semaphore's or the election's name; "" for a watcher's events.
	Key string
	// Fence is the fencing token of the lock, permit or term concerned; 0 when there is none.
	Fence int64
	// Wait is how long the caller waited, for Obtained and WaitEnded.
	Wait time.Duration
	// Held is how long the lock was held, for Released and Lost.
	Held time.Duration
	// Err is the cause, for RefreshFailed, Lost, CleanedUp (nil when the clean-up worked), WaitEnded (nil when
	// the wait obtained), Released (nil when the release worked), Reconnected (what broke the connection) and
	// Error.
	Err error
}

// EventKind says what an Event reports.
type EventKind int

const (
	// Obtained: a lock, permit or leadership was obtained; Wait says how long it took.
	Obtained EventKind = iota + 1
	// Released: a lock, permit or leadership was given back; Held says how long it was held, Err why the release
	// failed (the lock then expires by its ttl).
	Released
	// RefreshFailed: an auto-refresh failed; it is tried again until the validity deadline. Err says why.
	RefreshFailed
	// Lost: a lock that was held was lost while its holder meant to hold it. Err says why (it matches ErrLost).
	Lost
	// WaitStarted: an Obtain (Acquire, Campaign) found the lock taken and began to wait.
	WaitStarted
	// WaitEnded: a wait ended; Wait says how long it lasted, Err why it ended without the lock (nil when the
	// lock was obtained).
	WaitEnded
	// CleanedUp: an acquire whose outcome was unknown (a timeout, a lost reply) was undone, so that no lock is
	// left that nobody holds. Err says why the clean-up failed, if it did (the lock then expires by its ttl).
	CleanedUp
	// Reconnected: a watcher's pub/sub connection was rebuilt (it dropped, went silent, was found deaf after a
	// failover, or a cluster slot moved); its waiters were told to look again. Err says what broke it.
	Reconnected
	// Error: an error keyward handled in the background and would otherwise not report (a resignation that
	// failed, a watcher that could not be closed cleanly). Err says what it was.
	Error
)

var eventKindNames = [...]string{
	Obtained: "obtained", Released: "released", RefreshFailed: "refresh failed", Lost: "lost",
	WaitStarted: "wait started", WaitEnded: "wait ended", CleanedUp: "cleaned up", Reconnected: "reconnected",
	Error: "error",
}

// String returns the kind's name in lower case, e.g. "refresh failed".
func (k EventKind) String() string {
	if k > 0 && int(k) < len(eventKindNames) {
		return eventKindNames[k]
	}
	return "unknown"
}

// LogObserver returns an Observer that logs every event to l with the message "keyward: <kind>" and the
// event's fields as attributes: Lost, RefreshFailed, Error and failed Released or CleanedUp at Warn level,
// Reconnected at Info, the rest at Debug. A nil l returns nil (no observer).
func LogObserver(l *slog.Logger) Observer {
	if l == nil {
		return nil
	}
	return logObserver{l}
}

type logObserver struct{ l *slog.Logger }

func (o logObserver) Observe(ctx context.Context, e Event) {
	level := slog.LevelDebug
	switch {
	case e.Kind == Lost || e.Kind == RefreshFailed || e.Kind == Error:
		level = slog.LevelWarn
	case (e.Kind == Released || e.Kind == CleanedUp) && e.Err != nil:
		level = slog.LevelWarn
	case e.Kind == Reconnected:
		level = slog.LevelInfo
	}
	if !o.l.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 6)
	attrs = append(attrs, slog.String("source", e.Source))
	if e.Key != "" {
		attrs = append(attrs, slog.String("key", e.Key))
	}
	if e.Fence != 0 {
		attrs = append(attrs, slog.Int64("fence", e.Fence))
	}
	if e.Kind == Obtained || e.Kind == WaitEnded {
		attrs = append(attrs, slog.Duration("wait", e.Wait))
	}
	if e.Held != 0 {
		attrs = append(attrs, slog.Duration("held", e.Held))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.Any("err", e.Err))
	}
	o.l.LogAttrs(ctx, level, "keyward: "+e.Kind.String(), attrs...)
}
