package observe_test

import (
	"context"
	"errors"
	"testing"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/observe"
)

func TestJoinPassesEachEventToEveryObserverInOrder(t *testing.T) {
	var order []string
	a := keyward.ObserverFunc(func(context.Context, keyward.Event) { order = append(order, "a") })
	b := keyward.ObserverFunc(func(context.Context, keyward.Event) { order = append(order, "b") })
	c := &observe.Recorder{}
	o := observe.Join(observe.Join(a, nil), nil, b, c)
	observe.Emit(context.Background(), o, keyward.Event{Kind: keyward.Lost, Key: "k"})
	if len(order) != 2 || order[0] != "a" || order[1] != "b" {
		t.Fatalf("order = %v, want [a b]", order)
	}
	if got := c.All(); len(got) != 1 || got[0].Kind != keyward.Lost || got[0].Key != "k" {
		t.Fatalf("recorder got %+v", got)
	}
}

func TestJoinOfNothingIsNilAndOfOneIsItself(t *testing.T) {
	if o := observe.Join(nil, nil); o != nil {
		t.Fatalf("Join(nil, nil) = %v, want nil", o)
	}
	r := &observe.Recorder{}
	if o := observe.Join(nil, r); o != keyward.Observer(r) {
		t.Fatalf("Join(nil, r) = %v, want r", o)
	}
	observe.Emit(context.Background(), nil, keyward.Event{Kind: keyward.Obtained}) // no observer: nothing, no panic
	observe.Emit(nil, r, keyward.Event{Kind: keyward.Obtained})
	if got := r.All(); len(got) != 1 {
		t.Fatalf("got %d events, want 1", len(got))
	}
}

// tag is a CallObserver that appends its name to the context's "path" as each call begins.
type tag string

type pathKey struct{}

func (tag) Observe(context.Context, keyward.Event) {}

func (t tag) StartCall(ctx context.Context, _ keyward.Call) context.Context {
	p, _ := ctx.Value(pathKey{}).(string)
	return context.WithValue(ctx, pathKey{}, p+string(t))
}

func TestStartAsksEveryCallObserverInOrderAndEndsOnTheirContext(t *testing.T) {
	rec := &observe.Recorder{}
	var endedPath string
	last := keyward.ObserverFunc(func(ctx context.Context, e keyward.Event) {
		if e.Kind == keyward.Ended {
			endedPath, _ = ctx.Value(pathKey{}).(string)
		}
	})
	o := observe.Join(tag("a"), rec, observe.Join(tag("b"), last))
	ctx, call := observe.Start(context.Background(), o, "lock", "obtain", "", "k")
	if p, _ := ctx.Value(pathKey{}).(string); p != "ab" {
		t.Fatalf("the call's context has path %q, want %q", p, "ab")
	}
	call.End(7, nil)
	if endedPath != "ab" {
		t.Fatalf("Ended came with path %q, want %q", endedPath, "ab")
	}
	got := rec.Of(keyward.Ended)
	want := keyward.Event{Kind: keyward.Ended, Source: "lock", Op: "obtain", Key: "k", Fence: 7}
	if len(got) != 1 || got[0].Wait < 0 {
		t.Fatalf("Ended events: %+v", got)
	}
	got[0].Wait = 0
	if got[0] != want {
		t.Fatalf("Ended = %+v, want %+v", got[0], want)
	}

	// Without an observer, or with a plain one, the context is the caller's.
	base := context.WithValue(context.Background(), pathKey{}, "caller")
	if ctx, call := observe.Start(base, nil, "lock", "obtain", "", "k"); ctx != base {
		t.Fatal("Start without an observer changed the context")
	} else {
		call.End(0, nil) // nothing to tell, no panic
	}
	if ctx, _ := observe.Start(base, rec, "lock", "obtain", "", "k"); ctx != base {
		t.Fatal("Start with a plain Observer changed the context")
	}
}

// A nil ctx is refused by the call as it would be without an observer: Start does not make it a valid one, and
// does not hand it to StartCall; the call still ends, on context.Background().
func TestStartLeavesANilContextNil(t *testing.T) {
	rec := &observe.Recorder{}
	var nilCtx context.Context
	ctx, call := observe.Start(nilCtx, observe.Join(tag("a"), rec), "lock", "obtain", "", "k")
	if ctx != nil {
		t.Fatalf("Start turned a nil ctx into %v", ctx)
	}
	call.End(0, keyward.ErrInvalid)
	if got := rec.Of(keyward.Ended); len(got) != 1 || !errors.Is(got[0].Err, keyward.ErrInvalid) {
		t.Fatalf("Ended events: %+v", got)
	}
}
