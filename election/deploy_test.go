package election_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/redistest"
)

// Elections on a Sentinel group and on a Cluster, through a failover, with go-redis failover and cluster
// clients at their default options.

func TestSentinelFailover(t *testing.T) {
	g := redistest.StartSentinel(t)
	leadersThroughFailover(t, g.Client(t), g.Client(t), func(t *testing.T) { g.Failover(t) })
}

func TestClusterFailover(t *testing.T) {
	c := redistest.StartCluster(t)
	leadersThroughFailover(t, c.Client(t), c.Client(t), func(t *testing.T) { c.Failover(t, name) })
}

// leadersThroughFailover elects a, has b campaign (waiting), runs failover, and has a resign: a led through the
// failover, and b leads next with a larger term, which its record shows.
func leadersThroughFailover(t *testing.T, rdbA, rdbB redis.UniversalClient, failover func(t *testing.T)) {
	const ttl = 10 * time.Second
	ctx := withTimeout(t, time.Minute)
	a := newCandidate(t, rdbA, "a", election.WithTTL(ttl))
	leadA, err := a.Campaign(ctx)
	require.NoError(t, err)

	// After b's second try that found the lock taken, b is subscribed and waits.
	waiting := make(chan struct{})
	rdbB.AddHook(&redistest.AfterReply{N: 2, Fn: func() { close(waiting) },
		Match: func(r []any) bool { return len(r) == 2 && r[0] == int64(0) }})
	b := newCandidate(t, rdbB, "b", election.WithTTL(ttl))
	type campaigned struct {
		lead *election.Leadership
		at   time.Time
		err  error
	}
	got := make(chan campaigned, 1)
	go func() {
		lead, err := b.Campaign(ctx)
		got <- campaigned{lead, time.Now(), err}
	}()
	select {
	case <-waiting:
	case c := <-got:
		t.Fatalf("b's Campaign returned while a leads: %v", c.err)
	}

	start := time.Now()
	failover(t)
	t.Logf("failover: %v", time.Since(start).Round(time.Millisecond))
	require.NoError(t, leadA.Err(), "a still leads after a clean failover")
	leader, err := b.Leader(ctx)
	require.NoError(t, err)
	assert.Equal(t, "a", leader.Identity)
	assert.Equal(t, leadA.Term(), leader.Term)

	resigned := time.Now()
	require.NoError(t, leadA.Resign(ctx))
	c := <-got
	require.NoError(t, c.err)
	t.Logf("a resigned → b leads: %v (term %d after %d)", c.at.Sub(resigned).Round(time.Microsecond), c.lead.Term(), leadA.Term())
	assert.Less(t, c.at.Sub(resigned), ttl/3, "woken by the resignation, not by a timer at a's lease")
	assert.Greater(t, c.lead.Term(), leadA.Term())
	leader, err = a.Leader(ctx)
	require.NoError(t, err)
	assert.Equal(t, election.Leader{Identity: "b", Term: c.lead.Term(), TTL: leader.TTL}, leader)
	require.NoError(t, c.lead.Resign(ctx))
}
