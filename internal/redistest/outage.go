package redistest

import (
	"context"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// ErrRefused is the error an Outage fails commands with unless told otherwise: a refused dial, as when the server
// is down.
var ErrRefused error = &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}

// Outage is a go-redis hook that, while on, fails every command and pipeline unsent: the server is down (with
// ErrRefused) or, with Err set, the process is gone as far as Redis can tell. It starts off. The zero value is
// ready to use; an Outage must not be copied once added to a client.
type Outage struct {
	// Err is what commands fail with while the outage is on; nil means ErrRefused.
	Err error
	// Count tells a command that Refused counts when the outage fails it; nil counts none.
	Count   func(cmd redis.Cmder) bool
	on      atomic.Bool
	refused atomic.Int64
}

// On starts the outage: every command from now on fails.
func (o *Outage) On() { o.on.Store(true) }

// Off ends the outage: commands reach the server again.
func (o *Outage) Off() { o.on.Store(false) }

// Refused returns how many commands that Count accepts the outage has failed.
func (o *Outage) Refused() int64 { return o.refused.Load() }

func (o *Outage) err() error {
	if o.Err != nil {
		return o.Err
	}
	return ErrRefused
}

// DialHook implements redis.Hook.
func (o *Outage) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (o *Outage) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if o.on.Load() {
			if o.Count != nil && o.Count(cmd) {
				o.refused.Add(1)
			}
			err := o.err()
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook.
func (o *Outage) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if o.on.Load() {
			return o.err()
		}
		return next(ctx, cmds)
	}
}

// AfterError is a go-redis hook that calls Fn after every script command (EVALSHA or EVAL) that failed, on the
// goroutine of the command. Tests use it to learn that a try met the outage they made.
type AfterError struct {
	// Fn runs after each failed script command.
	Fn func()
}

// DialHook implements redis.Hook.
func (h *AfterError) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (h *AfterError) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil && (cmd.Name() == "evalsha" || cmd.Name() == "eval") {
			h.Fn()
		}
		return err
	}
}

// ProcessPipelineHook implements redis.Hook; pipelines are left alone.
func (h *AfterError) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// StallAcquires is a go-redis hook that, while on, holds every acquire of keyward's lock scripts (an EVALSHA on
// three keys and ten or more words in all) until its ctx ends and then fails it unsent: a process that cannot
// claim what is reserved for it before it gives up. It starts off.
type StallAcquires struct{ on atomic.Bool }

// On starts holding acquires.
func (h *StallAcquires) On() { h.on.Store(true) }

// DialHook implements redis.Hook.
func (h *StallAcquires) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook implements redis.Hook.
func (h *StallAcquires) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		// EVALSHA sha 3 lock fence queue value ttl fence-ttl waiter queue-ttl floor: an acquire.
		if args := cmd.Args(); h.on.Load() && len(args) > 9 && args[2] == 3 {
			<-ctx.Done()
			cmd.SetErr(ctx.Err())
			return ctx.Err()
		}
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook implements redis.Hook; pipelines are left alone.
func (h *StallAcquires) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
