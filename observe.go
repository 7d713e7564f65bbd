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

// A CallObserver is an Observer that also hears each call begin, and may give the call a context of its own: the
// hook for traces, whose span must be the parent of what the call does. The calls are TryObtain, Obtain and Do
// of lock and redlock, TryAcquire, Acquire and Do of semaphore, each campaign of election (Campaign's, and
// those of Run), and AllowN, Reserve and WaitN of ratelimit (Allow and Wait included). Every call that begins
// ends with an Ended event, on the context StartCall returned.
//
// Observers passed together (several WithObserver options) are all asked, in order, each given the context the
// one before it returned.
type CallObserver interface {
	Observer
	// StartCall is called when a call begins, before its arguments are checked. It must return ctx or a context
	// derived from it (one that ends when ctx ends), and must not block. The call runs on the returned context
	// from then on: it sends its Redis commands with it, passes it with the events of the call (the last of them
	// Ended), and Do derives fn's context from it.
	StartCall(ctx context.Context, c Call) context.Context
}

// A Call is what a CallObserver hears of a call that begins.
type Call struct {
	// Source is the package of the call: "lock", "redlock", "semaphore", "election" or "ratelimit".
	Source string
	// Op is the call: "try obtain", "obtain", "do", "try acquire", "acquire", "campaign", or for ratelimit
	// "allow", "reserve" or "wait".
	Op string
	// Key is the lock key (with its prefix), the semaphore's, the election's or the rate limiter's name.
	Key string
}

// An Event is one thing an Observer hears. Which fields are set depends on Kind.
type Event struct {
	// Kind says what happened.
	Kind EventKind
	// Source is the package the event comes from: "lock", "redlock", "semaphore", "election", "ratelimit" or
	// "keyspace".
	Source string
	// Op is the call that ended, for Ended (see Call).
	Op string
	// Key is the lock key (with its prefix), the semaphore's, the election's or the rate limiter's name; "" for a
	// watcher's events.
	Key string
	// Fence is the fencing token of the lock, permit or term concerned; 0 when there is none.
	Fence int64
	// Wait is how long the caller waited, for Obtained and WaitEnded; how long the call took, for Ended.
	Wait time.Duration
	// Held is how long the lock was held, for Released and Lost.
	Held time.Duration
	// Err is the cause, for RefreshFailed, Lost, CleanedUp (nil when the clean-up worked), WaitEnded (nil when
	// the wait obtained), Released (nil when the release worked), Reconnected (what broke the connection),
	// Error, and Ended (the call's error: nil when it obtained).
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
	// Ended: a call ended (see CallObserver for which calls): Op says which, Wait how long it took, Fence the
	// fence of the lock, permit or term it obtained, and Err the error it returned: nil when it obtained (for Do,
	// when fn and the release succeeded), an error matching ErrNotObtained for a Try… that found no room (and
	// for a rate limiter's Allow that was refused, which itself returns no error), ctx's error when ctx ended
	// first, ErrClosed after Close, and so on. Observers count outcomes from it, and a CallObserver ends the span
	// it began.
	Ended
)

var eventKindNames = [...]string{
	Obtained: "obtained", Released: "released", RefreshFailed: "refresh failed", Lost: "lost",
	WaitStarted: "wait started", WaitEnded: "wait ended", CleanedUp: "cleaned up", Reconnected: "reconnected",
	Error: "error", Ended: "ended",
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
// Reconnected at Info, the rest at Debug, except Ended events without an error (the call was logged as Obtained).
// A nil l returns nil (no observer).
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
	if e.Kind == Ended && e.Err == nil || !o.l.Enabled(ctx, level) {
		return // a call that obtained was logged as Obtained
	}
	attrs := make([]slog.Attr, 0, 7)
	attrs = append(attrs, slog.String("source", e.Source))
	if e.Op != "" {
		attrs = append(attrs, slog.String("op", e.Op))
	}
	if e.Key != "" {
		attrs = append(attrs, slog.String("key", e.Key))
	}
	if e.Fence != 0 {
		attrs = append(attrs, slog.Int64("fence", e.Fence))
	}
	if e.Kind == Obtained || e.Kind == WaitEnded || e.Kind == Ended {
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
