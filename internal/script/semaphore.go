package script

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward/internal/keys"
)

var (
	//go:embed semaphore_lib.lua
	semaphoreLibSrc string
	//go:embed semaphore_acquire.lua
	semaphoreAcquireSrc string
	//go:embed semaphore_release.lua
	semaphoreReleaseSrc string
	//go:embed semaphore_refresh.lua
	semaphoreRefreshSrc string

	semaphoreAcquireScript = redis.NewScript(guardSrc + fenceSrc + semaphoreLibSrc + semaphoreAcquireSrc)
	semaphoreReleaseScript = redis.NewScript(guardSrc + fenceSrc + semaphoreLibSrc + semaphoreReleaseSrc)
	semaphoreRefreshScript = redis.NewScript(guardSrc + fenceSrc + semaphoreLibSrc + semaphoreRefreshSrc)
)

// SemaphoreKeys are the Redis names of one semaphore, all in the cluster slot of its key.
type SemaphoreKeys struct {
	// Holders is the semaphore's key itself: a sorted set of the permits' values, scored by their expiry in
	// milliseconds of the server's clock.
	Holders string
	// Reserved is a sorted set of the processes for which a released place is held for a claim window, scored by
	// the window's end.
	Reserved string
	// Queue is the sorted set of processes waiting for a permit, in order of arrival.
	Queue string
	// Fence is the fencing counter.
	Fence string
	// Channel is where free places are announced to everyone: the channel a watch on Holders subscribes to.
	Channel string
	// Waiters is the prefix of the names of the waiting processes: the scripts tell a process with id what
	// concerns only it on the channel Waiters+id+":released" (see WaiterChannel).
	Waiters string
}

// SemaphoreKeysFor returns the names of the semaphore whose key is key.
func SemaphoreKeysFor(key string) SemaphoreKeys {
	n := keys.For(key)
	return SemaphoreKeys{
		Holders:  key,
		Reserved: keys.Derive(key, "reserved"),
		Queue:    n.Queue,
		Fence:    n.Fence,
		Channel:  n.Channel,
		Waiters:  keys.Derive(key, "w:"),
	}
}

// WaiterChannel returns the channel on which the scripts tell the waiting process id what concerns only it (a
// place reserved for it; what the first in line must watch). It is in the semaphore's slot.
func (k SemaphoreKeys) WaiterChannel(id string) string { return keys.Derive(k.Waiters+id, "released") }

// SemaphoreTry is one acquire attempt.
type SemaphoreTry struct {
	// Value is the permit's value: its token and metadata.
	Value string
	// TTL is the permit's ttl, in whole milliseconds.
	TTL time.Duration
	// Limit is the caller's limit: the permit is taken only while fewer are held (or reserved).
	Limit int
	// Waiter is the id of the caller's process when it waits: it claims a place reserved for it, and it joins the
	// queue when there is no room. "" for a plain try.
	Waiter string
	// QueueTTL is how long the queue lives after this join, at least.
	QueueTTL time.Duration
	// Requeue keeps the process in the queue, at the back, when it takes the permit: it has more waiters.
	Requeue bool
	// Fencing hands out a fencing token with the permit.
	Fencing bool
	// Publish is the command the script announces with.
	Publish Publish
}

// SemaphoreWait is what a waiting process needs to know to wait without polling.
type SemaphoreWait struct {
	// Wait is how long until enough permits expire that there is room, counting each reservation as a place that
	// will be claimed; -1 ms when reservations alone fill the semaphore, -3 ms when not computed (the permit was
	// taken and nobody needs it). Meaningless when Room.
	Wait time.Duration
	// Room is true when there is room now.
	Room bool
	// Reserved are the places held for processes, by process id, with the time left of their windows.
	Reserved map[string]time.Duration
}

// SemaphoreState is the answer of an acquire attempt.
type SemaphoreState struct {
	// OK is true when the permit was taken.
	OK bool
	// Fence is its fencing token, when OK and fencing was asked for.
	Fence int64
	// First is true when the caller's process is first in line after the attempt: it is the one told about
	// reservations from now on.
	First bool
	SemaphoreWait
}

// SemaphoreAcquire takes a permit for t.Value if the semaphore has room by t.Limit (expired permits and unclaimed
// reservations are reclaimed first), or the place reserved for t.Waiter. Without room it queues t.Waiter. A permit
// that t.Value holds already (the client resent the acquire after a dropped connection, or a release handed it
// over and its answer was lost) is renewed, whatever the count.
func SemaphoreAcquire(ctx context.Context, c redis.Scripter, k SemaphoreKeys, t SemaphoreTry) (SemaphoreState, error) {
	res, err := semaphoreAcquireScript.Run(ctx, c, k.list(),
		t.Value, t.TTL.Milliseconds(), t.Limit, t.Waiter, t.QueueTTL.Milliseconds(), fenceTTL(t.Fencing, t.TTL),
		flag(t.Requeue), string(t.Publish), k.Waiters).Slice()
	if err != nil {
		return SemaphoreState{}, Classify(err)
	}
	bad := fmt.Errorf("keyward: semaphore acquire script answered %v", res)
	if len(res) < 4 {
		return SemaphoreState{}, bad
	}
	var n [3]int64
	for i := range n {
		v, ok := res[i].(int64)
		if !ok {
			return SemaphoreState{}, bad
		}
		n[i] = v
	}
	w, ok := parseWait(res[3:])
	if !ok {
		return SemaphoreState{}, bad
	}
	return SemaphoreState{OK: n[0] == 1, Fence: n[1], First: n[2] == 1, SemaphoreWait: w}, nil
}

// parseWait reads {wait, id1, ms1, ...} as the scripts return it, or as strings in an "s" message.
func parseWait(res []any) (SemaphoreWait, bool) {
	ms := func(v any) (time.Duration, bool) {
		switch n := v.(type) {
		case int64:
			return time.Duration(n) * time.Millisecond, true
		case string:
			i, err := strconv.ParseInt(n, 10, 64)
			return time.Duration(i) * time.Millisecond, err == nil
		}
		return 0, false
	}
	if len(res)%2 == 0 {
		return SemaphoreWait{}, false
	}
	wait, ok := ms(res[0])
	if !ok {
		return SemaphoreWait{}, false
	}
	w := SemaphoreWait{Wait: wait, Room: wait == -2*time.Millisecond}
	for i := 1; i < len(res); i += 2 {
		id, ok1 := res[i].(string)
		d, ok2 := ms(res[i+1])
		if !ok1 || !ok2 {
			return SemaphoreWait{}, false
		}
		if w.Reserved == nil {
			w.Reserved = map[string]time.Duration{}
		}
		w.Reserved[id] = d
	}
	return w, true
}

// SemaphoreGiveBack is a release.
type SemaphoreGiveBack struct {
	// Value is the permit's value; "" makes Waiter leave the line instead, giving back a place reserved for it.
	Value string
	// Limit is the caller's limit: a place is passed on only while fewer are held.
	Limit int
	// Window is the claim window of the first waiting process.
	Window time.Duration
	// Successor is the value of a waiter of the caller's own process that takes the permit over in the same
	// round trip ("" for none), for TTL.
	Successor string
	TTL       time.Duration
	// Cohort lets the successor take the permit even while other processes wait.
	Cohort bool
	// Waiter is the caller's process id ("" for none). A release changes its place in line only where no acquire
	// of the process can be on its way: it leaves the line when its last waiter takes the permit over (see More),
	// and goes to the back of the line, if it was in it, when it yields its turn to another process.
	Waiter string
	// More says the process has waiters besides the successor.
	More bool
	// Fencing hands out a fencing token to the successor.
	Fencing bool
	// Publish is the command the script announces with.
	Publish Publish
}

// SemaphoreReleased is the answer of a release.
type SemaphoreReleased struct {
	Outcome Outcome
	// Fence is the successor's fencing token, when it HandedOver with fencing.
	Fence int64
	// First is true when the caller's process is first in line after the release.
	First bool
}

// SemaphoreRelease removes the permit g.Value if it is still held and passes its place on: to g.Successor, to the
// first waiting process (reserved for g.Window), or to anyone.
func SemaphoreRelease(ctx context.Context, c redis.Scripter, k SemaphoreKeys, g SemaphoreGiveBack) (SemaphoreReleased, error) {
	res, err := semaphoreReleaseScript.Run(ctx, c, k.list(),
		g.Value, string(g.Publish), g.Limit, max(g.Window, time.Millisecond).Milliseconds(), g.Successor,
		g.TTL.Milliseconds(), fenceTTL(g.Fencing, g.TTL), flag(g.Cohort), g.Waiter, flag(g.More),
		k.Waiters).Int64Slice()
	if err != nil {
		return SemaphoreReleased{}, Classify(err)
	}
	if len(res) != 3 || res[0] < 0 || res[0] > 2 {
		return SemaphoreReleased{}, fmt.Errorf("keyward: semaphore release script answered %v", res)
	}
	return SemaphoreReleased{Outcome: Outcome(res[0]), Fence: res[1], First: res[2] == 1}, nil
}

// SemaphoreRefresh sets the expiry of the permit value to now + ttl (server time) if it is still held, and
// reports whether it was. limit is the caller's (for what the first in line is told when the expiry comes sooner).
func SemaphoreRefresh(ctx context.Context, c redis.Scripter, k SemaphoreKeys, value string, ttl time.Duration, limit int, publish Publish) (bool, error) {
	res, err := semaphoreRefreshScript.Run(ctx, c, k.list(), value, ttl.Milliseconds(), string(publish), limit,
		k.Waiters).Int64()
	return res == 1, Classify(err)
}

func (k SemaphoreKeys) list() []string {
	return []string{k.Holders, k.Reserved, k.Queue, k.Fence, k.Channel}
}

func fenceTTL(fencing bool, ttl time.Duration) int64 {
	if !fencing {
		return 0
	}
	return CounterTTL(ttl).Milliseconds()
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// SemaphoreMessageKind says what a message of the semaphore scripts announces.
type SemaphoreMessageKind int

const (
	// SemaphoreFreed: a place is free to anyone who tries (also any message this package does not know).
	SemaphoreFreed SemaphoreMessageKind = iota
	// SemaphoreReserved: a place is reserved for the process whose channel it came on, for Duration.
	SemaphoreReserved
	// SemaphoreFirst: the process whose channel it came on is first in line; Wait says what it needs to know.
	SemaphoreFirst
	// SemaphoreClaimed: (to the first in line) Process claimed its reservation; the permit expires in Duration.
	SemaphoreClaimed
)

// SemaphoreMessage is a message the semaphore scripts publish.
type SemaphoreMessage struct {
	Kind     SemaphoreMessageKind
	Process  string
	Duration time.Duration
	Wait     SemaphoreWait
}

// ParseSemaphoreMessage reads a message of the semaphore scripts: "", "r <ms>", "s <wait> [<id> <ms>]…",
// "c <id> <ms>". Anything else reads as SemaphoreFreed, which makes a waiter look again: never wrong, at worst a
// wasted try.
func ParseSemaphoreMessage(payload string) SemaphoreMessage {
	f := strings.Fields(payload)
	ms := func(s string) (time.Duration, bool) {
		n, err := strconv.ParseInt(s, 10, 64)
		return time.Duration(n) * time.Millisecond, err == nil
	}
	switch {
	case len(f) == 2 && f[0] == "r":
		if d, ok := ms(f[1]); ok {
			return SemaphoreMessage{Kind: SemaphoreReserved, Duration: d}
		}
	case len(f) == 3 && f[0] == "c":
		if d, ok := ms(f[2]); ok {
			return SemaphoreMessage{Kind: SemaphoreClaimed, Process: f[1], Duration: d}
		}
	case len(f) >= 2 && f[0] == "s":
		rest := make([]any, len(f)-1)
		for i, v := range f[1:] {
			rest[i] = v
		}
		if w, ok := parseWait(rest); ok {
			return SemaphoreMessage{Kind: SemaphoreFirst, Wait: w}
		}
	}
	return SemaphoreMessage{Kind: SemaphoreFreed}
}
