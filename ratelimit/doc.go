// Package ratelimit is a distributed rate limiter on Redis: at most N events per period, across every replica of
// a service — calls to a partner API that allows 100 a second, jobs a queue may start per minute, emails per hour.
// It is the other half of a semaphore: a semaphore bounds how many run at a time, a rate limit how many start per
// period, whoever runs them.
//
//	lim, err := ratelimit.New(rdb, "partner-api", ratelimit.PerSecond(100)) // rdb: your redis.UniversalClient
//	err = lim.Wait(ctx)                    // sleeps until this call's turn, then go
//	res, err := lim.Allow(ctx)             // or: now or never (res.Allowed, res.RetryAfter)
//	r, err := lim.Reserve(ctx, 3)          // or: a turn for 3, r.Delay() away; r.Cancel(ctx) gives it back
//
// The API is that of golang.org/x/time/rate's Limiter (Allow, Reserve, Wait) with the result of
// github.com/go-redis/redis_rate (Allowed, Remaining, RetryAfter, ResetAfter), for one limiter shared by every
// process on the same Redis.
//
// How it works: the limiter's one key holds a time, the theoretical arrival time (TAT) of GCRA, the generic cell
// rate algorithm: the time at which the tokens taken so far are paid for, at one per interval (Period/Rate). A
// request for n tokens is one script on the server, on the server's clock: the tokens take the next n intervals
// after max(TAT, now), and may be used from the moment their last interval is within Burst intervals of now.
// Allow takes them only if that moment is now; Reserve and Wait take them whatever it is (Wait: unless it is past
// ctx's deadline), and learn when it is. The key expires when the TAT passes, so an idle limiter leaves nothing
// in Redis.
//
// Waiting costs no polling: Wait's one round trip reserves the tokens and returns their time, and the caller
// sleeps until then (never before it: the delay counts from the answer's arrival). Waiters are let through in the
// order their reservations reached the server, at the limit's rate, with no retry and no stampede; a Wait whose
// ctx ends first cancels its reservation.
//
// What is guaranteed: in any window of length W, the events let through (their times as the server gave them)
// number at most Burst + W/interval, with one limit everywhere and a server that keeps its state; a cancelled
// reservation counts only if it was used. When processes use different limits (a rolling change), the bound is
// that of the largest burst × interval and the shortest interval in use. A server that lost its state (a restart
// without persistence) starts afresh: in the windows that span the loss, at most one more burst than the bound,
// plus any reservations made before the loss by other processes after the one that asks first; each Limiter
// remembers the latest reservation it saw and the server starts no reservation before it. docs/DESIGN.md has the
// proofs.
package ratelimit
