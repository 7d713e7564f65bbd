package keywardotel

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/keyward/keyward"
)

// ScopeName is the instrumentation scope of the meter and the tracer: this module's import path.
const ScopeName = "github.com/keyward/keyward/contrib/keywardotel"

// The attributes this package sets.
const (
	AttrSource    = attribute.Key("keyward.source")  // the package: lock, redlock, semaphore, election, keyspace
	AttrOp        = attribute.Key("keyward.op")      // the call: try obtain, obtain, do, try acquire, acquire, campaign
	AttrKey       = attribute.Key("keyward.key")     // the lock key, semaphore or election name (on metrics: its label)
	AttrOutcome   = attribute.Key("keyward.outcome") // obtained, not_obtained, cancelled, error
	AttrErrorType = attribute.Key("error.type")      // with outcome error: invalid, closed, no_permission, …, _OTHER
	AttrReason    = attribute.Key("keyward.reason")  // why a lock was lost: expired, taken, unknown
	AttrEnd       = attribute.Key("keyward.end")     // how a holding ended: released, lost
	AttrChange    = attribute.Key("keyward.change")  // a leadership change: obtained, released, lost
	AttrDuring    = attribute.Key("keyward.during")  // where an error was handled: release, cleanup, background
	AttrFence     = attribute.Key("keyward.fence")   // on spans: the fencing token (a term, for an election)
	AttrWait      = attribute.Key("keyward.wait")    // on spans: seconds waited until obtained
	AttrHeld      = attribute.Key("keyward.held")    // on span events: seconds held
	AttrLink      = attribute.Key("keyward.link")    // on links: "holder"
)

// An Observer turns keyward's events into OpenTelemetry metrics and spans. Pass it to every package's
// WithObserver option (lock.WithObserver, redlock.WithObserver, semaphore.WithObserver, election.WithObserver);
// one Observer serves any number of clients. It is a keyward.CallObserver: each call gets a span, which is the
// parent of the call's Redis commands (when go-redis is traced too) and of the work Do runs.
//
// Its methods are safe for concurrent use and never block: they update instruments, end spans, and keep a table of
// what this process holds (for the held gauges and the links to holders), which shrinks as locks end.
type Observer struct {
	tracer trace.Tracer
	label  func(source, key string) string

	acquireDuration metric.Float64Histogram
	holdDuration    metric.Float64Histogram
	held            metric.Int64UpDownCounter
	waiters         metric.Int64UpDownCounter
	lost            metric.Int64Counter
	refreshFailures metric.Int64Counter
	errors          metric.Int64Counter
	reconnects      metric.Int64Counter
	leader          metric.Int64UpDownCounter
	term            metric.Int64Gauge
	changes         metric.Int64Counter

	holdings holdings
}

var _ keyward.CallObserver = (*Observer)(nil)

// An Option configures New.
type Option func(*config)

type config struct {
	mp    metric.MeterProvider
	tp    trace.TracerProvider
	label func(source, key string) string
	err   error
}

// WithMeterProvider records the metrics with mp instead of the global MeterProvider (otel.GetMeterProvider). A nil
// mp is an error matching keyward.ErrInvalid.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) {
		if mp == nil {
			c.err = errors.Join(c.err, fmt.Errorf("keywardotel: nil MeterProvider: %w", keyward.ErrInvalid))
		}
		c.mp = mp
	}
}

// WithTracerProvider starts the spans with tp instead of the global TracerProvider (otel.GetTracerProvider). A
// nil tp is an error matching keyward.ErrInvalid.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) {
		if tp == nil {
			c.err = errors.Join(c.err, fmt.Errorf("keywardotel: nil TracerProvider: %w", keyward.ErrInvalid))
		}
		c.tp = tp
	}
}

// WithKeyLabel sets the function that gives the keyward.key attribute of the metrics for a lock key, a semaphore,
// an election or a rate limiter (source says which: "lock", "redlock", "semaphore", "election", "ratelimit"); ""
// leaves the attribute out.
// Each distinct label is a time series of every instrument that carries it, so label must return few values:
// lock keys are often per user or per cache entry, without bound. label must be fast, safe for concurrent use,
// and give the same label for the same source and key each time. Spans always carry the whole key: they are not
// aggregated. The default is DefaultKeyLabel; KeyAsIs and KeyPrefix are ready alternatives. A nil label is an
// error matching keyward.ErrInvalid.
func WithKeyLabel(label func(source, key string) string) Option {
	return func(c *config) {
		if label == nil {
			c.err = errors.Join(c.err, fmt.Errorf("keywardotel: nil key label: %w", keyward.ErrInvalid))
		}
		c.label = label
	}
}

// DefaultKeyLabel is the default key label: a semaphore's or an election's name as it is (there are few, named in
// code), and no key for the locks of lock and redlock and for rate limiters, whose keys may be unbounded (a rate
// limiter per user or per address is common).
func DefaultKeyLabel(source, key string) string {
	if source == "semaphore" || source == "election" {
		return key
	}
	return ""
}

// KeyAsIs labels every key as it is. Use it when the lock keys are few and fixed ("jobs:nightly", "migrations").
func KeyAsIs(_, key string) string { return key }

// KeyPrefix returns a key label that keeps a lock key or a rate limiter's name up to its last sep, so that
// "cache:user:42" is labelled "cache:user" with sep ":", and leaves out the keys without sep. A client's prefix
// (lock.WithPrefix) is part of the key. Semaphore and election names are labelled as they are.
func KeyPrefix(sep string) func(source, key string) string {
	return func(source, key string) string {
		if source == "semaphore" || source == "election" {
			return key
		}
		if i := strings.LastIndex(key, sep); i > 0 && sep != "" {
			return key[:i]
		}
		return ""
	}
}

// Buckets of the duration histograms, in seconds: from a millisecond (an uncontended lock on a near server) to
// five minutes (a wait for a long job) and an hour (a lock held by a long job). A View can change them.
var (
	acquireBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}
	holdBuckets    = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600}
)

// New returns an Observer that records with the global MeterProvider and TracerProvider, or those of the options.
// It returns an error matching keyward.ErrInvalid for a nil option value, and the MeterProvider's error if it
// refuses an instrument.
func New(opts ...Option) (*Observer, error) {
	c := config{label: DefaultKeyLabel}
	for _, opt := range opts {
		opt(&c)
	}
	if c.err != nil {
		return nil, c.err
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	o := &Observer{tracer: c.tp.Tracer(ScopeName), label: c.label}
	m := c.mp.Meter(ScopeName)
	var errs []error
	// Each instrument is made with its unit and description; the errors of those the provider refuses add up.
	histogram := func(name, desc string, buckets []float64) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(buckets...))
		errs = append(errs, err)
		return h
	}
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	upDown := func(name, unit, desc string) metric.Int64UpDownCounter {
		c, err := m.Int64UpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	o.acquireDuration = histogram("keyward.acquire.duration", "Duration of the calls that obtain a lock, permit "+
		"or leadership, by outcome: for outcome obtained, the wait until it was obtained", acquireBuckets)
	o.holdDuration = histogram("keyward.hold.duration",
		"How long a lock, permit or leadership was held, until released or lost", holdBuckets)
	o.held = upDown("keyward.held", "{lock}", "Locks (lock, redlock) and semaphore permits this process holds now")
	o.waiters = upDown("keyward.waiters", "{waiter}",
		"Calls of this process waiting now for a lock, permit or leadership")
	o.lost = counter("keyward.lost", "{lock}",
		"Locks, permits and leaderships lost while their holder meant to hold them, by reason")
	o.refreshFailures = counter("keyward.refresh.failures", "{failure}",
		"Auto-refreshes (renewals) that failed; each is tried again until the validity deadline")
	o.errors = counter("keyward.errors", "{error}", "Errors no call returned: releases whose outcome is unknown, "+
		"failed clean-ups, errors handled in the background")
	o.reconnects = counter("keyward.watch.reconnects", "{reconnect}",
		"Rebuilt pub/sub connections of the watchers that wake waiters")
	o.leader = upDown("keyward.election.leader", "{leader}", "1 while this process leads the election, 0 otherwise")
	var err error
	o.term, err = m.Int64Gauge("keyward.election.term", metric.WithUnit("{term}"),
		metric.WithDescription("The term this process leads the election with, 0 when it does not lead"))
	errs = append(errs, err)
	o.changes = counter("keyward.election.changes", "{change}",
		"Leadership changes of this process: terms obtained, released and lost")
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("keywardotel: %w", err)
	}
	return o, nil
}

// callKey is the context key of the calls an Observer started: one per Observer, so that two Observers given to
// the same client each find their own.
type callKey struct{ o *Observer }

// A call is what an Observer keeps of a call it started, in the call's context.
type call struct {
	keyward.Call
	span   trace.Span
	parent *call // the call of this Observer that this one runs in (Do's own obtain), or nil

	mu       sync.Mutex
	ended    bool
	waiting  []waitState    // the waits started and not yet ended
	linked   []trace.SpanID // the holders the span links to
	obtained bool           // an Obtained event came for this call (for Do: from its own obtain)
	waitSecs float64        // that event's wait
}

// A waitState is what an Observer keeps of a wait of a call, from WaitStarted to WaitEnded.
type waitState struct {
	attrs attribute.Set // the attributes the waiters gauge was raised with
	since uint64        // the position in the table of holdings the wait began at
}

// StartCall starts the call's span, named "keyward.<source> <op>" (e.g. "keyward.lock obtain"), with the source,
// the op and the whole key as attributes, and returns ctx with the span in it.
func (o *Observer) StartCall(ctx context.Context, c keyward.Call) context.Context {
	if ctx == nil {
		ctx = context.Background()
	}
	parent, _ := ctx.Value(callKey{o}).(*call)
	ctx, span := o.tracer.Start(ctx, "keyward."+c.Source+" "+c.Op, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(AttrSource.String(c.Source), AttrOp.String(c.Op), AttrKey.String(c.Key)))
	if c.Source == "election" {
		// A candidate's gauge is there, at 0, from its first campaign on.
		o.leader.Add(ctx, 0, metric.WithAttributeSet(o.electionAttrs(c.Key)))
	}
	return context.WithValue(ctx, callKey{o}, &call{Call: c, span: span, parent: parent})
}

// Observe records e: see the package documentation for which instrument each event drives.
func (o *Observer) Observe(ctx context.Context, e keyward.Event) {
	if ctx == nil {
		ctx = context.Background()
	}
	c, _ := ctx.Value(callKey{o}).(*call)
	switch e.Kind {
	case keyward.Obtained:
		o.obtained(ctx, c, e)
	case keyward.Released:
		o.released(ctx, e)
	case keyward.Lost:
		o.lostEvent(ctx, e)
	case keyward.RefreshFailed:
		o.refreshFailures.Add(ctx, 1, metric.WithAttributeSet(o.attrs(e.Source, e.Key)))
		o.spanEvent(ctx, c, "keyward.refresh_failed", e)
	case keyward.WaitStarted:
		o.waitStarted(ctx, c, e)
	case keyward.WaitEnded:
		o.waitEnded(ctx, c, e)
	case keyward.CleanedUp:
		if e.Err != nil {
			o.errors.Add(ctx, 1, metric.WithAttributeSet(o.attrs(e.Source, e.Key, AttrDuring.String("cleanup"))))
		}
		o.spanEvent(ctx, c, "keyward.cleaned_up", e)
	case keyward.Reconnected:
		o.reconnects.Add(ctx, 1, metric.WithAttributes(AttrSource.String(e.Source)))
	case keyward.Error:
		o.errors.Add(ctx, 1, metric.WithAttributeSet(o.attrs(e.Source, e.Key, AttrDuring.String("background"))))
		o.spanEvent(ctx, c, "keyward.error", e)
	case keyward.Ended:
		o.ended(ctx, c, e)
	}
}

// attrs returns the metric attributes of an event of source on key: the source, the key's label unless it is "",
// and extra.
func (o *Observer) attrs(source, key string, extra ...attribute.KeyValue) attribute.Set {
	kvs := make([]attribute.KeyValue, 0, 2+len(extra))
	kvs = append(kvs, AttrSource.String(source))
	if key != "" {
		if label := o.label(source, key); label != "" {
			kvs = append(kvs, AttrKey.String(label))
		}
	}
	return attribute.NewSet(append(kvs, extra...)...)
}

// electionAttrs returns the attributes of the election instruments for the election name: its label.
func (o *Observer) electionAttrs(name string) attribute.Set {
	if label := o.label("election", name); label != "" {
		return attribute.NewSet(AttrKey.String(label))
	}
	return *attribute.EmptySet()
}

// with returns set with kvs added.
func with(set attribute.Set, kvs ...attribute.KeyValue) metric.MeasurementOption {
	return metric.WithAttributes(append(set.ToSlice(), kvs...)...)
}

// anonymous reports whether a holding of e cannot be told from others: a semaphore's permit without a fencing
// token. Locks, redlocks and terms always have one.
func anonymous(e keyward.Event) bool { return e.Fence == 0 && e.Source != "election" }

func (o *Observer) obtained(ctx context.Context, c *call, e keyward.Event) {
	base := o.attrs(e.Source, e.Key)
	var holder trace.SpanContext
	if c != nil {
		// The holder's span is Do's when the obtain is Do's own: it lasts as long as the lock is held.
		holder = c.span.SpanContext()
		c.noteObtained(e)
		if p := c.parent; p != nil && p.Op == "do" && p.Source == c.Source && p.Key == c.Key {
			holder = p.span.SpanContext()
			p.noteObtained(e)
		}
	}
	if anonymous(e) {
		o.held.Add(ctx, 1, metric.WithAttributeSet(base))
		return
	}
	if !o.holdings.add(sourceKey{e.Source, e.Key}, e.Fence, &holding{attrs: base, span: holder}) {
		return
	}
	if e.Source == "election" {
		ea := o.electionAttrs(e.Key)
		o.leader.Add(ctx, 1, metric.WithAttributeSet(ea))
		o.term.Record(ctx, e.Fence, metric.WithAttributeSet(ea))
		o.changes.Add(ctx, 1, with(ea, AttrChange.String("obtained")))
		return
	}
	o.held.Add(ctx, 1, metric.WithAttributeSet(base))
}

func (c *call) noteObtained(e keyward.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.obtained, c.waitSecs = true, e.Wait.Seconds()
}

func (o *Observer) released(ctx context.Context, e keyward.Event) {
	o.spanEvent(ctx, nil, "keyward.released", e)
	if !settles(e.Err) {
		o.errors.Add(ctx, 1, metric.WithAttributeSet(o.attrs(e.Source, e.Key, AttrDuring.String("release"))))
	}
	switch {
	case e.Source == "election":
		// A resignation ends the term whatever it returned: the leadership's context is cancelled, and a lock
		// whose release failed expires with its lease.
		o.end(ctx, e, "released")
	case !settles(e.Err):
		// The outcome is unknown: the lock is still held until a retried release or its deadline settles it.
	case anonymous(e) && errors.Is(e.Err, keyward.ErrLost):
		// A permit lost before its release: the Lost event ended it.
	default:
		o.end(ctx, e, "released")
	}
}

func (o *Observer) lostEvent(ctx context.Context, e keyward.Event) {
	o.lost.Add(ctx, 1, metric.WithAttributeSet(o.attrs(e.Source, e.Key, AttrReason.String(lostReason(e.Err)))))
	o.spanEvent(ctx, nil, "keyward.lost", e)
	o.end(ctx, e, "lost")
}

// end ends the holding of e (once): it is off the held gauges, and its hold time is recorded.
func (o *Observer) end(ctx context.Context, e keyward.Event, how string) {
	if anonymous(e) {
		base := o.attrs(e.Source, e.Key)
		o.held.Add(ctx, -1, metric.WithAttributeSet(base))
		o.holdDuration.Record(ctx, e.Held.Seconds(), with(base, AttrEnd.String(how)))
		return
	}
	sk := sourceKey{e.Source, e.Key}
	h := o.holdings.remove(sk, e.Fence)
	if h == nil {
		return // ended before (a Released after the Lost), or obtained before this Observer was plugged in
	}
	o.holdDuration.Record(ctx, e.Held.Seconds(), with(h.attrs, AttrEnd.String(how)))
	if e.Source != "election" {
		o.held.Add(ctx, -1, metric.WithAttributeSet(h.attrs))
		return
	}
	ea := o.electionAttrs(e.Key)
	o.leader.Add(ctx, -1, metric.WithAttributeSet(ea))
	o.term.Record(ctx, o.holdings.latest(sk), metric.WithAttributeSet(ea))
	o.changes.Add(ctx, 1, with(ea, AttrChange.String(how)))
}

func (o *Observer) waitStarted(ctx context.Context, c *call, e keyward.Event) {
	attrs := o.attrs(e.Source, e.Key)
	o.waiters.Add(ctx, 1, metric.WithAttributeSet(attrs))
	links, since := o.holdings.startWait(sourceKey{e.Source, e.Key})
	if c == nil {
		return
	}
	c.mu.Lock()
	c.waiting = append(c.waiting, waitState{attrs: attrs, since: since})
	c.mu.Unlock()
	c.span.AddEvent("keyward.wait_started")
	c.link(links)
}

func (o *Observer) waitEnded(ctx context.Context, c *call, e keyward.Event) {
	var w waitState
	found := false
	if c != nil {
		c.mu.Lock()
		if n := len(c.waiting); n > 0 {
			w, found = c.waiting[n-1], true
			c.waiting = c.waiting[:n-1]
		}
		c.mu.Unlock()
	}
	if !found {
		w.attrs = o.attrs(e.Source, e.Key)
	}
	o.waiters.Add(ctx, -1, metric.WithAttributeSet(w.attrs))
	links := o.holdings.endWait(sourceKey{e.Source, e.Key}, w.since)
	if c == nil {
		return
	}
	kvs := []attribute.KeyValue{AttrWait.Float64(e.Wait.Seconds())}
	if e.Err != nil {
		kvs = append(kvs, AttrOutcome.String(outcome(e.Err)))
	}
	c.span.AddEvent("keyward.wait_ended", trace.WithAttributes(kvs...))
	c.link(links)
}

// link links c's span to the spans of links (the holders of what c waited for), each once, and to maxLinks at
// most.
func (c *call) link(links []trace.Link) {
	for _, l := range links {
		id := l.SpanContext.SpanID()
		c.mu.Lock()
		skip := slices.Contains(c.linked, id) || len(c.linked) >= maxLinks
		if !skip {
			c.linked = append(c.linked, id)
		}
		c.mu.Unlock()
		if !skip {
			c.span.AddLink(l)
		}
	}
}

func (o *Observer) ended(ctx context.Context, c *call, e keyward.Event) {
	oc := outcome(e.Err)
	if e.Op != "do" { // Do's own obtain (acquire) is a call of its own, counted there; Do's time includes fn's
		kvs := []attribute.KeyValue{AttrOp.String(e.Op), AttrOutcome.String(oc)}
		if oc == OutcomeError {
			kvs = append(kvs, AttrErrorType.String(errorType(e.Err)))
		}
		o.acquireDuration.Record(ctx, e.Wait.Seconds(), metric.WithAttributeSet(o.attrs(e.Source, e.Key, kvs...)))
	}
	if c == nil {
		return
	}
	c.mu.Lock()
	if c.ended {
		c.mu.Unlock()
		return
	}
	c.ended = true
	wait := e.Wait.Seconds()
	if c.obtained {
		wait = c.waitSecs
	}
	c.mu.Unlock()
	if oc == OutcomeNotObtained {
		c.link(o.holdings.holders(sourceKey{e.Source, e.Key}))
	}
	kvs := []attribute.KeyValue{AttrOutcome.String(oc), AttrWait.Float64(wait)}
	if e.Fence != 0 {
		kvs = append(kvs, AttrFence.Int64(e.Fence))
	}
	if oc == OutcomeError {
		kvs = append(kvs, AttrErrorType.String(errorType(e.Err)))
		c.span.RecordError(e.Err)
		c.span.SetStatus(codes.Error, e.Err.Error())
	}
	c.span.SetAttributes(kvs...)
	c.span.End()
}

// spanEvent adds e, named name, to the span of call c, or else to the span of ctx if it records: a release on the
// context of a traced request shows in its trace.
func (o *Observer) spanEvent(ctx context.Context, c *call, name string, e keyward.Event) {
	var span trace.Span
	if c != nil {
		span = c.span
	} else {
		span = trace.SpanFromContext(ctx)
	}
	if !span.IsRecording() {
		return
	}
	kvs := []attribute.KeyValue{AttrSource.String(e.Source), AttrKey.String(e.Key)}
	if e.Fence != 0 {
		kvs = append(kvs, AttrFence.Int64(e.Fence))
	}
	if e.Held != 0 {
		kvs = append(kvs, AttrHeld.Float64(e.Held.Seconds()))
	}
	if e.Kind == keyward.Lost {
		kvs = append(kvs, AttrReason.String(lostReason(e.Err)))
	}
	if e.Err != nil {
		kvs = append(kvs, attribute.String("exception.message", e.Err.Error()))
	}
	span.AddEvent(name, trace.WithAttributes(kvs...))
}
