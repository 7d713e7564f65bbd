package lease

import (
	"context"
	"errors"
	"time"
)

// releaseTimeout bounds the release that Run sends after fn returns, on a context that the caller's
// cancellation does not end (a cancelled caller still wants its lock given back).
const releaseTimeout = 5 * time.Second

// Held is what Run needs of a held lock or permit: a *Lease, or a package's own wrapper of one (whose Release
// also tells the package's observer).
type Held interface {
	Lost() <-chan struct{}
	Err() error
	Release(ctx context.Context) error
}

// Run runs fn while l is held: fn's context is cancelled with l's loss error as its cause (context.Cause tells
// "lock lost") the moment it is lost, and l is released when fn returns, also when fn panics (the panic then goes
// on after the release). It returns fn's error joined with the release's.
func Run(ctx context.Context, l Held, fn func(context.Context) error) (err error) {
	fnCtx, cancel := context.WithCancelCause(ctx)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		select {
		case <-l.Lost():
			cancel(l.Err())
		case <-fnCtx.Done():
		}
	}()
	defer func() {
		cancel(context.Canceled)
		<-watching
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer rcancel()
		err = errors.Join(err, l.Release(rctx))
	}()
	return fn(fnCtx)
}
