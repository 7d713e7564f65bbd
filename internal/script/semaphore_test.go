package script_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/internal/script"
)

// sem runs the semaphore scripts against one server for one semaphore.
type sem struct {
	t   *testing.T
	rdb *redis.Client
	k   script.SemaphoreKeys
}

func newSem(t *testing.T, rdb *redis.Client, name string) sem {
	return sem{t: t, rdb: rdb, k: script.SemaphoreKeysFor(name)}
}

func (s sem) try(value string, ttl time.Duration, limit int, waiter string) script.SemaphoreState {
	s.t.Helper()
	st, err := script.SemaphoreAcquire(context.Background(), s.rdb, s.k, script.SemaphoreTry{
		Value: value, TTL: ttl, Limit: limit, Waiter: waiter, QueueTTL: time.Minute, Publish: script.PublishPlain,
	})
	require.NoError(s.t, err)
	return st
}

func (s sem) release(g script.SemaphoreGiveBack) script.SemaphoreReleased {
	s.t.Helper()
	g.Publish = script.PublishPlain
	if g.Window == 0 {
		g.Window = 10 * time.Second // long enough for a slow machine
	}
	res, err := script.SemaphoreRelease(context.Background(), s.rdb, s.k, g)
	require.NoError(s.t, err)
	return res
}

func (s sem) refresh(value string, ttl time.Duration) bool {
	s.t.Helper()
	ok, err := script.SemaphoreRefresh(context.Background(), s.rdb, s.k, value, ttl, 1, script.PublishPlain)
	require.NoError(s.t, err)
	return ok
}

func (s sem) holders() []string {
	return s.rdb.ZRange(context.Background(), s.k.Holders, 0, -1).Val()
}

func (s sem) queue() []string {
	return s.rdb.ZRange(context.Background(), s.k.Queue, 0, -1).Val()
}

// listen subscribes to the channel that everyone hears ("") or to the channel of the process id, and returns a
// function that reads the next message, and one that says whether a message is pending.
func (s sem) listen(id string) (next func() string, pending func() bool) {
	ctx := context.Background()
	channel := s.k.Channel
	if id != "" {
		channel = s.k.WaiterChannel(id)
	}
	sub := s.rdb.Subscribe(ctx, channel)
	s.t.Cleanup(func() { _ = sub.Close() })
	_, err := sub.Receive(ctx) // the subscription is confirmed
	require.NoError(s.t, err)
	next = func() string {
		s.t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		msg, err := sub.ReceiveMessage(ctx)
		require.NoError(s.t, err)
		return msg.Payload
	}
	pending = func() bool {
		// A PING goes through the same connection: its answer comes after every message sent before it.
		require.NoError(s.t, sub.Ping(ctx))
		msg, err := sub.Receive(ctx)
		require.NoError(s.t, err)
		_, pong := msg.(*redis.Pong)
		return !pong
	}
	return next, pending
}

func TestSemaphoreKeysShareTheSlot(t *testing.T) {
	for _, name := range []string{"jobs", "jobs{eu}", "a}b", "{x}y", "x{}y"} {
		k := script.SemaphoreKeysFor(name)
		waiter := k.WaiterChannel("zP3_-q")
		for _, derived := range []string{k.Reserved, k.Queue, k.Fence, k.Channel, waiter} {
			assert.Equal(t, keys.Slot(name), keys.Slot(derived), "%s and %s", name, derived)
		}
		assert.Equal(t, name, k.Holders)
		assert.Equal(t, keys.For(name).Channel, k.Channel, "the channel a keyspace watch on the key subscribes to")
		assert.Equal(t, k.Waiters+"zP3_-q:released", waiter, "the channel the scripts publish on for a process")
	}
}

func TestSemaphoreAcquireUpToTheLimit(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		s := newSem(t, rdb, "pool")
		// A process with more waiters learns what they need to know to wait.
		more := func(value string, ttl time.Duration) script.SemaphoreState {
			st, err := script.SemaphoreAcquire(context.Background(), rdb, s.k, script.SemaphoreTry{Value: value,
				TTL: ttl, Limit: 2, Waiter: "me", Requeue: true, QueueTTL: time.Minute, Publish: script.PublishPlain})
			require.NoError(t, err)
			return st
		}
		a := more("a", 10*time.Second)
		require.True(t, a.OK)
		assert.True(t, a.Room, "one place left")
		assert.Zero(t, a.Fence, "no fencing asked for")
		b := more("b", 20*time.Second)
		require.True(t, b.OK)
		assert.False(t, b.Room)
		assert.InDelta(t, 10*time.Second, b.Wait, float64(time.Second), "room when a expires")
		assert.Equal(t, []string{"me"}, s.queue(), "it stays in line")
		require.NoError(t, rdb.Del(context.Background(), s.k.Queue).Err())

		c := s.try("c", 10*time.Second, 2, "")
		assert.False(t, c.OK)
		assert.False(t, c.First, "a plain try does not queue")
		assert.InDelta(t, 10*time.Second, c.Wait, float64(time.Second))
		assert.ElementsMatch(t, []string{"a", "b"}, s.holders())
		assert.Empty(t, s.queue())

		d := s.try("d", 10*time.Second, 3, "")
		require.True(t, d.OK, "a caller with a higher limit is admitted")
		assert.Equal(t, -3*time.Millisecond, d.Wait, "a plain try that succeeds is told nothing more")
		e := s.try("e", 10*time.Second, 3, "p")
		assert.False(t, e.OK)
		assert.True(t, e.First, "alone in line")
		assert.InDelta(t, 10*time.Second, e.Wait, float64(time.Second), "the earliest of a and d")

		assert.InDelta(t, 20*time.Second, rdb.PTTL(context.Background(), s.k.Holders).Val(), float64(time.Second),
			"the set lives as long as its longest permit")
	})
}

func TestSemaphoreReclaimsExpiredPermits(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		s := newSem(t, rdb, "pool")
		past := float64(time.Now().Add(-time.Hour).UnixMilli())
		require.NoError(t, rdb.ZAdd(ctx, s.k.Holders, redis.Z{Score: past, Member: "crashed"}).Err())
		a := s.try("a", time.Second, 1, "")
		require.True(t, a.OK, "the crashed holder's expired permit does not count")
		assert.Equal(t, []string{"a"}, s.holders())

		require.NoError(t, rdb.ZAdd(ctx, s.k.Holders, redis.Z{Score: past, Member: "crashed"}).Err())
		assert.False(t, s.refresh("crashed", time.Second), "an expired permit cannot be refreshed back")
		assert.Equal(t, script.NotHeld, s.release(script.SemaphoreGiveBack{Value: "crashed", Limit: 1}).Outcome)
		assert.Equal(t, []string{"a"}, s.holders())
	})
}

func TestSemaphoreRelease(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		s := newSem(t, rdb, "pool")
		everyone, _ := s.listen("")
		require.True(t, s.try("a", time.Minute, 1, "").OK)

		assert.Equal(t, script.NotHeld, s.release(script.SemaphoreGiveBack{Value: "unknown", Limit: 1}).Outcome)
		assert.Equal(t, script.Released, s.release(script.SemaphoreGiveBack{Value: "a", Limit: 1}).Outcome)
		assert.Empty(t, s.holders())
		assert.Equal(t, "", everyone(), "a free place is announced to everyone")
		assert.Equal(t, script.NotHeld, s.release(script.SemaphoreGiveBack{Value: "a", Limit: 1}).Outcome,
			"a second release finds nothing")
		assert.Zero(t, rdb.Exists(ctx, s.k.Holders).Val(), "nothing is left behind")
	})
}

func TestSemaphoreReservationGoesToTheFirstInLine(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		s := newSem(t, rdb, "pool")
		everyone, announced := s.listen("")
		toP1, _ := s.listen("p1")
		toP2, toP2Pending := s.listen("p2")
		require.True(t, s.try("a", time.Minute, 1, "").OK)
		p1 := s.try("p1-value", time.Minute, 1, "p1")
		require.False(t, p1.OK)
		assert.True(t, p1.First)
		p2 := s.try("p2-value", time.Minute, 1, "p2")
		require.False(t, p2.OK)
		assert.False(t, p2.First)
		assert.Equal(t, []string{"p1", "p2"}, s.queue(), "waiters queue in arrival order")

		assert.Equal(t, script.Released,
			s.release(script.SemaphoreGiveBack{Value: "a", Limit: 1, Window: 20 * time.Second}).Outcome)
		assert.Equal(t, "r 20000", toP1(), "the place is reserved for p1, and only p1 is told")
		assert.Regexp(t, `^s -1 p1 (20000|199\d\d)$`, toP2(), "p2, now first in line, watches p1's claim window")
		assert.False(t, announced(), "nothing for everyone")
		assert.Equal(t, []string{"p2"}, s.queue())

		p2 = s.try("p2-value", time.Minute, 1, "p2")
		assert.False(t, p2.OK, "p2 cannot take the place reserved for p1")
		assert.True(t, p2.First)
		assert.Equal(t, -1*time.Millisecond, p2.Wait, "the reservation alone fills the semaphore")
		require.Contains(t, p2.Reserved, "p1")
		assert.InDelta(t, 20*time.Second, p2.Reserved["p1"], float64(time.Second))
		assert.False(t, s.try("x", time.Minute, 1, "").OK, "nor can a plain try")
		assert.False(t, toP2Pending(), "failed tries tell nobody")

		p1 = s.try("p1-value", 30*time.Second, 1, "p1")
		require.True(t, p1.OK, "p1 claims its place")
		assert.False(t, p1.First)
		assert.Equal(t, "c p1 30000", toP2(), "p2 learns of the claim, and when the claimed permit expires")
		assert.Equal(t, []string{"p1-value"}, s.holders())
		assert.Equal(t, []string{"p2"}, s.queue(), "p1 left the line")
		assert.False(t, announced())
		_ = everyone
	})
}

func TestSemaphoreUnclaimedReservationExpires(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		s := newSem(t, rdb, "pool")
		require.True(t, s.try("a", time.Minute, 1, "").OK)
		require.False(t, s.try("dead-value", time.Minute, 1, "dead").OK)
		s.release(script.SemaphoreGiveBack{Value: "a", Limit: 1})
		// The window ends: pretend it was in the past.
		require.NoError(t, rdb.ZAdd(ctx, s.k.Reserved, redis.Z{Score: float64(time.Now().Add(-time.Hour).UnixMilli()), Member: "dead"}).Err())
		assert.True(t, s.try("b", time.Minute, 1, "").OK, "an unclaimed reservation is reclaimed after its window")
	})
}

func TestSemaphoreLeaveGivesTheReservationOn(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		s := newSem(t, rdb, "pool")
		toP1, _ := s.listen("p1")
		toP2, _ := s.listen("p2")
		require.True(t, s.try("a", time.Minute, 1, "").OK)
		require.False(t, s.try("v1", time.Minute, 1, "p1").OK)
		require.False(t, s.try("v2", time.Minute, 1, "p2").OK)
		s.release(script.SemaphoreGiveBack{Value: "a", Limit: 1})
		assert.Equal(t, "r 10000", toP1())
		assert.Regexp(t, `^s -1 p1 `, toP2())

		out := s.release(script.SemaphoreGiveBack{Limit: 1, Waiter: "p1"}) // p1 stops waiting
		assert.Equal(t, script.Released, out.Outcome)
		assert.Equal(t, "r 10000", toP2(), "p1's place goes to p2 at once")
		assert.Empty(t, s.queue())

		assert.Equal(t, script.NotHeld, s.release(script.SemaphoreGiveBack{Limit: 1, Waiter: "p3"}).Outcome,
			"nothing reserved for p3")
	})
}

func TestSemaphoreHandOver(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		s := newSem(t, rdb, "pool")
		require.True(t, s.try("a", time.Minute, 1, "").OK)
		require.False(t, s.try("mine", time.Minute, 1, "me").OK)

		out := s.release(script.SemaphoreGiveBack{Value: "a", Limit: 1, Successor: "mine", TTL: time.Minute,
			Waiter: "me", Fencing: true})
		assert.Equal(t, script.HandedOver, out.Outcome, "nobody else waits: the successor takes it")
		assert.Positive(t, out.Fence)
		assert.False(t, out.First)
		assert.Equal(t, []string{"mine"}, s.holders())
		assert.Empty(t, s.queue(), "a process without more waiters leaves the line")

		require.False(t, s.try("other", time.Minute, 1, "other").OK)
		require.False(t, s.try("mine2", time.Minute, 1, "me").OK)
		out = s.release(script.SemaphoreGiveBack{Value: "mine", Limit: 1, Successor: "mine2", TTL: time.Minute,
			Cohort: true, Waiter: "me", More: true})
		assert.Equal(t, script.HandedOver, out.Outcome, "within its cohort, a process keeps the permit")
		assert.Equal(t, []string{"mine2"}, s.holders())
		assert.Equal(t, []string{"other", "me"}, s.queue(), "and its place in line, for its other waiters")

		out = s.release(script.SemaphoreGiveBack{Value: "mine2", Limit: 1, Successor: "mine3", TTL: time.Minute,
			Waiter: "me", More: true})
		assert.Equal(t, script.Released, out.Outcome, "its cohort used up, it yields to the process that waits")
		assert.True(t, out.First, "and is first in line after it")
		assert.Empty(t, s.holders())
		assert.Equal(t, []string{"other"}, s.rdb.ZRange(context.Background(), s.k.Reserved, 0, -1).Val())
		assert.Equal(t, []string{"me"}, s.queue())
	})
}

func TestSemaphoreLastWaiterServedGivesItsReservationOn(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		s := newSem(t, rdb, "pool")
		toOther, _ := s.listen("other")
		require.True(t, s.try("a", time.Minute, 2, "").OK)
		require.True(t, s.try("b", time.Minute, 2, "").OK)
		require.False(t, s.try("w", time.Minute, 2, "me").OK)
		require.False(t, s.try("o", time.Minute, 2, "other").OK)
		s.release(script.SemaphoreGiveBack{Value: "a", Limit: 2}) // another process: the place is reserved for me
		require.Equal(t, []string{"me"}, s.rdb.ZRange(context.Background(), s.k.Reserved, 0, -1).Val())
		assert.Regexp(t, `^s \d+ me `, toOther(), "other, first in line now, watches my window")

		// Before reading that message, my own holder hands its permit to my only waiter.
		out := s.release(script.SemaphoreGiveBack{Value: "b", Limit: 2, Successor: "w", TTL: time.Minute,
			Cohort: true, Waiter: "me"})
		assert.Equal(t, script.HandedOver, out.Outcome)
		assert.Equal(t, "r 10000", toOther(), "the place reserved for me goes on to the next process")
		assert.Equal(t, []string{"other"}, s.rdb.ZRange(context.Background(), s.k.Reserved, 0, -1).Val())
		assert.Empty(t, s.queue())
	})
}

func TestSemaphoreAcquireRenewsAPermitHandedOverUnseen(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		s := newSem(t, rdb, "pool")
		require.True(t, s.try("a", time.Minute, 1, "").OK)
		// The release hands the permit to "mine", but its answer is lost: the waiter does not know.
		s.release(script.SemaphoreGiveBack{Value: "a", Limit: 1, Successor: "mine", TTL: time.Minute, Waiter: "me"})

		st, err := script.SemaphoreAcquire(context.Background(), rdb, s.k, script.SemaphoreTry{Value: "mine",
			TTL: 2 * time.Minute, Limit: 1, Waiter: "me", QueueTTL: time.Minute, Publish: script.PublishPlain})
		require.NoError(t, err)
		assert.True(t, st.OK, "the waiter's try renews the permit it was handed")
		assert.Equal(t, []string{"mine"}, s.holders(), "without taking a second place")
		expiry := rdb.ZScore(context.Background(), s.k.Holders, "mine").Val()
		assert.InDelta(t, serverMicros(t, rdb)/1000+2*time.Minute.Milliseconds(), expiry, 5000, "with the try's ttl")
		assert.Empty(t, s.queue())
	})
}

func TestSemaphoreSoonerExpiryIsToldToTheFirstInLine(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		s := newSem(t, rdb, "pool")
		toP, pending := s.listen("p")
		require.True(t, s.try("a", time.Minute, 1, "").OK)
		require.False(t, s.try("w", time.Minute, 1, "p").OK)

		assert.True(t, s.refresh("a", 2*time.Minute))
		assert.False(t, pending(), "a later expiry changes nothing for the waiter")
		assert.True(t, s.refresh("a", 10*time.Second))
		assert.Regexp(t, `^s (10000|9999|9998)$`, toP(), "a sooner one is told")
		assert.InDelta(t, 2*time.Minute, rdb.PTTL(ctx, s.k.Holders).Val(), float64(time.Second),
			"the set outlives its longest permit")

		out := s.release(script.SemaphoreGiveBack{Value: "a", Limit: 1, Successor: "b", TTL: time.Second, Cohort: true})
		assert.Equal(t, script.HandedOver, out.Outcome)
		assert.Regexp(t, `^s (1000|999|998)$`, toP(), "so is a hand-over to a shorter ttl")

		assert.False(t, s.refresh("nobody", time.Second))
	})
}

func TestSemaphoreLoweredLimitPassesNothingOn(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		s := newSem(t, rdb, "pool")
		everyone, _ := s.listen("")
		toP, _ := s.listen("p")
		for _, v := range []string{"a", "b", "c"} {
			require.True(t, s.try(v, time.Minute, 3, "").OK)
		}
		require.False(t, s.try("w", time.Minute, 1, "p").OK, "limit lowered to 1: no one new")
		assert.ElementsMatch(t, []string{"a", "b", "c"}, s.holders(), "and no one evicted")

		out := s.release(script.SemaphoreGiveBack{Value: "a", Limit: 1, Successor: "mine", TTL: time.Minute})
		assert.Equal(t, script.Released, out.Outcome, "no hand-over while the count is above the limit")
		assert.Equal(t, "", everyone(), "the place is announced free to processes with a higher limit")
		assert.Equal(t, []string{"p"}, s.queue(), "and not reserved for a process in line")
		s.release(script.SemaphoreGiveBack{Value: "b", Limit: 1})
		assert.Equal(t, "", everyone())
		s.release(script.SemaphoreGiveBack{Value: "c", Limit: 1})
		assert.Equal(t, "r 10000", toP(), "below the limit again, the place goes to the first in line")
	})
}

func TestSemaphoreFencing(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		s := newSem(t, rdb, "pool")
		var last int64
		for _, v := range []string{"a", "b", "c"} {
			st, err := script.SemaphoreAcquire(context.Background(), rdb, s.k, script.SemaphoreTry{
				Value: v, TTL: time.Minute, Limit: 3, Fencing: true, Publish: script.PublishPlain})
			require.NoError(t, err)
			require.True(t, st.OK)
			assert.Greater(t, st.Fence, last)
			last = st.Fence
		}
	})
}

func TestSemaphoreWrongType(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		tests := []struct {
			name string
			key  func(script.SemaphoreKeys) string
		}{
			{"holders", func(k script.SemaphoreKeys) string { return k.Holders }},
			{"reservations", func(k script.SemaphoreKeys) string { return k.Reserved }},
			{"queue", func(k script.SemaphoreKeys) string { return k.Queue }},
			{"fencing counter", func(k script.SemaphoreKeys) string { return k.Fence }},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				k := script.SemaphoreKeysFor("typed-" + tt.name)
				require.NoError(t, rdb.HSet(ctx, tt.key(k), "f", "v").Err())
				_, err := script.SemaphoreAcquire(ctx, rdb, k, script.SemaphoreTry{Value: "v", TTL: time.Second,
					Limit: 1, Waiter: "p", QueueTTL: time.Minute, Fencing: true, Publish: script.PublishPlain})
				require.ErrorIs(t, err, keyward.ErrWrongType)
				assert.Contains(t, err.Error(), "WRONGTYPE")
				if tt.name != "holders" {
					assert.Zero(t, rdb.Exists(ctx, k.Holders).Val(), "no permit is left behind")
				}
				if tt.name == "fencing counter" {
					// A permit taken without a fence, handed over with one: the hand-over fails and is undone.
					_, err := script.SemaphoreAcquire(ctx, rdb, k, script.SemaphoreTry{Value: "v", TTL: time.Minute,
						Limit: 1, Publish: script.PublishPlain})
					require.NoError(t, err)
				}
				_, err = script.SemaphoreRelease(ctx, rdb, k, script.SemaphoreGiveBack{Value: "v", Limit: 1,
					Window: time.Second, Successor: "s", TTL: time.Second, Waiter: "p", Fencing: true,
					Publish: script.PublishPlain})
				assert.ErrorIs(t, err, keyward.ErrWrongType)
				if tt.name == "fencing counter" {
					assert.Equal(t, []string{"v"}, rdb.ZRange(ctx, k.Holders, 0, -1).Val(), "the permit is still held")
				}
			})
		}
		k := script.SemaphoreKeysFor("listy")
		require.NoError(t, rdb.RPush(ctx, k.Holders, "x").Err())
		_, err := script.SemaphoreRefresh(ctx, rdb, k, "v", time.Second, 1, script.PublishPlain)
		assert.ErrorIs(t, err, keyward.ErrWrongType)
	})
}

func TestParseSemaphoreMessage(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		payload string
		want    script.SemaphoreMessage
	}{
		{"", script.SemaphoreMessage{Kind: script.SemaphoreFreed}},
		{"r 20", script.SemaphoreMessage{Kind: script.SemaphoreReserved, Duration: 20 * ms}},
		{"c abc 30000", script.SemaphoreMessage{Kind: script.SemaphoreClaimed, Process: "abc", Duration: 30000 * ms}},
		{"c abc", script.SemaphoreMessage{Kind: script.SemaphoreFreed}},
		{"s 3000", script.SemaphoreMessage{Kind: script.SemaphoreFirst, Wait: script.SemaphoreWait{Wait: 3000 * ms}}},
		{"s -1 abc 20 d-e 7", script.SemaphoreMessage{Kind: script.SemaphoreFirst, Wait: script.SemaphoreWait{
			Wait: -ms, Reserved: map[string]time.Duration{"abc": 20 * ms, "d-e": 7 * ms}}}},
		{"s -2", script.SemaphoreMessage{Kind: script.SemaphoreFirst, Wait: script.SemaphoreWait{Wait: -2 * ms, Room: true}}},
		{"r", script.SemaphoreMessage{Kind: script.SemaphoreFreed}},
		{"r x", script.SemaphoreMessage{Kind: script.SemaphoreFreed}},
		{"s 1 abc", script.SemaphoreMessage{Kind: script.SemaphoreFreed}},
		{"something new", script.SemaphoreMessage{Kind: script.SemaphoreFreed}},
	}
	for _, tt := range tests {
		t.Run(tt.payload, func(t *testing.T) {
			assert.Equal(t, tt.want, script.ParseSemaphoreMessage(tt.payload))
		})
	}
}
