package observe

import (
	"context"
	"errors"
	"time"

	"github.com/keyward/keyward"
)

// A Call is a call of the library that o hears: Start tells a CallObserver it began, End emits its Ended event.
// The zero Call (no observer) does nothing.
type Call struct {
	o     keyward.Observer
	ctx   context.Context
	c     keyward.Call
	start time.Time
}

// Start begins the call op of source on prefix+key for o: a CallObserver's StartCall gives the context the call
// runs on, which Start returns (ctx itself for other observers, and when o is nil). The key is put together only
// when there is an observer: a call without one pays nothing. A nil ctx stays nil, for the call to refuse as it
// does without an observer: StartCall is not asked, and the Ended event comes on context.Background().
func Start(ctx context.Context, o keyward.Observer, source, op, prefix, key string) (context.Context, Call) {
	if o == nil {
		return ctx, Call{}
	}
	c := keyward.Call{Source: source, Op: op, Key: prefix + key}
	if ctx == nil {
		return nil, Call{o: o, ctx: context.Background(), c: c, start: time.Now()}
	}
	if co, ok := o.(keyward.CallObserver); ok {
		ctx = co.StartCall(ctx, c)
	}
	return ctx, Call{o: o, ctx: ctx, c: c, start: time.Now()}
}

// End emits the call's Ended event: fence is that of what it obtained (0 when it did not), err the call's error.
func (c Call) End(fence int64, err error) {
	if c.o == nil {
		return
	}
	c.o.Observe(c.ctx, keyward.Event{
		Kind: keyward.Ended, Source: c.c.Source, Op: c.c.Op, Key: c.c.Key, Fence: fence, Wait: time.Since(c.start),
		Err: err,
	})
}

// ErrPanicked is the error of the Ended event of a Do whose fn panicked (the panic goes on): Do sets its result to
// it before calling fn, and fn's return replaces it.
var ErrPanicked = errors.New("fn panicked")

// Fence returns the fencing token of v (a lock or a permit a call returned), 0 when v is nil: what End is given.
func Fence[T interface {
	comparable
	Fence() int64
}](v T) int64 {
	var none T
	if v == none {
		return 0
	}
	return v.Fence()
}
