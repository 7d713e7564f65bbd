package redistest

import (
	"context"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// AfterReply is a go-redis hook that calls fn after the N-th script reply (EVALSHA or EVAL, counted from 1) that
// Match accepts, before the reply reaches the caller: whatever fn does lands exactly between that command and
// what the caller does next. Tests use it to force a race into a window that is otherwise hard to hit.
type AfterReply struct {
	// N is which matching reply fn runs after.
	N int64
	// Match tells a reply of interest, such as an acquire script's "not obtained".
	Match func(reply []any) bool
	// Fn runs once, on the goroutine of the command.
	Fn    func()
	count atomic.Int64
}

// DialHook implements redis.Hook.
func (h *AfterReply) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessPipelineHook implements redis.Hook; pipelines are not counted.
func (h *AfterReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// ProcessHook implements redis.Hook.
func (h *AfterReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if name := cmd.Name(); name != "evalsha" && name != "eval" || err != nil {
			return err
		}
		if res, ok := cmd.(*redis.Cmd).Val().([]any); ok && h.Match(res) && h.count.Add(1) == h.N {
			h.Fn()
		}
		return err
	}
}
