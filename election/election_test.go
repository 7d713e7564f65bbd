package election_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The election every test runs, and the keys it uses.
const (
	name      = "report"
	recordKey = "{report}:leader"
)

// newCandidate returns a candidate of the election "report" with its own lock.Client on rdb, as a process of its
// own would have, named identity, with a 1 s lease unless opts say otherwise.
func newCandidate(t *testing.T, rdb redis.UniversalClient, identity string, opts ...election.Option) *election.Election {
	t.Helper()
	locks, err := lock.New(rdb)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, locks.Close()) })
	opts = append([]election.Option{
		election.WithRedis(rdb), election.WithIdentity(identity), election.WithTTL(time.Second),
	}, opts...)
	e, err := election.New(locks.Locker(), name, opts...)
	require.NoError(t, err)
	return e
}

// inBubble runs test in a testing/synctest bubble, with a miniredis whose keys expire on the bubble's clock.
// client returns a new client to it: one per simulated process.
func inBubble(t *testing.T, test func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client)) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		t.Cleanup(m.Close)
		client := func(hooks ...redis.Hook) *redis.Client {
			c := redistest.SynctestClient(m)
			for _, h := range hooks {
				c.AddHook(h)
			}
			t.Cleanup(func() { _ = c.Close() })
			return c
		}
		test(t, m, client)
	})
}

// errCrashed is what every command of a crashed candidate fails with.
var errCrashed = errors.New("crashed")

// newCrash returns a go-redis hook that makes every command fail once it is on: the process is gone as far as
// Redis can tell (no renewal, no release), as after kill -9.
func newCrash() *redistest.Outage { return &redistest.Outage{Err: errCrashed} }

func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestNewRejectsBadInput(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	locks, err := lock.New(rdb)
	require.NoError(t, err)
	locker := locks.Locker()
	for _, tc := range []struct {
		name   string
		locker keyward.Locker
		key    string
		opts   []election.Option
	}{
		{"nil locker", nil, name, nil},
		{"empty name", locker, "", nil},
		{"zero ttl", locker, name, []election.Option{election.WithTTL(0)}},
		{"ttl below the minimum", locker, name, []election.Option{election.WithTTL(election.MinTTL - 1)}},
		{"negative ttl", locker, name, []election.Option{election.WithTTL(-time.Second)}},
		{"ttl above the maximum", locker, name, []election.Option{election.WithTTL(election.MaxTTL + time.Millisecond)}},
		{"empty identity", locker, name, []election.Option{election.WithIdentity("")}},
		{"nil redis", locker, name, []election.Option{election.WithRedis(nil)}},
		{"nil *redis.Client", locker, name, []election.Option{election.WithRedis((*redis.Client)(nil))}},
		{"nil *redis.ClusterClient", locker, name, []election.Option{election.WithRedis((*redis.ClusterClient)(nil))}},
		{"nil *redis.Ring", locker, name, []election.Option{election.WithRedis((*redis.Ring)(nil))}},
		{"OnNewLeader without redis", locker, name,
			[]election.Option{election.WithCallbacks(election.Callbacks{OnNewLeader: func(election.Leader) {}})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := election.New(tc.locker, tc.key, tc.opts...)
			assert.ErrorIs(t, err, election.ErrInvalid)
			assert.Nil(t, e)
		})
	}

	t.Run("Leader and Observe without redis", func(t *testing.T) {
		e, err := election.New(locker, name)
		require.NoError(t, err)
		_, err = e.Leader(context.Background())
		assert.ErrorIs(t, err, election.ErrInvalid)
		ch, err := e.Observe(context.Background())
		assert.ErrorIs(t, err, election.ErrInvalid)
		assert.Nil(t, ch)
	})
	t.Run("Run without fn", func(t *testing.T) {
		e, err := election.New(locker, name)
		require.NoError(t, err)
		assert.ErrorIs(t, e.Run(context.Background(), nil), election.ErrInvalid)
	})
	t.Run("ttl within the Locker's drift margin", func(t *testing.T) {
		drifty, err := lock.New(rdb, lock.WithDrift(0.01, 20*time.Millisecond))
		require.NoError(t, err)
		e, err := election.New(drifty.Locker(), name, election.WithTTL(15*time.Millisecond))
		require.NoError(t, err, "the Locker's drift is not known to New")
		_, err = e.Campaign(context.Background())
		assert.ErrorIs(t, err, election.ErrInvalid)
		assert.ErrorIs(t, e.Run(context.Background(), func(context.Context) error { return nil }), election.ErrInvalid,
			"Run does not retry an error that will not pass")
	})
}

func TestCampaignLeaderResign(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := withTimeout(t, 20*time.Second)
		a := newCandidate(t, rdb, "replica-a")
		b := newCandidate(t, rdb, "replica-b")

		_, err := b.Leader(ctx)
		require.ErrorIs(t, err, election.ErrNoLeader)

		lead, err := a.Campaign(ctx)
		require.NoError(t, err)
		assert.NoError(t, lead.Err())
		assert.Equal(t, lead.Term(), election.TermFrom(lead.Context()), "the term is the lock's fence")
		assert.Positive(t, lead.Term())

		got, err := b.Leader(ctx)
		require.NoError(t, err)
		assert.Equal(t, "replica-a", got.Identity)
		assert.Equal(t, lead.Term(), got.Term)
		assert.Positive(t, got.TTL)
		assert.LessOrEqual(t, got.TTL, time.Second)
		assert.Equal(t, 1, int(rdb.Exists(ctx, name).Val()), "leading is holding the lock named after the election")

		next := make(chan *election.Leadership)
		go func() {
			l, err := b.Campaign(ctx)
			assert.NoError(t, err)
			next <- l
		}()
		require.NoError(t, lead.Resign(ctx))
		assert.ErrorIs(t, lead.Err(), election.ErrResigned)
		<-lead.Done()
		assert.NoError(t, lead.Resign(ctx), "a second Resign does nothing")

		second := <-next
		require.NotNil(t, second)
		assert.Greater(t, second.Term(), lead.Term(), "terms go forward")
		got, err = a.Leader(ctx)
		require.NoError(t, err)
		assert.Equal(t, election.Leader{Identity: "replica-b", Term: second.Term(), TTL: got.TTL}, got)

		require.NoError(t, second.Resign(ctx))
		_, err = a.Leader(ctx)
		assert.ErrorIs(t, err, election.ErrNoLeader)
		assert.Zero(t, rdb.Exists(ctx, name, recordKey).Val(), "neither lock nor record is left behind")
	})
}

func TestLockerOptionsAreTheLockers(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	ctx := withTimeout(t, 10*time.Second)
	locks, err := lock.New(rdb, lock.WithPrefix("jobs:"))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, locks.Close()) })
	e, err := election.New(locks.Locker(), name, election.WithRedis(rdb))
	require.NoError(t, err)
	lead, err := e.Campaign(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, int(rdb.Exists(ctx, "jobs:"+name).Val()), "the Locker's prefix applies to the lock")
	got, err := e.Leader(ctx)
	require.NoError(t, err)
	assert.Contains(t, got.Identity, "pid=", "the default identity names the host and process")
	require.NoError(t, lead.Resign(ctx))
}

func TestLeadershipOutlivesTheCampaignAndTheTTL(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		a := newCandidate(t, client(), "replica-a")
		ctx, cancel := context.WithCancel(context.Background())
		lead, err := a.Campaign(ctx)
		require.NoError(t, err)
		cancel() // the campaign's ctx bounds the wait only

		time.Sleep(10 * time.Second) // ten leases
		assert.NoError(t, lead.Err(), "renewed all along")
		got, err := a.Leader(context.Background())
		require.NoError(t, err)
		assert.Equal(t, lead.Term(), got.Term)
		assert.True(t, m.Exists(name))
		require.NoError(t, lead.Resign(context.Background()))
	})
}

func TestLeadershipLostWhenTheLockIsTaken(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		a := newCandidate(t, client(), "replica-a")
		lead, err := a.Campaign(context.Background())
		require.NoError(t, err)

		require.NoError(t, m.Set(name, "someone else")) // redis-cli SET report …, say
		<-lead.Done()                                   // found at the next renewal
		assert.ErrorIs(t, lead.Err(), election.ErrLost)
		assert.ErrorIs(t, context.Cause(lead.Context()), election.ErrLost)

		err = lead.Resign(context.Background())
		assert.ErrorIs(t, err, election.ErrLost, "Resign reports the loss")
		got, _ := m.Get(name)
		assert.Equal(t, "someone else", got, "the other holder's key is left alone")
		assert.False(t, m.Exists(recordKey), "the lost term's record is withdrawn")
	})
}

func TestCrashedLeaderIsReplacedAtTheEndOfItsLease(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		crashed := newCrash()
		a := newCandidate(t, client(crashed), "replica-a")
		b := newCandidate(t, client(), "replica-b")

		elected := time.Now()
		first, err := a.Campaign(context.Background())
		require.NoError(t, err)
		crashed.On() // no renewal, no release from now on

		var aStopped time.Time
		go func() {
			<-first.Done()
			aStopped = time.Now()
		}()
		second, err := b.Campaign(context.Background())
		require.NoError(t, err)
		took := time.Since(elected)
		synctest.Wait() // the goroutine above has returned

		assert.ErrorIs(t, first.Err(), election.ErrLost)
		require.False(t, aStopped.IsZero())
		assert.True(t, aStopped.Before(elected.Add(took)), "the crashed leader's context ended before the next term began")
		assert.GreaterOrEqual(t, took, time.Second, "not before the lease ran out")
		assert.Less(t, took, time.Second+3*time.Millisecond, "but at once after: woken by a timer, not a poll")
		assert.Greater(t, second.Term(), first.Term())
		require.NoError(t, second.Resign(context.Background()))
		assert.Error(t, first.Resign(context.Background()))
	})
}

// Two applications that use the same election name under different lock prefixes on one Redis hold two
// elections, each with its own record: each reads its own leader, and neither loses its leadership to the other's
// renewals.
func TestPrefixesKeepElectionsApart(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, client func(...redis.Hook) *redis.Client) {
		ctx := context.Background()
		candidate := func(prefix, identity string) *election.Election {
			rdb := client()
			locks, err := lock.New(rdb, lock.WithPrefix(prefix))
			require.NoError(t, err)
			t.Cleanup(func() { assert.NoError(t, locks.Close()) })
			e, err := election.New(locks.Locker(), name,
				election.WithRedis(rdb), election.WithIdentity(identity), election.WithTTL(time.Second))
			require.NoError(t, err)
			return e
		}
		a, b := candidate("a:", "A"), candidate("b:", "B")
		leadA, err := a.Campaign(ctx)
		require.NoError(t, err)
		leadB, err := b.Campaign(ctx)
		require.NoError(t, err)
		assert.True(t, m.Exists("{a:report}:leader"), "A's record under A's prefix")
		assert.True(t, m.Exists("{b:report}:leader"), "B's record under B's prefix")

		time.Sleep(3 * time.Second) // nine renewals each
		synctest.Wait()
		for _, c := range []struct {
			e    *election.Election
			lead *election.Leadership
			want string
		}{{a, leadA, "A"}, {b, leadB, "B"}} {
			assert.NoError(t, c.lead.Err(), "%s still leads", c.want)
			l, err := c.e.Leader(ctx)
			require.NoError(t, err)
			assert.Equal(t, c.want, l.Identity)
			assert.Equal(t, c.lead.Term(), l.Term)
		}
		require.NoError(t, leadA.Resign(ctx))
		require.NoError(t, leadB.Resign(ctx))
	})
}
