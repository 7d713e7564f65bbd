package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
)

// keysOnTwoMasters returns two lock names whose slots two different masters of c serve, and those masters.
func keysOnTwoMasters(t *testing.T, c *redistest.Cluster) (string, string) {
	t.Helper()
	first := "job-0"
	m := c.MasterOf(first)
	require.NotNil(t, m)
	for i := 1; i < 100; i++ {
		k := "job-" + strconv.Itoa(i)
		if o := c.MasterOf(k); o != nil && o.Addr() != m.Addr() {
			return first, k
		}
	}
	t.Fatal("no two keys on two masters among 100")
	return "", ""
}

// envVars parses the output of the child's env mode.
func envVars(stdout string) map[string]string {
	vars := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		k, v, _ := strings.Cut(line, "=")
		vars[k] = v
	}
	return vars
}

// keyward run, status, release and watch on a Redis Cluster, through one seed node, for keys of two masters:
// each lock lives on its slot's master, which is not the seed for at least one of them.
func TestOnACluster(t *testing.T) {
	// Keyspace notifications of generic commands on every node: a refresh is a PEXPIRE, which a test waits for.
	c := redistest.StartCluster(t, redistest.WithNotify("Kg"))
	rdb := c.Client(t)
	ctx := context.Background()
	a, b := keysOnTwoMasters(t, c)
	seed := c.Addrs()[0]
	url := "REDIS_URL=redis+cluster://" + seed
	envCmd, envMode := childCommand(t, "env")
	hold, holdMode := childCommand(t, "hold")

	t.Run("a redis:// URL at a node is refused with the URL to use", func(t *testing.T) {
		code, _, stderr := run(t, []string{"status", a, b}, "REDIS_URL=redis://"+seed)
		assert.Equal(t, 64, code)
		assert.Contains(t, stderr, "is a Cluster node: use a redis+cluster://"+seed+" URL")
	})

	for _, key := range []string{a, b} {
		t.Run("run on the master of "+key, func(t *testing.T) {
			code, stdout, stderr := run(t, append([]string{"run", key, "--"}, envCmd...), url, envMode)
			require.Equal(t, 0, code, "stderr: %s", stderr)
			fence, err := strconv.ParseInt(envVars(stdout)["KEYWARD_FENCE"], 10, 64)
			require.NoError(t, err, stdout)
			counter, err := c.MasterOf(key).Client(t).Get(ctx, "{"+key+"}:fence").Int64()
			require.NoError(t, err, "the fence counter is on the slot's master")
			assert.Equal(t, counter, fence)
			assert.Zero(t, rdb.Exists(ctx, key).Val(), "released")
		})
	}

	t.Run("status, watch and release across two masters", func(t *testing.T) {
		w := start(t, []string{"watch", "--notify", a, b}, url)
		w.out.await(t, a+"  free")
		w.out.await(t, b+"  free")
		w.errOut.await(t, "acquisitions, releases, expiries and deletions are shown")

		pa := start(t, append([]string{"run", "--ttl", "3s", a, "--"}, hold...), url, holdMode)
		pb := start(t, append([]string{"run", "--ttl", "3s", b, "--"}, hold...), url, holdMode)
		pa.out.await(t, "ready")
		pb.out.await(t, "ready")
		// Each acquisition is a keyspace notification of another master.
		assert.Contains(t, w.out.await(t, a+"  acquired by"), "pid=")
		assert.Contains(t, w.out.await(t, b+"  acquired by"), "pid=")

		code, stdout, stderr := run(t, []string{"status", "--json", a, b, "free-one"}, url)
		assert.Equal(t, 1, code, "free-one is free; stderr: %s", stderr)
		var states []map[string]any
		require.NoError(t, json.Unmarshal([]byte(stdout), &states), stdout)
		require.Len(t, states, 3)
		assert.Equal(t, "held", states[0]["state"])
		assert.Equal(t, "held", states[1]["state"])
		assert.Equal(t, "free", states[2]["state"])

		code, stdout, stderr = run(t, []string{"release", "--force", a, b}, url)
		assert.Equal(t, 0, code, "stderr: %s", stderr)
		assert.Contains(t, stdout, a+": released")
		assert.Contains(t, stdout, b+": released")
		w.out.await(t, a+"  released")
		w.out.await(t, b+"  released")
		// The holders find out at their next refresh and stop their COMMAND.
		assert.Equal(t, 79, pa.wait(), "stderr: %s", pa.errOut)
		assert.Equal(t, 79, pb.wait(), "stderr: %s", pb.errOut)

		w.signal(syscall.SIGINT)
		assert.Equal(t, 0, w.wait(), "stderr: %s", w.errOut)
	})

	t.Run("elect", func(t *testing.T) { electHandsOver(t, b, url, hold, holdMode) })

	t.Run("a run across a failover of the key's master", func(t *testing.T) {
		p := start(t, append([]string{"run", "--ttl", "10s", "-v", a, "--"}, hold...), url, holdMode)
		p.out.await(t, "ready")
		old := c.MasterOf(a)
		promoted := c.Failover(t, a)
		require.NotEqual(t, old.Addr(), promoted.Addr())
		awaitRefresh(t, promoted, a)
		require.NoError(t, p.stdin.Close())
		assert.Equal(t, 0, p.wait(), "COMMAND ended by itself, the lock held throughout; stderr: %s", p.errOut)
		assert.Contains(t, p.errOut.String(), `released lock "`+a+`"`)
		assert.Zero(t, promoted.Client(t).Exists(ctx, a).Val(), "released on the new master")
	})
}

// electHandsOver runs two instances of keyward elect NAME: one leads, the other takes over when the first
// COMMAND ends.
func electHandsOver(t *testing.T, name, url string, hold []string, holdMode string) {
	t.Helper()
	cmd := append([]string{"elect", "--ttl", "3s", "-v", name, "--"}, hold...)
	first := start(t, cmd, url, holdMode)
	first.out.await(t, "ready")
	second := start(t, cmd, url, holdMode)
	second.errOut.await(t, "campaigning in")
	require.NoError(t, first.stdin.Close())
	assert.Equal(t, 0, first.wait(), "stderr: %s", first.errOut)
	second.out.await(t, "ready")
	require.NoError(t, second.stdin.Close())
	assert.Equal(t, 0, second.wait(), "stderr: %s", second.errOut)
}

// keyward run, status and release on the master of a Sentinel group, and a run that goes on across a failover.
func TestOnASentinelGroup(t *testing.T) {
	// Keyspace notifications of generic commands: a refresh is a PEXPIRE, which the test waits for.
	g := redistest.StartSentinel(t, redistest.WithNotify("Kg"))
	ctx := context.Background()
	sentinels := "redis+sentinel://" + strings.Join(g.SentinelAddrs(), ",") + "/" + redistest.SentinelMasterName
	url := "REDIS_URL=" + sentinels
	envCmd, envMode := childCommand(t, "env")
	hold, holdMode := childCommand(t, "hold")

	t.Run("run", func(t *testing.T) {
		code, stdout, stderr := run(t, append([]string{"run", "job", "--"}, envCmd...), url, envMode)
		require.Equal(t, 0, code, "stderr: %s", stderr)
		fence, err := strconv.ParseInt(envVars(stdout)["KEYWARD_FENCE"], 10, 64)
		require.NoError(t, err, stdout)
		counter, err := g.Master().Client(t).Get(ctx, "{job}:fence").Int64()
		require.NoError(t, err, "the lock is on the group's master")
		assert.Equal(t, counter, fence)
	})

	t.Run("status and release", func(t *testing.T) {
		p := start(t, append([]string{"run", "--ttl", "3s", "held", "--"}, hold...), url, holdMode)
		p.out.await(t, "ready")
		code, stdout, stderr := run(t, []string{"status", "held"}, url)
		assert.Equal(t, 0, code, "stderr: %s", stderr)
		assert.Regexp(t, `(?m)^held +held +host=`, stdout)
		code, stdout, stderr = run(t, []string{"release", "--force", "held"}, url)
		assert.Equal(t, 0, code, "stderr: %s", stderr)
		assert.Contains(t, stdout, "held: released")
		assert.Equal(t, 79, p.wait(), "stderr: %s", p.errOut)
	})

	t.Run("elect", func(t *testing.T) { electHandsOver(t, "scheduler", url, hold, holdMode) })

	t.Run("unknown master", func(t *testing.T) {
		code, _, stderr := run(t, []string{"status", "--redis", "redis+sentinel://" + strings.Join(g.SentinelAddrs(), ",") + "/nosuch", "job"})
		assert.Equal(t, 64, code)
		assert.Contains(t, stderr, `know no master named "nosuch"`)
	})

	t.Run("a run across a failover", func(t *testing.T) {
		old := g.Master()
		p := start(t, append([]string{"run", "--ttl", "10s", "-v", "across", "--"}, hold...), url, holdMode)
		p.out.await(t, "ready")
		promoted := g.Failover(t)
		require.NotEqual(t, old.Addr(), promoted.Addr())
		awaitRefresh(t, promoted, "across")

		// The lock was replicated before the failover; keyward refreshes it on the new master.
		code, stdout, stderr := run(t, []string{"status", "across"}, url)
		assert.Equal(t, 0, code, "held on the new master; stderr: %s", stderr)
		assert.Regexp(t, `(?m)^across +held +host=`, stdout)
		token, err := promoted.Client(t).Get(ctx, "across").Result()
		require.NoError(t, err)
		assert.Contains(t, token, fmt.Sprintf("pid=%d", p.cmd.Process.Pid))

		require.NoError(t, p.stdin.Close())
		assert.Equal(t, 0, p.wait(), "COMMAND ended by itself, the lock held throughout; stderr: %s", p.errOut)
		assert.Contains(t, p.errOut.String(), `released lock "across"`)
		assert.Zero(t, promoted.Client(t).Exists(ctx, "across").Val(), "released on the new master")
	})
}

// awaitRefresh waits until the holder of key refreshes it on server s (the PEXPIRE of the refresh script).
func awaitRefresh(t *testing.T, s *redistest.Server, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ps := s.Client(t).Subscribe(ctx, "__keyspace@0__:"+key)
	defer ps.Close()
	for {
		msg, err := ps.ReceiveMessage(ctx)
		require.NoError(t, err, "waiting for a refresh of %q on %s", key, s.Addr())
		if msg.Payload == "expire" {
			return
		}
	}
}
