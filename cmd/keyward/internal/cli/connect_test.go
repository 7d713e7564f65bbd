package cli

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/keyward/keyward/internal/redistest"
)

// mainIn runs Main in this process with args, and returns its exit status, stdout and stderr.
func mainIn(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), args, Env{Stdout: &stdout, Stderr: &stderr})
	return code, stdout.String(), stderr.String()
}

// A URL of the wrong form for the deployment is refused at once, with the form to use, rather than working for
// some keys and failing with MOVED for others.
func TestURLOfTheWrongDeployment(t *testing.T) {
	plain := redistest.Start(t)
	node := redistest.Start(t, redistest.WithCluster())

	for _, tc := range []struct {
		name, url string
		code      int
		stderr    string
	}{
		{name: "a single-server URL at a Cluster node", url: "redis://" + node.Addr(), code: ExitUsage,
			stderr: "Redis at " + node.Addr() + " is a Cluster node: use a redis+cluster://" + node.Addr() + " URL"},
		{name: "a Cluster URL at a plain server", url: "redis+cluster://" + plain.Addr(), code: ExitUsage,
			stderr: plain.Addr() + ": not a Cluster (ERR This instance has cluster support disabled): use a redis:// URL"},
		{name: "a Sentinel URL at a plain server", url: "redis+sentinel://" + plain.Addr() + "/mymaster", code: ExitUsage,
			stderr: plain.Addr() + ": not a sentinel"},
		{name: "a Sentinel URL at nothing", url: "redis+sentinel://127.0.0.1:1/mymaster", code: ExitUnavailable,
			stderr: "cannot reach the sentinels at 127.0.0.1:1: dial tcp 127.0.0.1:1"},
		{name: "a Cluster URL at nothing", url: "redis+cluster://127.0.0.1:1", code: ExitUnavailable,
			stderr: "cannot reach the Cluster at 127.0.0.1:1: dial tcp 127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := mainIn(t, "status", "--timeout", "2s", "--redis", tc.url, "job")
			assert.Equal(t, tc.code, code, stderr)
			assert.Contains(t, stderr, tc.stderr)
		})
	}
}
