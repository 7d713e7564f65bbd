// Package observe delivers events to the keyward.Observer a user plugged in, for every package of the library.
package observe

import (
	"context"

	"github.com/keyward/keyward"
)

// Join returns an Observer that passes each event to every non-nil observer in os, in order; nil when there is
// none, and the observer itself when there is one.
func Join(os ...keyward.Observer) keyward.Observer {
	var all []keyward.Observer
	for _, o := range os {
		if o == nil {
			continue
		}
		if m, ok := o.(multi); ok {
			all = append(all, m...)
			continue
		}
		all = append(all, o)
	}
	switch len(all) {
	case 0:
		return nil
	case 1:
		return all[0]
	}
	return multi(all)
}

type multi []keyward.Observer

func (m multi) Observe(ctx context.Context, e keyward.Event) {
	for _, o := range m {
		o.Observe(ctx, e)
	}
}

// StartCall asks each CallObserver in m, in order, each given the context the one before it returned.
func (m multi) StartCall(ctx context.Context, c keyward.Call) context.Context {
	for _, o := range m {
		if co, ok := o.(keyward.CallObserver); ok {
			ctx = co.StartCall(ctx, c)
		}
	}
	return ctx
}

// Emit passes e to o, if o is not nil. A nil ctx is taken as context.Background().
func Emit(ctx context.Context, o keyward.Observer, e keyward.Event) {
	if o == nil {
		return
	}
	if ctx == nil {
		ctx = context.Background()
	}
	o.Observe(ctx, e)
}
