package script_test

import (
	"context"
	"fmt"
	"sort"
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

// aclClient creates the ACL user name with rules on the server admin is connected to (replacing an earlier one),
// and returns a client that logs in as that user, with go-redis's default options otherwise.
func aclClient(t *testing.T, srv *redistest.Server, admin *redis.Client, name string, rules ...string) *redis.Client {
	t.Helper()
	args := []any{"ACL", "SETUSER", name, "reset", "on", ">secret"}
	for _, r := range rules {
		args = append(args, r)
	}
	require.NoError(t, admin.Do(context.Background(), args...).Err())
	return redistest.NewClient(t, &redis.Options{Addr: srv.Addr(), Username: name, Password: "secret"})
}

// snapshot is every key on the server, its type, its value (DUMP) and whether it expires.
func snapshot(t *testing.T, rdb *redis.Client) []string {
	t.Helper()
	ctx := context.Background()
	names, err := rdb.Keys(ctx, "*").Result()
	require.NoError(t, err)
	sort.Strings(names)
	var out []string
	for _, k := range names {
		dump, err := rdb.Dump(ctx, k).Result()
		require.NoError(t, err)
		out = append(out, fmt.Sprintf("%s %s %q expires=%t", k, rdb.Type(ctx, k).Val(), dump, rdb.PTTL(ctx, k).Val() > 0))
	}
	return out
}

// The users of the refusals below. Every one may run the scripts and touch every key (unless said otherwise); each
// lacks one thing a script needs after what it may do first.
var (
	// The user of the report: TIME is in none of these categories (only @fast), so it may not run it.
	reportedUser = []string{"~*", "&*", "+@read", "+@write", "+@scripting", "+@pubsub", "-@dangerous"}
	noTime       = []string{"~*", "&*", "+@all", "-time"}
	noZRem       = []string{"~*", "&*", "+@all", "-zrem"}
	noPExpire    = []string{"~*", "&*", "+@all", "-pexpire"}
	noPExpireAt  = []string{"~*", "&*", "+@all", "-pexpireat"}
	// The lock's key, queue and channel name, but not its fencing counter, which every script of a lock is given
	// (EVAL needs every key it is given): only Refresh and PTTL, whose scripts get the lock's key alone, remain.
	noFenceKey = []string{"~job", "~{job}:queue", "~{job}:released", "&*", "+@all"}
	noPublish  = []string{"~*", "resetchannels", "+@all"}
	noDel      = []string{"~*", "&*", "+@all", "-del"}
	noSet      = []string{"~*", "&*", "+@all", "-set"}
	noZPopMin  = []string{"~*", "&*", "+@all", "-zpopmin"}
	noZRange   = []string{"~*", "&*", "+@all", "-zrange"}
)

// TestRefusedCallsLeaveNothingBehind runs each script as a user that the server refuses one of the script's calls
// (a command, a key): the call fails with an error matching ErrNoPermission, and every key is as it was before.
func TestRefusedCallsLeaveNothingBehind(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := context.Background()
	n := keys.For("job")
	k := script.SemaphoreKeysFor("pool")
	ttl := time.Minute

	heldLock := func() { require.NoError(t, admin.Set(ctx, n.Lock, "other", ttl).Err()) }
	mine := func() { require.NoError(t, admin.Set(ctx, n.Lock, "mine", ttl).Err()) }
	// The holder's fence, for releases that set the counter to it.
	fenced := script.Next{Fence: 1_000_000, HolderTTL: ttl}
	counter := func() { require.NoError(t, admin.Set(ctx, n.Fence, 1_000, ttl).Err()) }
	waiting := func(id string) func() {
		return func() { require.NoError(t, admin.ZAdd(ctx, n.Queue, redis.Z{Score: 1, Member: id}).Err()) }
	}
	holding := func(value string) func() {
		return func() {
			expiry := serverMicros(t, admin)/1000 + ttl.Milliseconds()
			require.NoError(t, admin.ZAdd(ctx, k.Holders, redis.Z{Score: float64(expiry), Member: value}).Err())
		}
	}
	reservedFor := func(id string) func() {
		return func() { require.NoError(t, admin.Set(ctx, n.Lock, "reserved:"+id, ttl).Err()) }
	}
	semWaiting := func() { require.NoError(t, admin.ZAdd(ctx, k.Queue, redis.Z{Score: 1, Member: "proc"}).Err()) }
	semTry := script.SemaphoreTry{Value: "mine", TTL: ttl, Limit: 2, Waiter: "proc", QueueTTL: ttl, Fencing: true,
		Publish: script.PublishPlain}

	cases := []struct {
		name  string
		rules []string
		setUp []func()
		op    func(c *redis.Client) error
	}{
		{"the reported user acquires a lock", reportedUser, nil, func(c *redis.Client) error {
			_, err := script.Acquire(ctx, c, n, "mine", ttl)
			return err
		}},
		{"the reported user acquires a quorum lock's node without counter", reportedUser, nil, func(c *redis.Client) error {
			_, err := script.AcquireAbove(ctx, c, n, "mine", ttl, 5, "", 0)
			return err
		}},
		{"the reported user acquires a quorum lock's node with a counter", reportedUser, []func(){counter},
			func(c *redis.Client) error {
				_, err := script.AcquireAbove(ctx, c, n, "mine", ttl, 5, "", 0)
				return err
			}},
		{"the reported user joins the queue", reportedUser, []func(){heldLock}, func(c *redis.Client) error {
			_, err := script.AcquireQueued(ctx, c, n, "mine", ttl, "proc", ttl)
			return err
		}},
		{"a user without ZREM takes a free lock it waited for", noZRem, []func(){waiting("proc")}, func(c *redis.Client) error {
			_, err := script.AcquireQueued(ctx, c, n, "mine", ttl, "proc", ttl)
			return err
		}},
		{"a user without PEXPIRE joins the queue", noPExpire, []func(){heldLock}, func(c *redis.Client) error {
			_, err := script.AcquireQueued(ctx, c, n, "mine", ttl, "proc", ttl)
			return err
		}},
		{"a user that may not touch the counter acquires", noFenceKey, nil, func(c *redis.Client) error {
			_, err := script.Acquire(ctx, c, n, "mine", ttl)
			return err
		}},
		{"a user that may not touch the counter joins the queue", noFenceKey, []func(){heldLock}, func(c *redis.Client) error {
			_, err := script.AcquireQueued(ctx, c, n, "mine", ttl, "proc", ttl)
			return err
		}},
		{"a user that may not touch the counter releases", noFenceKey, []func(){mine}, func(c *redis.Client) error {
			_, _, err := script.ReleaseNext(ctx, c, n, "mine", script.PublishPlain, fenced)
			return err
		}},
		{"a user that may not touch the counter acquires a quorum lock's node", noFenceKey, nil, func(c *redis.Client) error {
			_, err := script.AcquireAbove(ctx, c, n, "mine", ttl, 5, "", 0)
			return err
		}},
		{"a user that may not touch the counter raises it", noFenceKey, []func(){counter}, func(c *redis.Client) error {
			_, err := script.Raise(ctx, c, n, 1_000_000, ttl)
			return err
		}},
		{"a user without SET tries without a script", noSet, nil, func(c *redis.Client) error {
			_, err := script.AcquireFast(ctx, c, n, "mine", ttl)
			return err
		}},
		{"a user without TIME hands the lock over", noTime, []func(){waiting("proc"), mine}, func(c *redis.Client) error {
			_, _, err := script.ReleaseNext(ctx, c, n, "mine", script.PublishPlain,
				script.Next{Successor: "next", TTL: ttl, Cohort: true, Waiter: "proc", Fence: fenced.Fence,
					HolderTTL: ttl})
			return err
		}},
		{"a user without DEL releases with its fence", noDel, []func(){mine}, func(c *redis.Client) error {
			_, _, err := script.ReleaseNext(ctx, c, n, "mine", script.PublishPlain, fenced)
			return err
		}},
		{"a user without DEL releases with its fence while another process waits", noDel,
			[]func(){mine, waiting("other")}, func(c *redis.Client) error {
				_, _, err := script.ReleaseNext(ctx, c, n, "mine", script.PublishPlain, fenced)
				return err
			}},
		{"a user without ZPOPMIN releases with its fence while another process waits", noZPopMin,
			[]func(){mine, waiting("other")}, func(c *redis.Client) error {
				_, _, err := script.ReleaseNext(ctx, c, n, "mine", script.PublishPlain, fenced)
				return err
			}},
		{"a user without DEL releases the lock", noDel, []func(){waiting("proc"), func() {
			require.NoError(t, admin.Set(ctx, n.Lock, "mine", ttl).Err())
		}}, func(c *redis.Client) error {
			_, _, err := script.ReleaseNext(ctx, c, n, "mine", script.PublishPlain, script.Next{Waiter: "proc"})
			return err
		}},
		{"a user without ZPOPMIN gives back a reservation made for its process", noZPopMin,
			[]func(){reservedFor("proc"), waiting("proc"), waiting("next")}, func(c *redis.Client) error {
				_, err := script.GiveBack(ctx, c, n, "proc", script.PublishPlain, time.Second)
				return err
			}},
		{"a user without SET gives back a reservation made for its process", noSet,
			[]func(){reservedFor("proc"), waiting("proc"), waiting("next")}, func(c *redis.Client) error {
				_, err := script.GiveBack(ctx, c, n, "proc", script.PublishPlain, time.Second)
				return err
			}},
		{"the reported user takes a permit", reportedUser, nil, func(c *redis.Client) error {
			_, err := script.SemaphoreAcquire(ctx, c, k, semTry)
			return err
		}},
		{"a user without ZRANGE joins the semaphore's line", noZRange, []func(){holding("a"), holding("b")},
			func(c *redis.Client) error {
				_, err := script.SemaphoreAcquire(ctx, c, k, semTry)
				return err
			}},
		{"a user without PEXPIREAT takes a permit", noPExpireAt, nil, func(c *redis.Client) error {
			_, err := script.SemaphoreAcquire(ctx, c, k, semTry)
			return err
		}},
		{"a user without SET takes a fenced permit", noSet, nil, func(c *redis.Client) error {
			_, err := script.SemaphoreAcquire(ctx, c, k, semTry)
			return err
		}},
		{"a user without PEXPIREAT gives a permit back to a waiting process", noPExpireAt,
			[]func(){holding("mine"), semWaiting}, func(c *redis.Client) error {
				_, err := script.SemaphoreRelease(ctx, c, k, script.SemaphoreGiveBack{Value: "mine", Limit: 2,
					Window: time.Second, Publish: script.PublishPlain})
				return err
			}},
		{"a user without PEXPIREAT refreshes its permit", noPExpireAt, []func(){holding("mine")}, func(c *redis.Client) error {
			_, err := script.SemaphoreRefresh(ctx, c, k, "mine", 2*ttl, 2, script.PublishPlain)
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, admin.FlushAll(ctx).Err())
			for _, f := range tc.setUp {
				f()
			}
			user := aclClient(t, srv, admin, "app", tc.rules...)
			before := snapshot(t, admin)

			err := tc.op(user)
			require.ErrorIs(t, err, keyward.ErrNoPermission)
			assert.True(t, script.IsReply(err), "the server's answer stays in the chain")
			assert.Equal(t, before, snapshot(t, admin), "nothing is left behind")
		})
	}
}

// TestWrongTypeBeforeTheFirstWrite: a key of another type among those a script will write is found before the
// script writes anything.
func TestWrongTypeBeforeTheFirstWrite(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		n := keys.For("job")
		require.NoError(t, rdb.Set(ctx, n.Queue, "not a queue", 0).Err())

		// A waiting try on a free lock: the lock would be taken, then ZREM fail.
		_, err := script.AcquireQueued(ctx, rdb, n, "mine", time.Minute, "proc", time.Minute)
		require.ErrorIs(t, err, keyward.ErrWrongType)
		assert.Zero(t, rdb.Exists(ctx, n.Lock).Val(), "the lock is not taken by nobody")
		assert.Equal(t, []string{n.Queue}, rdb.Keys(ctx, "*").Val(), "nothing was written")

		// The same on a quorum node: neither the lock nor its counter.
		require.NoError(t, rdb.Set(ctx, n.Fence, 1_000, time.Hour).Err())
		_, err = script.AcquireAbove(ctx, rdb, n, "mine", time.Minute, 5, "proc", time.Minute)
		require.ErrorIs(t, err, keyward.ErrWrongType)
		assert.Zero(t, rdb.Exists(ctx, n.Lock).Val(), "the lock is not taken by nobody")
		assert.Equal(t, "1000", rdb.Get(ctx, n.Fence).Val(), "the fence did not advance")

		// A release that leaves the queue: the counter is not set to its fence either.
		require.NoError(t, rdb.Set(ctx, n.Lock, "mine", time.Minute).Err())
		_, _, err = script.ReleaseNext(ctx, rdb, n, "mine", script.PublishPlain,
			script.Next{Waiter: "proc", Fence: 5_000, HolderTTL: time.Minute})
		require.ErrorIs(t, err, keyward.ErrWrongType)
		assert.Equal(t, "mine", rdb.Get(ctx, n.Lock).Val(), "the lock is still held")
		assert.Equal(t, "1000", rdb.Get(ctx, n.Fence).Val(), "the counter is as it was")
		assert.Greater(t, rdb.PTTL(ctx, n.Fence).Val(), 59*time.Minute)

		// A semaphore whose fencing counter is text: nothing is reclaimed or taken.
		k := script.SemaphoreKeysFor("pool")
		require.NoError(t, rdb.Set(ctx, k.Fence, "text", 0).Err())
		require.NoError(t, rdb.ZAdd(ctx, k.Holders, redis.Z{Score: 1, Member: "expired"}).Err())
		_, err = script.SemaphoreAcquire(ctx, rdb, k, script.SemaphoreTry{Value: "mine", TTL: time.Minute, Limit: 1,
			Fencing: true, Publish: script.PublishPlain})
		require.ErrorIs(t, err, keyward.ErrWrongType)
		assert.Equal(t, []string{"expired"}, rdb.ZRange(ctx, k.Holders, 0, -1).Val(), "nothing was written")
	})
}

// TestReleaseThatMayNotBeAnnounced: a user that may not publish on the lock's channel still releases the lock, and
// the release says it was not announced, instead of an error for a release that happened. The lock is freed, not
// reserved for a process that could not be told; the queue keeps its order.
func TestReleaseThatMayNotBeAnnounced(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := context.Background()
	n := keys.For("job")
	user := aclClient(t, srv, admin, "app", noPublish...)
	ttl := time.Minute

	cases := []struct {
		name  string
		queue []string
		next  script.Next
		want  script.Outcome
	}{
		{"nobody waits", nil, script.Next{Waiter: "proc"}, script.Unannounced},
		{"another process waits", []string{"other"}, script.Next{Waiter: "proc"}, script.Unannounced},
		{"another process waits, the holder's has a successor", []string{"other", "proc"},
			script.Next{Waiter: "proc", Successor: "next", TTL: ttl, QueueTTL: ttl}, script.Unannounced},
		{"reserved for the holder's own process", []string{"other"},
			script.Next{Waiter: "proc", Reserve: "proc", Cohort: true}, script.Unannounced},
		{"handed over: nothing to announce", []string{"other"},
			script.Next{Waiter: "proc", Successor: "next", TTL: ttl, Cohort: true}, script.HandedOver},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, admin.FlushAll(ctx).Err())
			require.NoError(t, admin.Set(ctx, n.Lock, "mine", ttl).Err())
			for i, id := range tc.queue {
				require.NoError(t, admin.ZAdd(ctx, n.Queue, redis.Z{Score: float64(i + 1), Member: id}).Err())
			}
			next := tc.next
			next.Fence, next.HolderTTL = 1_000_000, ttl
			out, _, err := script.ReleaseNext(ctx, user, n, "mine", script.PublishPlain, next)
			require.NoError(t, err)
			assert.Equal(t, tc.want, out)
			assert.Equal(t, "1000000", admin.Get(ctx, n.Fence).Val(), "the counter holds the holder's fence")
			assert.InDelta(t, script.CounterTTL(ttl), admin.PTTL(ctx, n.Fence).Val(), float64(time.Second))
			others := []string{}
			for _, id := range tc.queue {
				if id != "proc" {
					others = append(others, id)
				}
			}
			assert.Equal(t, others, admin.ZRange(ctx, n.Queue, 0, -1).Val(), "the other processes keep their places")
			if tc.want == script.HandedOver {
				assert.Equal(t, "next", admin.Get(ctx, n.Lock).Val())
				return
			}
			assert.Zero(t, admin.Exists(ctx, n.Lock).Val(), "freed, not reserved")
		})
	}

	t.Run("Release", func(t *testing.T) {
		require.NoError(t, admin.Set(ctx, n.Lock, "mine", ttl).Err())
		held, err := script.Release(ctx, user, n, "mine", script.PublishPlain)
		require.NoError(t, err)
		assert.True(t, held, "the release happened and is reported")
		assert.Zero(t, admin.Exists(ctx, n.Lock).Val())
	})

	t.Run("semaphore", func(t *testing.T) {
		k := script.SemaphoreKeysFor("pool")
		require.NoError(t, admin.FlushAll(ctx).Err())
		expiry := serverMicros(t, admin)/1000 + ttl.Milliseconds()
		require.NoError(t, admin.ZAdd(ctx, k.Holders, redis.Z{Score: float64(expiry), Member: "mine"}).Err())
		require.NoError(t, admin.ZAdd(ctx, k.Queue, redis.Z{Score: 1, Member: "other"}).Err())
		res, err := script.SemaphoreRelease(ctx, user, k, script.SemaphoreGiveBack{Value: "mine", Limit: 1,
			Window: time.Second, Publish: script.PublishPlain})
		require.NoError(t, err)
		assert.Equal(t, script.Released, res.Outcome)
		assert.Empty(t, admin.ZRange(ctx, k.Holders, 0, -1).Val(), "the permit was given back")
		assert.Empty(t, admin.ZRange(ctx, k.Reserved, 0, -1).Val(), "not reserved for a process that was not told")
		assert.Equal(t, []string{"other"}, admin.ZRange(ctx, k.Queue, 0, -1).Val())
	})
}

// TestClassifyNoPermission: the texts of redis-server 7.0.15's ACL refusals, outside a script and inside one.
func TestClassifyNoPermission(t *testing.T) {
	for _, msg := range []string{
		"NOPERM this user has no permissions to run the 'time' command",
		"NOPERM this user has no permissions to access one of the keys used as arguments",
		"NOPERM this user has no permissions to access one of the channels used as arguments",
		"ERR The user executing the script can't run this command or subcommand script: " +
			"104ae65debf45156ded1e8e613705534c8e62c17, on @user_script:1.",
		"ERR The user executing the script can't access at least one of the keys mentioned in the command " +
			"arguments script: fe46a1564c08d36cdc4f5a0ee9d6bc48aad2873b, on @user_script:1.",
		"ERR The user executing the script can't publish to the channel mentioned in the command script: " +
			"8b4aa00323eeee47429830cc15ea3f9a0cec3483, on @user_script:1.",
	} {
		err := script.Classify(proto(msg))
		assert.ErrorIs(t, err, keyward.ErrNoPermission, msg)
		assert.True(t, script.IsReply(err), "the reply stays in the chain")
		assert.Contains(t, err.Error(), msg)
	}
	assert.NotErrorIs(t, script.Classify(proto("ERR unknown command 'x'")), keyward.ErrNoPermission)
}

// proto is a Redis error reply as go-redis returns it.
type proto string

func (e proto) Error() string { return string(e) }
func (proto) RedisError()     {}

// TestRefusalsInsideScripts checks the texts TestClassifyNoPermission relies on against the real server: a command,
// a key and a channel refused inside a script.
func TestRefusalsInsideScripts(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := context.Background()
	for _, tc := range []struct {
		rules  []string
		script string
		want   string
	}{
		{reportedUser, "return redis.call('TIME')", "ERR The user executing the script can't run this command or subcommand"},
		{[]string{"~lock", "&*", "+@all"}, "return redis.call('GET', 'other')",
			"ERR The user executing the script can't access at least one of the keys mentioned in the command arguments"},
		{noPublish, "return redis.call('PUBLISH', 'ch', 'x')",
			"ERR The user executing the script can't publish to the channel mentioned in the command"},
	} {
		user := aclClient(t, srv, admin, "app", tc.rules...)
		err := script.Classify(user.Eval(ctx, tc.script, nil).Err())
		require.ErrorIs(t, err, keyward.ErrNoPermission)
		assert.Contains(t, err.Error(), tc.want)
	}
}

// TestLeastPrivilegedUser: the categories DESIGN.md names are all the scripts need (the reported user plus TIME).
func TestLeastPrivilegedUser(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	user := aclClient(t, srv, admin, "app", "~*", "&*", "+@read", "+@write", "+@scripting", "+@pubsub", "+time")
	ctx := context.Background()
	n := keys.For("job")
	ttl := time.Minute

	f, err := script.AcquireFast(ctx, user, n, "f", ttl)
	require.NoError(t, err)
	require.True(t, f.OK)
	out, _, err := script.ReleaseNext(ctx, user, n, "f", script.PublishPlain, script.Next{Fence: f.Fence, HolderTTL: ttl})
	require.NoError(t, err)
	require.Equal(t, script.Released, out)

	a, err := script.AcquireQueued(ctx, user, n, "a", ttl, "proc-a", ttl)
	require.NoError(t, err)
	require.True(t, a.OK)
	b, err := script.AcquireQueued(ctx, user, n, "b", ttl, "proc-b", ttl)
	require.NoError(t, err)
	require.False(t, b.OK, "proc-b waits")
	ok, err := script.Refresh(ctx, user, n, "a", ttl)
	require.NoError(t, err)
	require.True(t, ok)
	_, ok, err = script.PTTL(ctx, user, n, "a")
	require.NoError(t, err)
	require.True(t, ok)
	out, _, err = script.ReleaseNext(ctx, user, n, "a", script.PublishPlain,
		script.Next{Waiter: "proc-a", Successor: "a2", TTL: ttl, QueueTTL: ttl, Fence: a.Fence, HolderTTL: ttl})
	require.NoError(t, err)
	require.Equal(t, script.Requeued, out)
	b, err = script.AcquireQueued(ctx, user, n, "b", ttl, "proc-b", ttl)
	require.NoError(t, err)
	require.True(t, b.OK, "proc-b claims its reservation")
	out, _, err = script.ReleaseNext(ctx, user, n, "b", script.PublishPlain,
		script.Next{Waiter: "proc-b", Successor: "b2", TTL: ttl, Cohort: true, Fence: b.Fence, HolderTTL: ttl})
	require.NoError(t, err)
	require.Equal(t, script.HandedOver, out)
	_, err = script.Raise(ctx, user, n, time.Now().Add(time.Hour).UnixMicro(), ttl)
	require.NoError(t, err)
	q, err := script.AcquireAbove(ctx, user, keys.For("quorum"), "q", ttl, 5, "proc-q", ttl)
	require.NoError(t, err)
	require.True(t, q.OK)
	ok, err = script.Release(ctx, user, n, "b2", script.PublishPlain)
	require.NoError(t, err)
	require.True(t, ok)

	k := script.SemaphoreKeysFor("pool")
	try := script.SemaphoreTry{TTL: ttl, Limit: 1, QueueTTL: ttl, Fencing: true, Publish: script.PublishPlain}
	try.Value, try.Waiter = "p", "proc-p"
	st, err := script.SemaphoreAcquire(ctx, user, k, try)
	require.NoError(t, err)
	require.True(t, st.OK)
	try.Value, try.Waiter = "q", "proc-q"
	st, err = script.SemaphoreAcquire(ctx, user, k, try)
	require.NoError(t, err)
	require.False(t, st.OK, "proc-q waits")
	ok, err = script.SemaphoreRefresh(ctx, user, k, "p", ttl/2, 1, script.PublishPlain)
	require.NoError(t, err)
	require.True(t, ok)
	res, err := script.SemaphoreRelease(ctx, user, k, script.SemaphoreGiveBack{Value: "p", Limit: 1,
		Window: time.Second, Publish: script.PublishPlain})
	require.NoError(t, err)
	require.Equal(t, script.Released, res.Outcome)
	st, err = script.SemaphoreAcquire(ctx, user, k, try)
	require.NoError(t, err)
	require.True(t, st.OK, "proc-q claims its reservation")
	res, err = script.SemaphoreRelease(ctx, user, k, script.SemaphoreGiveBack{Value: "q", Limit: 1,
		Window: time.Second, Successor: "q2", TTL: ttl, Fencing: true, Publish: script.PublishPlain})
	require.NoError(t, err)
	require.Equal(t, script.HandedOver, res.Outcome)
}

// TestLockWithoutAccessToTheCounter: a user that may touch the lock's key, queue and channel but not its fencing
// counter cannot use the lock. Every script of the lock is given the counter's key, and the server refuses EVAL for
// a key the user may not access before the script runs: ErrNoPermission, and nothing is written. Only Refresh and
// PTTL, whose scripts get the lock's key alone, work.
//
// AcquireFast is a pipeline of plain commands, each checked on its own: its SET takes the lock before its GET of
// the counter is refused. It answers OK with ErrNoPermission, as it does for any failure after the SET: the caller
// must release the lock, whose fence it does not know. This user cannot (the release is refused like every script),
// so the lock stays until its ttl runs out.
func TestLockWithoutAccessToTheCounter(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	user := aclClient(t, srv, admin, "app", noFenceKey...)
	ctx := context.Background()
	n := keys.For("job")
	ttl := time.Minute
	refused := func(why string, err error) {
		t.Helper()
		require.ErrorIs(t, err, keyward.ErrNoPermission, why)
		assert.True(t, script.IsReply(err), "%s: the server's answer stays in the chain", why)
		assert.Contains(t, err.Error(), "NOPERM", why)
	}

	// A free lock: no acquire takes it.
	before := snapshot(t, admin)
	_, err := script.Acquire(ctx, user, n, "p", ttl)
	refused("acquire", err)
	_, err = script.AcquireQueued(ctx, user, n, "p", ttl, "proc-p", ttl)
	refused("acquire of a waiting process", err)
	_, err = script.AcquireAbove(ctx, user, n, "q", ttl, 5, "", 0)
	refused("a quorum lock's node", err)
	_, err = script.Raise(ctx, user, n, 1_000, ttl)
	refused("raise", err)
	assert.Equal(t, before, snapshot(t, admin), "nothing is written")
	assert.Empty(t, before)

	// A lock taken (by another user) while a process waits: the user can neither release it nor join the line.
	require.NoError(t, admin.Set(ctx, n.Lock, "mine", ttl).Err())
	require.NoError(t, admin.ZAdd(ctx, n.Queue, redis.Z{Score: 1, Member: "proc-b"}).Err())
	before = snapshot(t, admin)
	_, err = script.AcquireQueued(ctx, user, n, "a", ttl, "proc-a", ttl)
	refused("joining the line", err)
	_, err = script.Release(ctx, user, n, "mine", script.PublishPlain)
	refused("release", err)
	_, _, err = script.ReleaseNext(ctx, user, n, "mine", script.PublishPlain,
		script.Next{Successor: "next", TTL: ttl, Cohort: true, Fence: 1_000, HolderTTL: ttl})
	refused("hand-over", err)
	assert.Equal(t, before, snapshot(t, admin), "nothing is written")
	ok, err := script.Refresh(ctx, user, n, "mine", 2*ttl)
	require.NoError(t, err)
	assert.True(t, ok, "refresh only needs the lock's key")
	_, ok, err = script.PTTL(ctx, user, n, "mine")
	require.NoError(t, err)
	assert.True(t, ok, "PTTL too")

	// AcquireFast: the SET takes the lock, then the GET of the counter is refused.
	require.NoError(t, admin.FlushAll(ctx).Err())
	f, err := script.AcquireFast(ctx, user, n, "f", ttl)
	refused("the pipeline's GET of the counter", err)
	assert.True(t, f.OK, "the SET took the lock: the caller must release it")
	assert.Zero(t, f.Fence, "whose fence it does not know")
	assert.Equal(t, []string{n.Lock}, admin.Keys(ctx, "*").Val(), "the SET wrote the lock, nothing else")
	assert.Equal(t, "f", admin.Get(ctx, n.Lock).Val())
	_, err = script.Release(ctx, user, n, "f", script.PublishPlain)
	refused("its release", err)
	assert.Equal(t, "f", admin.Get(ctx, n.Lock).Val(), "the lock stays")
	assert.InDelta(t, ttl, admin.PTTL(ctx, n.Lock).Val(), float64(time.Second), "until its ttl runs out")
}

// TestReleaseWhenTheCounterCannotBeWritten: the release remembers the holder's fence with a SET that may be refused
// (a server out of memory refuses it, not the DEL; here a user without SET). The lock is released all the same,
// with nothing remembered: the next fence is the clock's, as after the counter expired.
func TestReleaseWhenTheCounterCannotBeWritten(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := context.Background()
	n := keys.For("job")
	require.NoError(t, admin.Set(ctx, n.Lock, "mine", time.Minute).Err())
	user := aclClient(t, srv, admin, "app", "~*", "&*", "+@all", "-set")
	out, _, err := script.ReleaseNext(ctx, user, n, "mine", script.PublishPlain,
		script.Next{Fence: 1_000_000, HolderTTL: time.Minute})
	require.NoError(t, err)
	assert.Equal(t, script.Released, out)
	assert.Zero(t, admin.Exists(ctx, n.Lock, n.Fence).Val(), "released, and no counter")
}
