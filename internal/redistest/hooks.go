package redistest

import (
	"context"
	"net"
	"os"
	"slices"
	"strings"
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
	// MatchPipeline, when set, counts the replies of interest in a pipeline too, such as FastTriesFailed.
	MatchPipeline func(cmds []redis.Cmder) int64
	// Fn runs once, on the goroutine of the command.
	Fn    func()
	count atomic.Int64
}

// DialHook implements redis.Hook.
func (h *AfterReply) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessPipelineHook implements redis.Hook; pipelines count when MatchPipeline accepts them.
func (h *AfterReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if h.MatchPipeline == nil {
			return err
		}
		if k := h.MatchPipeline(cmds); k > 0 {
			if after := h.count.Add(k); after >= h.N && after-k < h.N {
				h.Fn()
			}
		}
		return err
	}
}

// FastTriesFailed counts the lock's plain tries without a script (SET NX GET, TIME, GET) in a pipeline that found
// the lock held by another value. A pipeline may hold the tries and releases of several goroutines.
func FastTriesFailed(cmds []redis.Cmder) int64 {
	var n int64
	for _, cmd := range cmds {
		if set, ok := cmd.(*redis.StatusCmd); ok && cmd.Name() == "set" && set.Err() == nil && set.Val() != "" {
			n++
		}
	}
	return n
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

// LostReply is a go-redis hook that lets the server run the first command named Name (any command when Name is
// empty), or the first pipeline that holds one, then reports an i/o timeout to the caller, as if the reply had
// been lost on the way back: the ambiguous outcome a client must treat as "maybe done".
type LostReply struct {
	// Name is the command to lose the reply of, such as "evalsha"; case does not matter.
	Name string
	done atomic.Bool
}

// Done reports whether a reply was lost.
func (h *LostReply) Done() bool { return h.done.Load() }

// DialHook implements redis.Hook.
func (h *LostReply) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessPipelineHook implements redis.Hook: a pipeline that holds a command named Name loses every reply.
func (h *LostReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if slices.ContainsFunc(cmds, h.matches) && h.done.CompareAndSwap(false, true) {
			err = lostReply()
			for _, cmd := range cmds {
				cmd.SetErr(err)
			}
		}
		return err
	}
}

// ProcessHook implements redis.Hook.
func (h *LostReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if h.matches(cmd) && h.done.CompareAndSwap(false, true) {
			err = lostReply()
			cmd.SetErr(err)
		}
		return err
	}
}

func (h *LostReply) matches(cmd redis.Cmder) bool {
	return h.Name == "" || strings.EqualFold(cmd.Name(), h.Name)
}

// lostReply is the error go-redis reports for a reply that did not come in time.
func lostReply() error { return &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded} }
