package redistest

import (
	"strconv"
	"testing"
	"time"
)

func TestKeySlot(t *testing.T) {
	for key, want := range map[string]int{
		"foo":           12182,
		"{foo}bar":      12182,
		"a{foo}b{x}":    12182,
		"{}foo":         keySlot("{}foo"), // an empty tag hashes the whole key
		"123456789":     0x31C3 % 16384,   // the CRC16/XMODEM check value
		"{user1000}.fo": keySlot("user1000"),
	} {
		if got := keySlot(key); got != want {
			t.Errorf("keySlot(%q) = %d, want %d", key, got, want)
		}
	}
	if got := probeKey(12182); keySlot(got) != 12182 {
		t.Errorf("probeKey(12182) = %q in slot %d", got, keySlot(got))
	}
}

func TestCluster(t *testing.T) {
	start := time.Now()
	c := StartCluster(t)
	t.Logf("StartCluster: %v", time.Since(start))
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range c.Nodes() {
				t.Logf("=== %s\n%s", s.Addr(), s.Log())
			}
		}
	})
	if n := len(c.Addrs()); n != 6 {
		t.Fatalf("Addrs: %d, want 6", n)
	}
	masters, replicas := c.Masters(), c.Replicas()
	if len(masters) != 3 || len(replicas) != 3 {
		t.Fatalf("Masters %v, Replicas %v; want 3 each", masters, replicas)
	}

	// Keys on every master, written and read through the cluster client.
	rdb := c.Client(t)
	ctx := t.Context()
	keysOf := map[*Server]string{}
	for i := 0; len(keysOf) < 3; i++ {
		key := "k" + strconv.Itoa(i)
		if err := rdb.Set(ctx, key, key, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		m := c.MasterOf(key)
		if m == nil {
			t.Fatalf("MasterOf(%q) = nil", key)
		}
		if _, ok := keysOf[m]; !ok {
			keysOf[m] = key
		}
		if got, err := m.Client(t).Get(ctx, key).Result(); err != nil || got != key {
			t.Fatalf("GET %s on MasterOf = %q, %v", key, got, err)
		}
	}
	key := keysOf[masters[0]]
	old, replica := c.MasterOf(key), c.ReplicaOf(key)
	if old != masters[0] || replica == nil || replica == old {
		t.Fatalf("MasterOf %v, ReplicaOf %v", old, replica)
	}

	start = time.Now()
	promoted := c.Failover(t, key)
	t.Logf("Failover: %v", time.Since(start))
	if promoted != replica || c.MasterOf(key) != replica || c.ReplicaOf(key) != old {
		t.Fatalf("after Failover: returned %v, MasterOf %v, ReplicaOf %v; want master %v, replica %v",
			promoted, c.MasterOf(key), c.ReplicaOf(key), replica, old)
	}
	if got, err := rdb.Get(ctx, key).Result(); err != nil || got != key {
		t.Fatalf("GET %s after Failover = %q, %v", key, got, err)
	}
	if err := rdb.Set(ctx, key, "new", 0).Err(); err != nil {
		t.Fatalf("SET %s after Failover: %v", key, err)
	}
	if got, err := promoted.Client(t).Get(ctx, key).Result(); err != nil || got != "new" {
		t.Fatalf("GET %s on the new master = %q, %v", key, got, err)
	}

	// The old master, restarted, rejoins as the replica (nodes.conf is
	// kept) and can take the slot back.
	start = time.Now()
	old.Restart(t)
	c.WaitSettled(t)
	t.Logf("Restart of a replica, WaitSettled: %v", time.Since(start))
	if c.ReplicaOf(key) != old {
		t.Fatalf("after Restart: ReplicaOf %v, want %v", c.ReplicaOf(key), old)
	}
	start = time.Now()
	if got := c.Failover(t, key); got != old {
		t.Fatalf("second Failover returned %v, want %v", got, old)
	}
	t.Logf("Failover: %v", time.Since(start))
	if got, err := rdb.Get(ctx, key).Result(); err != nil || got != "new" {
		t.Fatalf("GET %s after the second Failover = %q, %v", key, got, err)
	}

	// A master that died: the rig forces the failover of its replica at
	// once rather than waiting for the cluster to notice.
	other := keysOf[masters[1]]
	dead, heir := c.MasterOf(other), c.ReplicaOf(other)
	dead.Kill(t)
	start = time.Now()
	if got := c.Failover(t, other); got != heir {
		t.Fatalf("Failover of a dead master returned %v, want %v", got, heir)
	}
	t.Logf("Failover (FORCE) of a dead master: %v", time.Since(start))
	// Only on the heir itself: go-redis' cluster client keeps sending the
	// slot's commands to the dead node until it reloads its slot map,
	// which nothing from a dead node triggers (see Failover).
	if got, err := heir.Client(t).Get(ctx, other).Result(); err != nil || got != other {
		t.Fatalf("GET %s on the new master after the forced Failover = %q, %v", other, got, err)
	}
	if n := len(c.Masters()); n != 3 {
		t.Fatalf("Masters after the forced Failover: %v", c.Masters())
	}
}
