package keywardgocron

import (
	"context"
	"sync"
)

// fenceKey is the context key of the fencing token that Locker.Job and Elector.Job give the job.
type fenceKey struct{}

// FenceFrom returns the fencing token of the run whose job was wrapped by [Locker.Job] (the lock's fencing token)
// or [Elector.Job] (the leadership's term number), from the job's ctx or a context derived from it, and whether ctx
// has one. It is larger than that of every earlier run of the job (every earlier term): storage that refuses a write
// whose token is smaller than the largest it has seen cannot be written by a run that was paused past its lock.
func FenceFrom(ctx context.Context) (int64, bool) {
	if ctx == nil {
		return 0, false
	}
	f, ok := ctx.Value(fenceKey{}).(int64)
	return f, ok
}

// runFenced runs fn with a context derived from ctx that carries fence and is cancelled, with cause()'s error as
// its cause, when ended is closed. It returns fn's error once the goroutine that watches ended has returned.
func runFenced(ctx context.Context, fence int64, ended <-chan struct{}, cause func() error,
	fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancelCause(context.WithValue(ctx, fenceKey{}, fence))
	var watching sync.WaitGroup
	watching.Go(func() {
		select {
		case <-ended:
			cancel(cause())
		case <-ctx.Done():
		}
	})
	defer func() {
		cancel(nil)
		watching.Wait()
	}()
	return fn(ctx)
}
