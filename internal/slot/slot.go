// Package slot lets the library's tests and the benchmark hear, for each rate-limit decision that took tokens,
// the server time at which they may be used: the times the bound on admissions is stated on (ratelimit's
// documentation), which a test checks across processes. It is carried by a context value and is not part of the
// public API, as lockopt.CallMetadata is not.
package slot

import "context"

// A Func hears a decision that took tokens: n tokens, usable from at, for the virtual interval [start, end), all
// in microseconds of the server's clock.
type Func func(n int, at, start, end int64)

type key struct{}

// With returns ctx carrying f.
func With(ctx context.Context, f Func) context.Context { return context.WithValue(ctx, key{}, f) }

// From returns the Func ctx carries, or nil.
func From(ctx context.Context) Func {
	f, _ := ctx.Value(key{}).(Func)
	return f
}
