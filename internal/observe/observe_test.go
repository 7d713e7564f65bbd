package observe_test

import (
	"context"
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
