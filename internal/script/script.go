// Package script runs keyward's Lua scripts on one Redis node. Each operation is one round trip: EVALSHA, with
// a fallback to EVAL when the server answers NOSCRIPT (after a restart or SCRIPT FLUSH), which also loads the
// script again. The scripts are the .lua files in this directory, embedded in the binary.
//
// Every operation returns Redis errors classified with Classify, so callers can match keyward's sentinels.
package script

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
)

var (
	//go:embed acquire.lua
	acquireSrc string
	//go:embed release.lua
	releaseSrc string
	//go:embed refresh.lua
	refreshSrc string
	//go:embed pttl.lua
	pttlSrc string
	//go:embed guard.lua
	guardSrc string
	//go:embed fence.lua
	fenceSrc string

	acquireScript = redis.NewScript(guardSrc + fenceSrc + acquireSrc)
	releaseScript = redis.NewScript(guardSrc + fenceSrc + releaseSrc)
	refreshScript = redis.NewScript(refreshSrc)
	pttlScript    = redis.NewScript(pttlSrc)
)

// CounterTTL is how long a fencing counter lives after its last write, for locks of ttl: 2 × ttl. A release sets
// the counter to the holder's fence, and a quorum lock's acquire to the fence it hands out; the next fence is
// above it, and above the server's clock (fence.lua). Once the counter has expired, the clock has moved on past
// every earlier fence, so the counter need not live longer: a program that locks millions of short-lived names
// leaves nothing behind for them.
func CounterTTL(ttl time.Duration) time.Duration { return 2 * ttl }

// Publish is the command the release script announces a release with.
type Publish string

// PublishPlain announces on a classic pub/sub channel (PUBLISH). On Redis Cluster the message is broadcast to
// every node, so one subscription on any node hears it; sharded channels (SPUBLISH) would keep it on the slot's
// node, at the price of a subscription per node.
const PublishPlain Publish = "PUBLISH"

// Acquired is the answer of an acquire attempt.
type Acquired struct {
	// OK is true when the lock was taken.
	OK bool
	// Fence is the fencing token handed out, when OK.
	Fence int64
	// PTTL is the remaining ttl of the other holder's lock when not OK; negative when the key has no expiry.
	PTTL time.Duration
}

// Acquire takes the lock n.Lock for value with the given ttl if it is free (SET NX PX), with a fence above the
// fencing counter n.Fence (which it only reads) and the server's clock; otherwise it reports how long the current holder may keep it. It does not join the queue.
func Acquire(ctx context.Context, c redis.Scripter, n keys.Names, value string, ttl time.Duration) (Acquired, error) {
	return AcquireQueued(ctx, c, n, value, ttl, "", 0)
}

// AcquireQueued is Acquire for the waiting process waiter: it also takes the lock when a release reserved it for
// waiter, and when the lock is held it puts waiter in the queue (keeping an earlier place) for queueTTL.
func AcquireQueued(ctx context.Context, c redis.Scripter, n keys.Names, value string, ttl time.Duration,
	waiter string, queueTTL time.Duration) (Acquired, error) {
	return acquire(ctx, c, n, value, ttl, "", waiter, queueTTL, "")
}

// AcquireAbove is Acquire for a quorum lock: the fence is also above floor, and the counter is set to it (for
// CounterTTL). Nodes of a quorum whose counters and clocks are all below a common floor
// then hand out the same fence, which spares the quorum a second round trip to agree on one (see redlock).
// A waiter other than "" queues as with AcquireQueued.
func AcquireAbove(ctx context.Context, c redis.Scripter, n keys.Names, value string, ttl time.Duration, floor int64,
	waiter string, queueTTL time.Duration) (Acquired, error) {
	return acquire(ctx, c, n, value, ttl, strconv.FormatInt(CounterTTL(ttl).Milliseconds(), 10),
		waiter, queueTTL, strconv.FormatInt(floor, 10))
}

// acquire runs the acquire script; counterTTL is "" when it only reads the counter, waiter and floor are "" when
// not used.
func acquire(ctx context.Context, c redis.Scripter, n keys.Names, value string, ttl time.Duration, counterTTL string,
	waiter string, queueTTL time.Duration, floor string) (Acquired, error) {
	res, err := acquireScript.Run(ctx, c, []string{n.Lock, n.Queue, n.Fence},
		value, ttl.Milliseconds(), counterTTL, waiter, queueTTL.Milliseconds(), floor).Int64Slice()
	if err != nil {
		return Acquired{}, Classify(err)
	}
	if len(res) != 2 {
		return Acquired{}, fmt.Errorf("keyward: acquire script answered %v", res)
	}
	if res[0] == 1 {
		return Acquired{OK: true, Fence: res[1]}, nil
	}
	return Acquired{PTTL: time.Duration(res[1]) * time.Millisecond}, nil
}

// QueueTTL is how long a queue of waiting processes (a lock's, on each node for Redlock, or a semaphore's) lives
// after a join by a waiter whose ttl is ttl; every join renews the whole queue and never shortens it. A waiter
// tries again at least once per holder's ttl, which renews the queue, so only a queue nobody waits in expires. The
// processes that were in it then hear of free places as everyone does (a release with nobody in line announces
// them), which is slower, never wrong.
func QueueTTL(ttl time.Duration) time.Duration { return 2*ttl + time.Second }

// DefaultClaimWindow is how long a released lock stays reserved for the first waiting process before anyone may
// take it: the longest a process that died while first in line can hold the others up.
const DefaultClaimWindow = 20 * time.Millisecond

// Next says how a release passes the lock on.
type Next struct {
	// Window is the claim window of the first waiting process (DefaultClaimWindow when zero).
	Window time.Duration
	// Successor is the value of a waiter in the holder's own process that takes the lock over in the same round
	// trip ("" for none), for TTL.
	Successor string
	TTL       time.Duration
	// Fence is the holder's fencing token: the fencing counter is set to it (unless it is above), and a
	// successor's is above it. Zero leaves the counter alone. HolderTTL, the holder's ttl, says how long the
	// counter lives (CounterTTL).
	Fence     int64
	HolderTTL time.Duration
	// Cohort lets the successor take the lock even while other processes wait.
	Cohort bool
	// Waiter is the holder's process id in the queue ("" for none): it leaves the queue, since its process
	// either keeps the lock (successor) or yields its turn to the next process. A process that yields its turn
	// with a Successor joins the end of the queue again, for QueueTTL.
	Waiter   string
	QueueTTL time.Duration
	// Reserve is the holder's process id when it has waiters of its own that take the lock with tries of
	// their own (no Successor value): with Cohort, while other processes wait, the lock is reserved for it
	// rather than for the first of them (ReservedOwn). Without Cohort it is ignored.
	Reserve string
}

// ParseReservation reads the release script's message for a lock reserved for the waiting process id,
// "r <id> <window ms>". Any other message (the empty one: the lock was freed) is not a reservation.
func ParseReservation(payload string) (id string, window time.Duration, ok bool) {
	f := strings.Fields(payload)
	if len(f) != 3 || f[0] != "r" {
		return "", 0, false
	}
	ms, err := strconv.Atoi(f[2])
	if err != nil {
		return "", 0, false
	}
	return f[1], time.Duration(ms) * time.Millisecond, true
}

// Outcome is what a release did.
type Outcome int

const (
	// NotHeld: the lock did not hold the value (it expired, or another holder took it); nothing changed.
	NotHeld Outcome = iota
	// Released: the lock was freed, or reserved for the first waiting process, which was told.
	Released
	// HandedOver: the lock now holds the successor's value, with a new fencing token.
	HandedOver
	// Requeued: the lock was reserved for the first waiting process, which was told, and the holder's process
	// (which has a Successor) joined the end of the queue.
	Requeued
	// ReservedOwn: the lock was reserved for the holder's own process (Next.Reserve), which was told.
	ReservedOwn
	// Unannounced: the lock was freed, but nobody was told, since the connection's user may not publish on the
	// lock's channel. Waiting processes find the lock free when a keyspace notification wakes them (if the
	// server sends them) or their timer for the holder's expiry fires. The queue keeps its order.
	Unannounced
)

// ReleaseNext releases n.Lock if it still holds value and passes it on as next says. It returns the fencing
// token of the successor when it HandedOver.
func ReleaseNext(ctx context.Context, c redis.Scripter, n keys.Names, value string, publish Publish, next Next) (Outcome, int64, error) {
	return releaseAnswer(releaseScript.Run(ctx, c, releaseKeys(n), releaseArgs(value, publish, next)...))
}

// QueuedRelease is ReleaseNext's EVALSHA, queued on a pipeline that may hold other commands too.
type QueuedRelease struct{ cmd *redis.Cmd }

// QueueRelease queues ReleaseNext's script call on p, by its SHA1. Result reads the answer once p ran.
func QueueRelease(ctx context.Context, p redis.Pipeliner, n keys.Names, value string, publish Publish, next Next) QueuedRelease {
	return QueuedRelease{releaseScript.EvalSha(ctx, p, releaseKeys(n), releaseArgs(value, publish, next)...)}
}

// Result is ReleaseNext's answer. A server that does not have the script (NOSCRIPT, after a restart or SCRIPT
// FLUSH) answers ErrNoScript, with nothing done: the caller runs ReleaseNext, which loads it.
func (q QueuedRelease) Result() (Outcome, int64, error) {
	if err := q.cmd.Err(); redis.HasErrorPrefix(err, "NOSCRIPT") {
		return NotHeld, 0, fmt.Errorf("%w: %w", ErrNoScript, err)
	}
	return releaseAnswer(q.cmd)
}

// ErrNoScript is QueuedRelease.Result's answer when the server did not have the script.
var ErrNoScript = errors.New("keyward: the server does not have the script")

func releaseArgs(value string, publish Publish, next Next) []any {
	window := next.Window
	if window <= 0 {
		window = DefaultClaimWindow
	}
	cohort := "0"
	if next.Cohort {
		cohort = "1"
	}
	return []any{value, string(publish), window.Milliseconds(), next.Successor, next.TTL.Milliseconds(),
		next.Fence, cohort, next.Waiter, next.QueueTTL.Milliseconds(), next.Reserve,
		max(CounterTTL(next.HolderTTL), time.Millisecond).Milliseconds()}
}

func releaseAnswer(cmd *redis.Cmd) (Outcome, int64, error) {
	res, err := cmd.Int64Slice()
	if err != nil {
		return NotHeld, 0, Classify(err)
	}
	if len(res) != 2 || res[0] < 0 || res[0] > int64(Unannounced) {
		return NotHeld, 0, fmt.Errorf("keyward: release script answered %v", res)
	}
	return Outcome(res[0]), res[1], nil
}

// Release deletes n.Lock if it still holds value, or reserves it for the first waiting process, and announces
// the release on n.Channel. It reports whether the lock was held by value: a release that the user may not
// announce still frees the lock (Unannounced), and is reported as one.
func Release(ctx context.Context, c redis.Scripter, n keys.Names, value string, publish Publish) (bool, error) {
	out, _, err := ReleaseNext(ctx, c, n, value, publish, Next{})
	return out != NotHeld, err
}

// Refresh sets the ttl of n.Lock if it still holds value. It reports whether the lock was held by value.
func Refresh(ctx context.Context, c redis.Scripter, n keys.Names, value string, ttl time.Duration) (bool, error) {
	res, err := refreshScript.Run(ctx, c, []string{n.Lock}, value, ttl.Milliseconds()).Int64()
	return res == 1, Classify(err)
}

// PTTL returns the remaining ttl of n.Lock while it holds value (negative: no expiry), and whether it does.
func PTTL(ctx context.Context, c redis.Scripter, n keys.Names, value string) (time.Duration, bool, error) {
	res, err := pttlScript.Run(ctx, c, []string{n.Lock}, value).Int64()
	if err != nil {
		return 0, false, Classify(err)
	}
	if res == -3 {
		return 0, false, nil
	}
	return time.Duration(res) * time.Millisecond, true, nil
}

// Classify wraps a Redis error reply that keyward has a sentinel for, so that both errors.Is(err, sentinel) and
// the Redis error itself are available. Other errors (network, context) are returned as they are; nil stays nil.
func Classify(err error) error {
	var reply redis.Error
	if err == nil || !errors.As(err, &reply) {
		return err
	}
	msg := reply.Error()
	for _, c := range classes {
		if c.match(msg) {
			return fmt.Errorf("%w: %w", c.sentinel, err)
		}
	}
	return err
}

var classes = []struct {
	match    func(msg string) bool
	sentinel error
}{
	{code("WRONGTYPE"), keyward.ErrWrongType},
	{code("READONLY"), keyward.ErrReadOnly},
	{noPermission, keyward.ErrNoPermission},
	{code("OOM"), keyward.ErrOutOfMemory},
}

// code matches an error reply with the code prefix: Redis 7 answers a script's failed call with the call's own
// error; older servers and miniredis wrap it as "ERR Error running script (...): @user_script:16: WRONGTYPE ...".
func code(prefix string) func(string) bool {
	return func(msg string) bool {
		return strings.HasPrefix(msg, prefix+" ") || strings.Contains(msg, ": "+prefix+" ")
	}
}

// noPermission matches the ACL refusals. Outside a script, and for the keys EVAL is given, Redis answers NOPERM
// ("NOPERM this user has no permissions to run the 'time' command", "... to access one of the keys used as
// arguments", "... to access one of the channels used as arguments"). A call refused inside a script is an ERR
// instead, in Redis 7 as before: "ERR The user executing the script can't run this command or subcommand
// script: <sha>, on @user_script:1.", "... can't access at least one of the keys mentioned in the command
// arguments ...", "... can't publish to the channel mentioned in the command ...", "... is lacking the
// permissions for the command ...".
func noPermission(msg string) bool {
	return code("NOPERM")(msg) || strings.Contains(msg, "The user executing the script ")
}

// IsReply reports whether err is an error reply from the server (the command ran and was refused) rather than a
// failure to get an answer (network, timeout, cancelled context), after which the command may or may not have run.
func IsReply(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply)
}

func releaseKeys(n keys.Names) []string { return []string{n.Lock, n.Channel, n.Queue, n.Fence} }
