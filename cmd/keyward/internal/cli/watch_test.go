package cli

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
)

// output is a writer that a test can wait on.
type output struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
}

func newOutput() *output { return &output{changed: make(chan struct{})} }

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	close(o.changed)
	o.changed = make(chan struct{})
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// awaitN waits until s occurs n times in the output.
func (o *output) awaitN(t *testing.T, s string, n int) {
	t.Helper()
	deadline := time.After(time.Minute)
	for {
		o.mu.Lock()
		found, changed := strings.Count(o.buf.String(), s) >= n, o.changed
		o.mu.Unlock()
		if found {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("waiting for %d times %q; got:\n%s", n, s, o)
		}
	}
}

// watchIn runs keyward watch in this process until the test ends.
func watchIn(t *testing.T, url string, keys ...string) (stdout, stderr *output) {
	t.Helper()
	stdout, stderr = newOutput(), newOutput()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		done <- Main(ctx, append([]string{"watch", "--redis", url}, keys...), Env{Stdout: stdout, Stderr: stderr})
	}()
	t.Cleanup(func() {
		cancel()
		assert.Equal(t, ExitOK, <-done, "stderr: %s", stderr)
	})
	return stdout, stderr
}

// After a failover in which the old master lives on as a replica, watch subscribes to the new master.
func TestWatchFollowsAFailover(t *testing.T) {
	masterCheck = 50 * time.Millisecond
	defer func() { masterCheck = healthCheck }()

	t.Run("Sentinel group", func(t *testing.T) {
		g := redistest.StartSentinel(t)
		stdout, stderr := watchIn(t, "redis+sentinel://"+strings.Join(g.SentinelAddrs(), ",")+"/"+redistest.SentinelMasterName, "k")
		stdout.awaitN(t, "k  free", 1)
		g.Failover(t)
		stderr.awaitN(t, "the master changed (a failover); subscribing again", 1)
		stdout.awaitN(t, "k  free", 2) // the states, printed again from the new master
		require.NotContains(t, stderr.String(), "connection lost")
	})

	t.Run("Cluster", func(t *testing.T) {
		c := redistest.StartCluster(t)
		stdout, stderr := watchIn(t, "redis+cluster://"+c.Addrs()[0], "k")
		stdout.awaitN(t, "k  free", 1)
		c.Failover(t, "k")
		stderr.awaitN(t, "the master changed (a failover); subscribing again", 1)
		stdout.awaitN(t, "k  free", 2)
	})
}
