package redistest

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestSentinelGroup(t *testing.T) {
	start := time.Now()
	g := StartSentinel(t, WithNotify("Kgx"))
	t.Logf("StartSentinel: %v", time.Since(start))
	dumpLogs(t, g)

	if n := len(g.SentinelAddrs()); n != 3 {
		t.Fatalf("SentinelAddrs: %d addresses, want 3", n)
	}
	first, replica := g.Master(), g.Replica()
	if first == nil || replica == nil || first == replica {
		t.Fatalf("Master %v, Replica %v", first, replica)
	}
	if got := configGet(t, replica.Client(t), "notify-keyspace-events"); got == "" {
		t.Fatal("WithNotify not applied to the replica")
	}

	c := g.Client(t)
	ctx := t.Context()
	if err := c.Set(ctx, "before", "1", 0).Err(); err != nil {
		t.Fatalf("SET through the failover client: %v", err)
	}

	start = time.Now()
	second := g.Failover(t)
	t.Logf("Failover: %v", time.Since(start))
	if second != replica || g.Master() != second || g.Replica() != first {
		t.Fatalf("after Failover: returned %s, Master %s, Replica %s; want master %s, replica %s",
			second.Addr(), g.Master().Addr(), g.Replica().Addr(), replica.Addr(), first.Addr())
	}
	// The failover client follows the new master (the sentinels closed
	// its connections), and the write made before is there.
	if got, err := c.Get(ctx, "before").Result(); err != nil || got != "1" {
		t.Fatalf("GET before after Failover = %q, %v; want 1", got, err)
	}
	if err := c.Set(ctx, "after", "1", 0).Err(); err != nil {
		t.Fatalf("SET after Failover: %v", err)
	}

	// A restarted replica comes back as a replica (its config file keeps the
	// REPLICAOF), a restarted sentinel keeps what it learnt.
	start = time.Now()
	first.Restart(t)
	g.Sentinels()[0].Restart(t)
	g.WaitSettled(t)
	t.Logf("Restart of the replica and a sentinel, WaitSettled: %v", time.Since(start))
	if g.Master() != second || g.Replica() != first {
		t.Fatalf("after restarts: Master %s, Replica %s; want %s, %s", g.Master(), g.Replica(), second, first)
	}

	start = time.Now()
	third := g.FailoverLagging(t, func(m *redis.Client) {
		if err := m.Set(ctx, "lost", "1", 0).Err(); err != nil {
			t.Fatalf("SET on the master before it dies: %v", err)
		}
	})
	t.Logf("FailoverLagging: %v", time.Since(start))
	if third != first || g.Master() != first || g.Replica() != second {
		t.Fatalf("after FailoverLagging: returned %s, Master %s; want %s", third.Addr(), g.Master().Addr(), first.Addr())
	}
	if err := c.Get(ctx, "lost").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET lost on the promoted lagging replica: %v, want redis.Nil", err)
	}
	if got, err := c.Get(ctx, "after").Result(); err != nil || got != "1" {
		t.Fatalf("GET after = %q, %v; want 1", got, err)
	}
	// The old master came back as an in-sync replica: a clean failover
	// works again.
	start = time.Now()
	if got := g.Failover(t); got != second {
		t.Fatalf("second Failover returned %s, want %s", got.Addr(), second.Addr())
	}
	t.Logf("Failover: %v", time.Since(start))
	if got, err := c.Get(ctx, "after").Result(); err != nil || got != "1" {
		t.Fatalf("GET after = %q, %v; want 1", got, err)
	}
}

func dumpLogs(t *testing.T, g *SentinelGroup) {
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range append(g.DataNodes(), g.Sentinels()...) {
				t.Logf("=== %s\n%s", s.Addr(), s.Log())
			}
		}
	})
}
