package semaphore_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
)

// dropAfterRun is a connection that, once armed, lets the server run the next EVALSHA and then drops the
// connection instead of passing the reply on: go-redis sees the connection closed (io.EOF) and sends the command
// again on a new one, as it does for a real connection that dies at that moment.
type dropAfterRun struct {
	net.Conn
	armed *atomic.Bool
	drop  bool
}

func (c *dropAfterRun) Write(b []byte) (int, error) {
	if bytes.Contains(bytes.ToLower(b), []byte("evalsha")) && c.armed.CompareAndSwap(true, false) {
		c.drop = true
	}
	return c.Conn.Write(b)
}

func (c *dropAfterRun) Read(b []byte) (int, error) {
	if c.drop {
		// The first bytes of the reply: the server ran the script.
		_, _ = c.Conn.Read(b)
		_ = c.Conn.Close()
		return 0, io.EOF
	}
	return c.Conn.Read(b)
}

// TestAcquireResentAfterADroppedConnection: go-redis resends an acquire whose connection dropped after the server
// ran it. The resent acquire finds the caller's own permit: that is the caller's permit, not a full semaphore.
// (It was reported "not obtained: held by another" while the permit stayed held for its whole ttl.)
func TestAcquireResentAfterADroppedConnection(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rig *redis.Client) {
		ctx := withTimeout(t, 10*time.Second)
		var armed atomic.Bool
		var d net.Dialer
		// go-redis's default options, as a user builds them (MaxRetries 3).
		rdb := redistest.NewClient(t, &redis.Options{Addr: rig.Options().Addr,
			Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
				conn, err := d.DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				return &dropAfterRun{Conn: conn, armed: &armed}, nil
			}})
		sem := newSem(t, rdb, "uploads", 1)
		warm, err := sem.TryAcquire(ctx, time.Second) // loads the script: the dropped command runs it
		require.NoError(t, err)
		require.NoError(t, warm.Release(ctx))

		armed.Store(true)
		p, err := sem.TryAcquire(ctx, time.Minute)
		require.False(t, armed.Load(), "the connection was dropped")
		require.NoError(t, err, "the resent acquire found the caller's own permit")
		assert.Equal(t, []string{p.Value()}, holders(t, rig, "uploads"), "one place, the caller's")
		require.NoError(t, p.Release(ctx))
		assert.Empty(t, holders(t, rig, "uploads"))
	})
}
