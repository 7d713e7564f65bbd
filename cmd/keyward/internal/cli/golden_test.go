package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/keys"
)

// update rewrites the golden files with what this run printed: go test ./cmd/keyward/internal/cli -run Golden
// -update, then read the diff before committing it.
var update = flag.Bool("update", false, "rewrite the golden files in testdata/ with this run's output")

// golden compares got with the file testdata/name, or writes it there with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
		return
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "no golden file: run the test with -update to write it")
	assert.Equal(t, string(want), got, "output differs from %s (if the change is meant, run with -update)", path)
}

// The usage texts are the command's documentation: a change to them shows in review as a change to these
// files.
func TestUsageGolden(t *testing.T) {
	for _, tc := range []struct {
		file string
		args []string
	}{
		{"help/keyward.txt", []string{"--help"}},
		{"help/run.txt", []string{"run", "--help"}},
		{"help/status.txt", []string{"status", "--help"}},
		{"help/release.txt", []string{"release", "--help"}},
		{"help/watch.txt", []string{"watch", "--help"}},
		{"help/elect.txt", []string{"elect", "--help"}},
		{"help/limit.txt", []string{"limit", "--help"}},
		{"help/demo.txt", []string{"demo", "--help"}},
		{"help/version.txt", []string{"version", "--help"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), tc.args, Env{Stdout: &stdout, Stderr: &stderr})
			assert.Equal(t, ExitOK, code, stderr.String())
			assert.Empty(t, stderr.String())
			golden(t, tc.file, stdout.String())
		})
	}
}

// status of one lock in each state, as a table and as JSON. The server is miniredis, whose ttls stand still
// (nothing here advances its clock), so the output is the same in every run.
func TestStatusGolden(t *testing.T) {
	m := miniredis.RunT(t)
	lockKey := func(name, value string, ttl time.Duration) {
		require.NoError(t, m.Set(name, value))
		m.SetTTL(name, ttl)
	}
	fence := func(name string, n int64) {
		require.NoError(t, m.Set(keys.For(name).Fence, strconv.FormatInt(n, 10)))
	}
	queue := func(name string, processes ...string) {
		for i, p := range processes {
			_, err := m.ZAdd(keys.For(name).Queue, float64(i+1), p)
			require.NoError(t, err)
		}
	}
	lockKey("jobs:report", "q83vEjRWeJA4xY0tFqLm9w host=web-2 pid=4242", 9*time.Minute+52*time.Second)
	fence("jobs:report", 1767225600123456)
	queue("jobs:report", "proc-a")
	lockKey("jobs:backup", "Zm9vYmFyYmF6cXV4cXV1eA", 750*time.Millisecond) // another library's value: no metadata
	fence("jobs:cleanup", 1767225600000042)                                // free; its last holder's fence is remembered
	lockKey("jobs:reindex", "reserved:proc-b", 20*time.Millisecond)
	queue("jobs:reindex", "proc-b", "proc-c")
	require.NoError(t, m.Set("jobs:config", "written by someone else")) // a string without expiry
	_, err := m.Push("jobs:queue-like", "x")
	require.NoError(t, err)

	names := []string{"report", "backup", "cleanup", "reindex", "config", "queue-like"}
	env := func(stdout, stderr *bytes.Buffer) Env {
		return Env{Stdout: stdout, Stderr: stderr, Getenv: func(k string) string {
			if k == "REDIS_URL" {
				return "redis://" + m.Addr()
			}
			return ""
		}}
	}
	for _, tc := range []struct {
		file string
		args []string
	}{
		{"status/table.txt", append([]string{"status", "--prefix", "jobs:"}, names...)},
		{"status/json.txt", append([]string{"status", "--prefix", "jobs:", "--json"}, names...)},
	} {
		t.Run(tc.file, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), tc.args, env(&stdout, &stderr))
			assert.Equal(t, ExitNotHeld, code, "some locks are free; stderr: %s", stderr.String())
			assert.Empty(t, stderr.String())
			golden(t, tc.file, stdout.String())
		})
	}
}
