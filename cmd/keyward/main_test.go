package main_test

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

// server starts a redis-server and returns a client to it and the REDIS_URL variable that points keyward at it.
func server(t *testing.T, opts ...redistest.Option) (*redistest.Server, *redis.Client, string) {
	t.Helper()
	s := redistest.Start(t, opts...)
	return s, s.Client(t), "REDIS_URL=redis://" + s.Addr()
}

func TestRunNoWaitTwiceAtOnceRunsCommandOnce(t *testing.T) {
	_, rdb, url := server(t)
	argv, mode := childCommand(t, "hold")
	args := append([]string{"run", "--no-wait", "report", "--"}, argv...)
	a := start(t, args, url, mode)
	b := start(t, args, url, mode)

	// The one that finds the lock taken exits at once; the other runs COMMAND until its stdin ends.
	var loser, winner *proc
	select {
	case <-a.done:
		loser, winner = a, b
	case <-b.done:
		loser, winner = b, a
	case <-time.After(waitFor):
		t.Fatalf("neither keyward exited\nA: %s %s\nB: %s %s", a.out, a.errOut, b.out, b.errOut)
	}
	assert.Equal(t, 75, loser.wait(), "stderr: %s", loser.errOut)
	assert.NotContains(t, loser.out.String(), "ready", "the loser ran COMMAND")
	assert.Empty(t, loser.errOut.String(), "a skipped run is silent, as flock -n is (cron mails any output)")

	winner.out.await(t, "ready")
	require.NoError(t, winner.stdin.Close())
	assert.Equal(t, 0, winner.wait(), "stderr: %s", winner.errOut)
	assert.Zero(t, rdb.Exists(context.Background(), "report").Val(), "the lock is released when COMMAND ends")
}

func TestRunPassesExitStatusAndExportsTheLock(t *testing.T) {
	_, rdb, url := server(t)
	argv0, _ := childCommand(t, "")
	self := argv0[0]
	dir := t.TempDir()
	notExec := dir + "/not-executable"
	require.NoError(t, os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o600))

	for _, tc := range []struct {
		name    string
		mode    string
		command []string
		code    int
		stderr  string
	}{
		{name: "success", mode: "exit 0", command: []string{self}, code: 0},
		{name: "failure", mode: "exit 3", command: []string{self}, code: 3},
		{name: "killed by a signal", mode: "killself", command: []string{self}, code: 128 + int(syscall.SIGKILL)},
		{name: "not found", command: []string{"keyward-no-such-command"}, code: 127, stderr: "command not found"},
		{name: "not executable", command: []string{notExec}, code: 126, stderr: "cannot run"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, append([]string{"run", "job", "--"}, tc.command...), url, childMode+"="+tc.mode)
			assert.Equal(t, tc.code, code, "stderr: %s", stderr)
			assert.Contains(t, stderr, tc.stderr)
			assert.Zero(t, rdb.Exists(context.Background(), "job").Val(), "released whatever COMMAND did")
		})
	}

	t.Run("environment", func(t *testing.T) {
		argv, mode := childCommand(t, "env")
		code, stdout, stderr := run(t, append([]string{"run", "--prefix", "locks:", "job", "--"}, argv...), url, mode)
		require.Equal(t, 0, code, "stderr: %s", stderr)
		vars := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
			k, v, _ := strings.Cut(line, "=")
			vars[k] = v
		}
		assert.Equal(t, "job", vars["KEYWARD_KEY"])
		fence, err := strconv.ParseInt(vars["KEYWARD_FENCE"], 10, 64)
		require.NoError(t, err)
		counter, err := rdb.Get(context.Background(), "{locks:job}:fence").Int64()
		require.NoError(t, err)
		assert.Equal(t, counter, fence, "KEYWARD_FENCE is the fence the acquisition handed out")
		assert.Contains(t, vars["KEYWARD_TOKEN"], " pid=", "the token carries keyward's pid")
	})
}

func TestRunWhenTaken(t *testing.T) {
	_, rdb, url := server(t)
	ctx := context.Background()
	locks, err := lock.New(rdb)
	require.NoError(t, err)
	held, err := locks.TryObtain(ctx, "job", time.Minute)
	require.NoError(t, err)
	argv, mode := childCommand(t, "exit 0")
	cmd := append([]string{"job", "--"}, argv...)

	for _, tc := range []struct {
		name  string
		flags []string
		code  int
	}{
		{name: "no wait", flags: []string{"--no-wait"}, code: 75},
		{name: "flock's short flag", flags: []string{"-n"}, code: 75},
		{name: "conflict exit code", flags: []string{"-n", "--conflict-exit-code", "1"}, code: 1},
		{name: "wait 0 is no wait", flags: []string{"--wait", "0"}, code: 75},
		{name: "wait expires", flags: []string{"--wait", "300ms"}, code: 75},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := run(t, append(append([]string{"run"}, tc.flags...), cmd...), url, mode)
			assert.Equal(t, tc.code, code, "stderr: %s", stderr)
			assert.Empty(t, stdout+stderr)
		})
	}

	t.Run("verbose says who holds it", func(t *testing.T) {
		code, _, stderr := run(t, append([]string{"run", "-n", "-v"}, cmd...), url, mode)
		assert.Equal(t, 75, code)
		assert.Contains(t, stderr, `lock "job" is taken (held by host=`)
		assert.Contains(t, stderr, "pid="+strconv.Itoa(os.Getpid()))
	})

	t.Run("waits until released", func(t *testing.T) {
		p := start(t, append([]string{"run", "--verbose"}, cmd...), url, mode)
		p.errOut.await(t, `waiting for lock "job"`)
		require.NoError(t, held.Release(ctx))
		assert.Equal(t, 0, p.wait(), "stderr: %s", p.errOut)
		assert.Contains(t, p.errOut.String(), `obtained lock "job"`)
		assert.Contains(t, p.errOut.String(), `released lock "job"`)
	})
}

func TestRunForwardsSignals(t *testing.T) {
	_, rdb, url := server(t)
	argv, mode := childCommand(t, "hold")
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			p := start(t, append([]string{"run", "job", "--"}, argv...), url, mode)
			p.out.await(t, "ready")
			p.signal(sig)
			p.out.await(t, "got "+sig.String())
			assert.Equal(t, 3, p.wait(), "COMMAND's status, after it handled the signal; stderr: %s", p.errOut)
			assert.Zero(t, rdb.Exists(context.Background(), "job").Val())
		})
	}

	t.Run("while waiting for the lock", func(t *testing.T) {
		locks, err := lock.New(rdb)
		require.NoError(t, err)
		held, err := locks.TryObtain(context.Background(), "busy", time.Minute)
		require.NoError(t, err)
		defer held.Release(context.Background()) //nolint:errcheck

		p := start(t, append([]string{"run", "-v", "busy", "--"}, argv...), url, mode)
		p.errOut.await(t, "waiting for lock")
		p.signal(syscall.SIGTERM)
		assert.Equal(t, 128+int(syscall.SIGTERM), p.wait())
		assert.NotContains(t, p.out.String(), "ready")
	})
}

func TestRunStopsCommandWhenTheLockIsLost(t *testing.T) {
	t.Run("taken by another", func(t *testing.T) {
		_, rdb, url := server(t)
		argv, mode := childCommand(t, "hold")
		p := start(t, append([]string{"run", "--ttl", "2s", "job", "--"}, argv...), url, mode)
		p.out.await(t, "ready")
		// Another holder's value: the next refresh (within ttl/3) finds the lock taken.
		require.NoError(t, rdb.Set(context.Background(), "job", "someone-else", time.Minute).Err())
		p.out.await(t, "got terminated")
		assert.Equal(t, 79, p.wait())
		assert.Contains(t, p.errOut.String(), `lock "job" lost`)
		assert.Equal(t, "someone-else", rdb.Get(context.Background(), "job").Val(), "the other holder's lock stays")
	})

	t.Run("SIGKILL after the grace period", func(t *testing.T) {
		_, rdb, url := server(t)
		argv, mode := childCommand(t, "stubborn")
		p := start(t, append([]string{"run", "--ttl", "1s", "--grace", "100ms", "job", "--"}, argv...), url, mode)
		p.out.await(t, "ready")
		require.NoError(t, rdb.Del(context.Background(), "job").Err())
		assert.Equal(t, 79, p.wait())
		assert.Contains(t, p.errOut.String(), "SIGKILL")
	})

	t.Run("Redis stops answering", func(t *testing.T) {
		s, _, url := server(t)
		argv, mode := childCommand(t, "hold")
		p := start(t, append([]string{"run", "--ttl", "1s", "--timeout", "500ms", "job", "--"}, argv...), url, mode)
		p.out.await(t, "ready")
		s.Pause(t)
		p.errOut.await(t, "lost")
		p.out.await(t, "got terminated")
		s.Resume(t)
		assert.Equal(t, 79, p.wait())
	})
}

func TestRunOnAQuorum(t *testing.T) {
	servers := redistest.StartN(t, 3)
	var urls []string
	for _, s := range servers {
		urls = append(urls, "redis://"+s.Addr())
	}
	nodes := strings.Join(urls, ",")
	hold, holdMode := childCommand(t, "hold")

	a := start(t, append([]string{"run", "--nodes", nodes, "report", "--"}, hold...), holdMode)
	a.out.await(t, "ready")
	code, _, stderr := run(t, append([]string{"run", "-n", "--nodes", nodes, "report", "--"}, hold...), holdMode)
	assert.Equal(t, 75, code, "taken on the quorum; stderr: %s", stderr)
	for _, s := range servers {
		assert.NotEmpty(t, s.Client(t).Get(context.Background(), "report").Val(), "held on every node")
	}
	require.NoError(t, a.stdin.Close())
	assert.Equal(t, 0, a.wait(), "stderr: %s", a.errOut)

	servers[0].Kill(t)
	env, envMode := childCommand(t, "env")
	code, stdout, stderr := run(t, append([]string{"run", "--nodes", nodes, "report", "--"}, env...), envMode)
	assert.Equal(t, 0, code, "a majority is enough; stderr: %s", stderr)
	assert.Contains(t, stdout, "KEYWARD_FENCE=")
	assert.Contains(t, stderr, "node 1: cannot reach Redis", "the missing node is reported")

	servers[1].Kill(t)
	code, stdout, stderr = run(t, append([]string{"run", "--nodes", nodes, "report", "--"}, env...), envMode)
	assert.Equal(t, 69, code)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, "only 1 of 3 nodes answer, a quorum needs 2")
}

func TestStatus(t *testing.T) {
	_, rdb, url := server(t)
	ctx := context.Background()
	locks, err := lock.New(rdb, lock.WithPrefix("locks:"))
	require.NoError(t, err)
	held, err := locks.TryObtain(ctx, "report", time.Minute)
	require.NoError(t, err)
	pid := "pid=" + strconv.Itoa(os.Getpid())

	code, stdout, stderr := run(t, []string{"status", "--prefix", "locks:", "report"}, url)
	assert.Equal(t, 0, code, "every key held; stderr: %s", stderr)
	assert.Regexp(t, `(?m)^KEY +STATE +HOLDER +TTL +FENCE +WAITING$`, stdout)
	// The holder's fence is its process's; the server remembers a fence once its holder released it.
	assert.Regexp(t, `(?m)^report +held +host=\S+ `+pid+` +\S+ +- +0$`, stdout)

	code, stdout, _ = run(t, []string{"status", "--prefix", "locks:", "--json", "report", "other"}, url)
	assert.Equal(t, 1, code, "a key is free")
	var states []map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &states), stdout)
	require.Len(t, states, 2)
	assert.Equal(t, "held", states[0]["state"])
	assert.Contains(t, states[0]["holder"], pid)
	assert.Equal(t, held.Value(), states[0]["value"])
	assert.NotContains(t, states[0], "fence")
	assert.Equal(t, "free", states[1]["state"])

	require.NoError(t, held.Release(ctx))
	code, stdout, _ = run(t, []string{"status", "--prefix", "locks:", "report"}, url)
	assert.Equal(t, 1, code, "free")
	assert.Regexp(t, `(?m)^report +free +- +- +`+strconv.FormatInt(held.Fence(), 10)+` +0$`, stdout,
		"the last holder's fence, remembered")

	require.NoError(t, rdb.RPush(ctx, "locks:queue-like", "x").Err())
	code, stdout, _ = run(t, []string{"status", "--prefix", "locks:", "queue-like"}, url)
	assert.Equal(t, 1, code)
	assert.Contains(t, stdout, "not a lock")
}

func TestReleaseForce(t *testing.T) {
	_, rdb, url := server(t)
	ctx := context.Background()
	locks, err := lock.New(rdb)
	require.NoError(t, err)
	held, err := locks.TryObtain(ctx, "stuck", time.Minute)
	require.NoError(t, err)

	code, _, stderr := run(t, []string{"release", "stuck"}, url)
	assert.Equal(t, 64, code)
	assert.Contains(t, stderr, "--force")
	assert.Equal(t, int64(1), rdb.Exists(ctx, "stuck").Val(), "nothing released without --force")

	code, stdout, stderr := run(t, []string{"release", "--force", "stuck"}, url)
	assert.Equal(t, 0, code, "stderr: %s", stderr)
	assert.Contains(t, stdout, "stuck: released (was held by host=")
	assert.Zero(t, rdb.Exists(ctx, "stuck").Val())
	assert.ErrorIs(t, held.Refresh(ctx, time.Minute), lock.ErrNotHeld, "the holder finds out at its next refresh")

	code, stdout, _ = run(t, []string{"release", "--force", "stuck"}, url)
	assert.Equal(t, 1, code)
	assert.Contains(t, stdout, "not held")
}

func TestWatch(t *testing.T) {
	ctx := context.Background()

	t.Run("with keyspace notifications", func(t *testing.T) {
		_, rdb, url := server(t) // notifications off: --notify turns them on
		locks, err := lock.New(rdb)
		require.NoError(t, err)
		p := start(t, []string{"watch", "--notify", "report"}, url)
		p.out.await(t, "report  free")
		pid := "pid=" + strconv.Itoa(os.Getpid())

		l, err := locks.TryObtain(ctx, "report", time.Minute)
		require.NoError(t, err)
		assert.Contains(t, p.out.await(t, "acquired by"), pid)
		require.NoError(t, l.Release(ctx))
		p.out.await(t, "report  released")

		_, err = locks.TryObtain(ctx, "report", 100*time.Millisecond)
		require.NoError(t, err)
		p.out.await(t, "expired")

		require.NoError(t, rdb.Set(ctx, "report", "x", 0).Err()) // no ttl: not a lock
		p.out.await(t, "overwritten by another program")
		require.NoError(t, rdb.Del(ctx, "report").Err())
		p.out.await(t, "deleted by another client")

		p.signal(syscall.SIGINT)
		assert.Equal(t, 0, p.wait(), "stderr: %s", p.errOut)
		assert.Equal(t, 1, strings.Count(p.out.String(), "deleted by another client"),
			"keyward's releases delete the key too: they are reported as releases, once")
	})

	t.Run("releases only without notifications", func(t *testing.T) {
		_, rdb, url := server(t)
		locks, err := lock.New(rdb)
		require.NoError(t, err)
		l, err := locks.TryObtain(ctx, "report", time.Minute)
		require.NoError(t, err)
		p := start(t, []string{"watch", "report"}, url)
		p.out.await(t, "report  held by host=")
		p.errOut.await(t, "only releases are shown")
		require.NoError(t, l.Release(ctx))
		p.out.await(t, "report  released")
		p.signal(syscall.SIGTERM)
		assert.Equal(t, 0, p.wait())
		assert.NotContains(t, p.out.String(), "acquired")
	})
}

func TestElect(t *testing.T) {
	_, rdb, url := server(t)
	argv, mode := childCommand(t, "hold")
	cmd := append([]string{"elect", "--ttl", "2s", "scheduler", "--"}, argv...)

	t.Run("one leader at a time", func(t *testing.T) {
		a := start(t, cmd, url, mode)
		termA := strings.TrimPrefix(a.out.await(t, "ready"), "ready ")
		b := start(t, cmd, url, mode)
		c := start(t, cmd, url, mode)
		assert.NotContains(t, b.out.String()+c.out.String(), "ready", "another leads while A does")

		require.NoError(t, a.stdin.Close()) // A's COMMAND ends: A resigns and exits with its status
		assert.Equal(t, 0, a.wait(), "stderr: %s", a.errOut)
		var next, last *proc
		select {
		case <-b.out.appeared("ready"):
			next, last = b, c
		case <-c.out.appeared("ready"):
			next, last = c, b
		case <-time.After(waitFor):
			t.Fatalf("nobody leads after A resigned\nB: %s\nC: %s", b.errOut, c.errOut)
		}
		termNext := strings.TrimPrefix(next.out.await(t, "ready"), "ready ")
		assert.Greater(t, parseInt(t, termNext), parseInt(t, termA), "terms increase")
		assert.NotContains(t, last.out.String(), "ready")
		require.NoError(t, next.stdin.Close())
		assert.Equal(t, 0, next.wait())
		last.out.await(t, "ready")
		last.signal(syscall.SIGTERM) // forwarded to its COMMAND, which exits 3
		assert.Equal(t, 3, last.wait())
	})

	t.Run("COMMAND stopped when the lead is lost, run again when it comes back", func(t *testing.T) {
		p := start(t, append([]string{"elect", "--ttl", "1s", "-v", "lost-lead", "--"}, argv...), url, mode)
		p.out.await(t, "ready")
		require.NoError(t, rdb.Set(context.Background(), "lost-lead", "usurper", time.Second).Err())
		p.out.await(t, "got terminated")
		p.errOut.await(t, `lost the lead of "lost-lead"`)
		// The usurper's key expires: this instance leads again and runs COMMAND anew.
		p.out.awaitN(t, "ready", 2)
		require.NoError(t, p.stdin.Close())
		assert.Equal(t, 0, p.wait(), "stderr: %s", p.errOut)
	})

	t.Run("signal while campaigning", func(t *testing.T) {
		a := start(t, append([]string{"elect", "busy", "--"}, argv...), url, mode)
		a.out.await(t, "ready")
		b := start(t, append([]string{"elect", "-v", "busy", "--"}, argv...), url, mode)
		b.errOut.await(t, `campaigning in "busy"`)
		b.signal(syscall.SIGINT)
		assert.Equal(t, 128+int(syscall.SIGINT), b.wait())
		assert.NotContains(t, b.out.String(), "ready")
		require.NoError(t, a.stdin.Close())
		assert.Equal(t, 0, a.wait())
	})
}

func parseInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	require.NoError(t, err, s)
	return n
}

func TestDemoOnEmbeddedRedis(t *testing.T) {
	code, stdout, stderr := run(t, []string{"demo"})
	assert.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
	assert.Contains(t, stdout, "Every invariant held: 4 of 4 scenarios ok")
	assert.NotContains(t, stdout, "FAIL")
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"help", "run"}, {"run", "--help"}, {"status", "-h"}, {"release", "--help"},
		{"watch", "--help"}, {"elect", "--help"}, {"demo", "--help"}, {"version", "--help"},
	} {
		code, stdout, stderr := run(t, args)
		assert.Equal(t, 0, code, "%v: %s", args, stderr)
		assert.Contains(t, stdout, "Usage:", "%v", args)
	}
	code, stdout, _ := run(t, []string{"--version"})
	assert.Equal(t, 0, code)
	assert.Regexp(t, `^keyward \S+ \(go`, stdout)
}

func TestBadInput(t *testing.T) {
	s, rdb, url := server(t)
	argv, mode := childCommand(t, "exit 0")
	job := append([]string{"job", "--"}, argv...)

	for _, tc := range []struct {
		name   string
		args   []string
		env    string
		code   int
		stderr string
	}{
		{name: "no command", args: nil, code: 64, stderr: "Usage:"},
		{name: "unknown command", args: []string{"lock"}, code: 64, stderr: `unknown command "lock"`},
		{name: "flag before command", args: []string{"--redis", "redis://x", "status"}, code: 64, stderr: "before the command"},
		{name: "run without key", args: []string{"run"}, code: 64, stderr: "missing KEY"},
		{name: "run without command", args: []string{"run", "job"}, code: 64, stderr: "missing COMMAND"},
		{name: "unknown flag", args: []string{"run", "--bogus", "job", "--", "true"}, code: 64, stderr: "flag provided but not defined: --bogus"},
		{name: "bad duration", args: []string{"run", "--ttl", "soon", "job", "--", "true"}, code: 64, stderr: "want a duration"},
		{name: "zero ttl", args: []string{"run", "--ttl", "0", "job", "--", "true"}, code: 64, stderr: "--ttl"},
		{name: "ttl within the drift margin", args: append([]string{"run", "--ttl", "1ms"}, job...), env: url, code: 64, stderr: "drift"},
		{name: "wait and no-wait", args: []string{"run", "-n", "--wait", "5s", "job", "--", "true"}, code: 64, stderr: "exclude"},
		{name: "bad conflict code", args: []string{"run", "-E", "300", "job", "--", "true"}, code: 64, stderr: "0 to 255"},
		{name: "status without key", args: []string{"status"}, code: 64, stderr: "missing KEY"},
		{name: "watch without key", args: []string{"watch"}, code: 64, stderr: "missing KEY"},
		{name: "nodes and redis", args: []string{"run", "--nodes", "redis://a", "--redis", "redis://b", "job", "--", "true"}, code: 64, stderr: "exclude"},
		{name: "bad node URL", args: []string{"run", "--nodes", "redis://a,b:1", "job", "--", "true"}, code: 64, stderr: `bad Redis URL "b:1"`},
		{name: "elect without command", args: []string{"elect", "scheduler"}, code: 64, stderr: "missing COMMAND"},
		{name: "elect with a bad ttl", args: []string{"elect", "--ttl", "1ms", "scheduler", "--", "true"}, code: 64, stderr: "drift"},
		{name: "demo argument", args: []string{"demo", "now"}, code: 64, stderr: "only flags"},
		{name: "demo scenario", args: []string{"demo", "--scenario", "bogus"}, code: 64, stderr: `unknown scenario "bogus"`},
		{name: "URL scheme", args: []string{"status", "--redis", "http://localhost", "job"}, code: 64, stderr: "want redis://"},
		{name: "URL without scheme", args: []string{"status", "job"}, env: "REDIS_URL=localhost:6379", code: 64, stderr: "bad Redis URL"},
		{name: "URL database", args: []string{"status", "--redis", "redis://localhost/x", "job"}, code: 64, stderr: "invalid database number"},
		{name: "URL port", args: []string{"status", "--redis", "redis://:sekret@localhost:abc", "job"}, code: 64, stderr: "invalid port"},
		{name: "unreachable", args: []string{"status", "--redis", "redis://127.0.0.1:1", "job"}, code: 69, stderr: "cannot reach Redis at 127.0.0.1:1"},
		{name: "Cluster URL with a database", args: []string{"status", "--redis", "redis+cluster://:sekret@a:1,b:2/1", "job"}, code: 64, stderr: "a Cluster has only database 0"},
		{name: "Sentinel URL without master", args: []string{"status", "job"}, env: "REDIS_URL=redis+sentinel://:sekret@a,b", code: 64, stderr: "missing master name"},
		{name: "TLS files without TLS", args: []string{"status", "--tls-ca-file", "ca.pem", "--redis", "redis://a:1", "job"}, code: 64, stderr: "for TLS: the URL's scheme is redis://"},
		{name: "demo on a Cluster", args: []string{"demo", "--redis", "redis+cluster://a:1"}, code: 64, stderr: "the demo runs on one server"},
		{name: "the guard by hand", args: []string{"__guard"}, code: 64, stderr: "keyward's own helper process"},
		{name: "TLS to a plain server", args: []string{"status", "--timeout", "500ms", "--redis", "rediss://" + s.Addr(), "job"}, code: 69, stderr: "asks for TLS, rediss://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var env []string
			if tc.env != "" {
				env = append(env, tc.env)
			}
			code, _, stderr := run(t, tc.args, append(env, mode)...)
			assert.Equal(t, tc.code, code, "stderr: %s", stderr)
			assert.Contains(t, stderr, tc.stderr)
			assert.NotContains(t, stderr, "sekret", "a password never shows")
			assert.NotContains(t, stderr, "panic")
		})
	}

	t.Run("authentication", func(t *testing.T) {
		ctx := context.Background()
		require.NoError(t, rdb.Do(ctx, "ACL", "SETUSER", "ops", "on", ">opspw", "~*", "&*", "+@all").Err())
		require.NoError(t, rdb.ConfigSet(ctx, "requirepass", "sekret").Err())
		for _, tc := range []struct {
			url, stderr string
			code        int
		}{
			{"redis://" + s.Addr(), "requires a password", 77},
			{"redis://:wrong@" + s.Addr(), "refused the user name or password", 77},
			{"redis://ops:wrong@" + s.Addr(), "refused the user name or password", 77},
			{"redis://:sekret@" + s.Addr(), "", 1},
			{"redis://ops:opspw@" + s.Addr(), "", 1},
		} {
			code, _, stderr := run(t, []string{"status", "job"}, "REDIS_URL="+tc.url)
			assert.Equal(t, tc.code, code, "%s: %s", redact(tc.url), stderr)
			assert.Contains(t, stderr, tc.stderr)
			assert.NotContains(t, stderr, "sekret")
			assert.NotContains(t, stderr, "opspw")
		}
	})
}

func redact(url string) string {
	return strings.NewReplacer("sekret", "xxx", "opspw", "xxx").Replace(url)
}
