package script

import (
	"context"
	_ "embed"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/keys"
)

var (
	//go:embed raise.lua
	raiseSrc string

	raiseScript = redis.NewScript(fenceSrc + raiseSrc)
)

// Raise raises the fencing counter n.Fence to fence if it is below, and returns the counter after the call (at
// least fence). The counter then lives max(FenceTTL, 2 × ttl), as after an acquire with ttl. A quorum lock uses it
// to make a majority of its nodes remember the fence it hands out, so that a later holder's fence is larger.
func Raise(ctx context.Context, c redis.Scripter, n keys.Names, fence int64, ttl time.Duration) (int64, error) {
	fenceTTL := max(FenceTTL, 2*ttl)
	res, err := raiseScript.Run(ctx, c, []string{n.Fence}, fence, fenceTTL.Milliseconds()).Int64()
	return res, Classify(err)
}

// AcquireAbove is Acquire with the fencing counter first raised to floor in the same round trip (a pipeline of
// the raise and the acquire scripts). The fence it hands out is then at least floor + 1: nodes of a quorum whose
// counters and clocks are all below a common floor hand out the same fence, which spares the quorum a second
// round trip to agree on one (see redlock). The raise happens whether or not the lock is taken; counters only
// ever go up, so that is harmless.
func AcquireAbove(ctx context.Context, c redis.Cmdable, n keys.Names, value string, ttl time.Duration, floor int64) (Acquired, error) {
	fenceTTL := max(FenceTTL, 2*ttl)
	p := &raiseFirst{Cmdable: c, keys: []string{n.Fence}, args: []any{floor, fenceTTL.Milliseconds()}}
	res, err := Acquire(ctx, p, n, value, ttl)
	if p.raise != nil && isNoScript(p.raise.Err()) {
		// The acquire script was cached but the raise script was not (a server that only ever saw keyward's
		// single-node lock): this acquire went without the raise, which costs at most a second round trip in the
		// quorum; load it for the next one.
		_ = raiseScript.Load(ctx, c).Err()
	}
	return res, err
}

// raiseFirst is a Scripter that sends the raise script in the same pipeline as the next EVALSHA or EVAL, so that
// the acquire script keeps its argument list in one place (Acquire) and still shares its round trip with the
// raise. When the server answers NOSCRIPT for both (first use, restart, SCRIPT FLUSH), Acquire falls back to
// EVAL, and the raise goes along again, as EVAL too, which caches both scripts.
type raiseFirst struct {
	redis.Cmdable
	keys  []string
	args  []any
	raise *redis.Cmd // the raise sent last; nil before the first
	again bool       // the raise was sent again after NOSCRIPT
}

// EvalSha implements redis.Scripter.
func (p *raiseFirst) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return p.run(ctx, func(s redis.Scripter) *redis.Cmd { return s.EvalSha(ctx, sha1, keys, args...) })
}

// Eval implements redis.Scripter.
func (p *raiseFirst) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return p.run(ctx, func(s redis.Scripter) *redis.Cmd { return s.Eval(ctx, script, keys, args...) })
}

func (p *raiseFirst) run(ctx context.Context, send func(redis.Scripter) *redis.Cmd) *redis.Cmd {
	pipe := p.Cmdable.Pipeline()
	switch {
	case p.raise == nil:
		p.raise = raiseScript.EvalSha(ctx, pipe, p.keys, p.args...)
	case isNoScript(p.raise.Err()) && !p.again:
		p.raise = raiseScript.Eval(ctx, pipe, p.keys, p.args...)
		p.again = true
	default:
		return send(p.Cmdable)
	}
	cmd := send(pipe)
	_, _ = pipe.Exec(ctx) // each command carries its own error
	return cmd
}

// isNoScript reports whether err is the server's "script not cached" answer.
func isNoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT"))
}
