// Package bound makes keyward's time bounds hold whatever the go-redis options. With go-redis's defaults
// (ContextTimeoutEnabled false) a context's deadline does not bound a command's socket reads: a command sent to a
// server that stopped answering (SIGSTOP, a frozen VM, a black-holed network) blocks for ReadTimeout (3 s by
// default), whatever the context says; and with ContextTimeoutEnabled, a context that is cancelled without a
// deadline does not end it either. Keyward's bounds (a node timeout, a refresh that must end by the validity
// deadline, a blocking call that returns when its ctx ends) would not hold.
//
// So a command whose context can end, on a client that would not end it by itself, runs on a goroutine of its own,
// and the caller returns when the context ends, with its error: an outcome keyward already treats as unknown, the
// same as the i/o timeout go-redis reports when it abandons a command at a deadline. The command finishes in the
// background (when the server answers, at go-redis's ReadTimeout, or when the client is closed), and its answer
// is dropped. A client that honours deadlines, called with a context that has one, is called directly, and so is
// any client with a context that never ends.
//
// Why not a clone of the client with the time left as its timeouts (redis.Client.WithTimeout)? It would end the
// command itself, with no goroutine, but go-redis v9.22's clone drops the hooks added with AddHook (tracing,
// metrics), and only *redis.Client has it.
package bound

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/redis/go-redis/v9"
)

// Honors reports whether rdb's commands end by themselves at their context's deadline (go-redis's
// ContextTimeoutEnabled). Other clients (a wrapper of the caller's own making) are assumed not to.
func Honors(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}

// A Client runs commands on a Redis client so that the caller returns when their context ends.
type Client struct {
	rdb    redis.UniversalClient
	honors bool
}

// New returns the Client of rdb.
func New(rdb redis.UniversalClient) *Client { return &Client{rdb: rdb, honors: Honors(rdb)} }

// needed reports whether a command with ctx must run on a goroutine of its own for the caller to return when ctx
// ends.
func (c *Client) needed(ctx context.Context) bool {
	if ctx.Done() == nil {
		return false // ctx never ends
	}
	_, deadline := ctx.Deadline()
	return !c.honors || !deadline
}

// Do runs call with the client to send its commands to (with ctx), and returns what it returns; should ctx end
// first, it returns ended(ctx's error) while call goes on in the background (its result is dropped).
func Do[T any](c *Client, ctx context.Context, call func(rdb redis.UniversalClient) T, ended func(error) T) T {
	if !c.needed(ctx) {
		return call(c.rdb)
	}
	answer := make(chan T, 1)
	go func() { answer <- call(c.rdb) }()
	select {
	case v := <-answer:
		return v
	case <-ctx.Done():
		select {
		case v := <-answer: // answered as ctx ended: the answer is worth more
			return v
		default:
		}
		return ended(ctx.Err())
	}
}

// Err runs call as Do does, for a call that only returns an error.
func Err(c *Client, ctx context.Context, call func(rdb redis.UniversalClient) error) error {
	return Do(c, ctx, call, func(err error) error { return err })
}

// Scripter returns the client as a redis.Scripter whose calls return when their context ends.
func (c *Client) Scripter() redis.Scripter { return scripter{c} }

// scripter is a redis.Scripter whose calls return when their context ends.
type scripter struct{ c *Client }

func (s scripter) cmd(ctx context.Context, call func(rdb redis.UniversalClient) *redis.Cmd, args ...any) *redis.Cmd {
	cmd := Do(s.c, ctx, call, func(err error) *redis.Cmd {
		cmd := redis.NewCmd(ctx, args...)
		cmd.SetErr(err)
		return cmd
	})
	reloadAfter(s.c.rdb, cmd.Err())
	return cmd
}

// reloadAfter asks a Cluster client to reload its slot map after err, a failure to reach a node. go-redis reloads
// it by itself only on a MOVED, ASK or READONLY answer (or every ClusterStateReloadInterval), which a master that
// died never sends: after a forced failover, every script for its slots would go on failing against the dead
// address, and a holder's refreshes with them, until the periodic reload. The reload runs in the background, at
// most once at a time, and the next try (a refresh's retry, a waiter's next try) goes to the new master.
func reloadAfter(rdb redis.UniversalClient, err error) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok || err == nil {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		cc.ReloadState(context.Background())
	}
}

func evalArgs(name, script string, keys []string) []any {
	return []any{name, script, len(keys)} // enough to name the command in an error
}

// Eval implements redis.Scripter.
func (s scripter) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return s.cmd(ctx, func(rdb redis.UniversalClient) *redis.Cmd { return rdb.Eval(ctx, script, keys, args...) },
		evalArgs("eval", script, keys)...)
}

// EvalSha implements redis.Scripter.
func (s scripter) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return s.cmd(ctx, func(rdb redis.UniversalClient) *redis.Cmd { return rdb.EvalSha(ctx, sha1, keys, args...) },
		evalArgs("evalsha", sha1, keys)...)
}

// EvalRO implements redis.Scripter.
func (s scripter) EvalRO(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return s.cmd(ctx, func(rdb redis.UniversalClient) *redis.Cmd { return rdb.EvalRO(ctx, script, keys, args...) },
		evalArgs("eval_ro", script, keys)...)
}

// EvalShaRO implements redis.Scripter.
func (s scripter) EvalShaRO(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return s.cmd(ctx, func(rdb redis.UniversalClient) *redis.Cmd { return rdb.EvalShaRO(ctx, sha1, keys, args...) },
		evalArgs("evalsha_ro", sha1, keys)...)
}

// ScriptExists implements redis.Scripter.
func (s scripter) ScriptExists(ctx context.Context, hashes ...string) *redis.BoolSliceCmd {
	return Do(s.c, ctx, func(rdb redis.UniversalClient) *redis.BoolSliceCmd { return rdb.ScriptExists(ctx, hashes...) },
		func(err error) *redis.BoolSliceCmd {
			cmd := redis.NewBoolSliceCmd(ctx, "script", "exists")
			cmd.SetErr(err)
			return cmd
		})
}

// ScriptLoad implements redis.Scripter.
func (s scripter) ScriptLoad(ctx context.Context, script string) *redis.StringCmd {
	return Do(s.c, ctx, func(rdb redis.UniversalClient) *redis.StringCmd { return rdb.ScriptLoad(ctx, script) },
		func(err error) *redis.StringCmd {
			cmd := redis.NewStringCmd(ctx, "script", "load")
			cmd.SetErr(err)
			return cmd
		})
}
