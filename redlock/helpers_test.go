package redlock_test

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/redlock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newClient returns a redlock Client on nodes, closed in t.Cleanup (before the nodes' clients, which were
// registered first). Its node timeout is a generous 2 s unless opts say otherwise: the default (a few
// milliseconds) is too short for a first contact (dial, handshake, script load) on a busy test machine.
func newClient(t testing.TB, nodes []redis.UniversalClient, opts ...redlock.Option) *redlock.Client {
	t.Helper()
	c, err := redlock.New(nodes, append([]redlock.Option{redlock.WithNodeTimeout(2 * time.Second)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, c.Close()) })
	return c
}

func universal(clients []*redis.Client) []redis.UniversalClient {
	nodes := make([]redis.UniversalClient, len(clients))
	for i, c := range clients {
		nodes[i] = c
	}
	return nodes
}

// miniNodes starts n miniredis servers (on loopback TCP) and returns them with a client to each.
func miniNodes(t testing.TB, n int) ([]*miniredis.Miniredis, []*redis.Client) {
	var ms []*miniredis.Miniredis
	var cs []*redis.Client
	for range n {
		m, c := redistest.Miniredis(t)
		ms = append(ms, m)
		cs = append(cs, c)
	}
	return ms, cs
}

// realNodes starts n redis-server processes and returns them with a client to each.
func realNodes(t testing.TB, n int) ([]*redistest.Server, []*redis.Client) {
	servers := redistest.StartN(t, n)
	var cs []*redis.Client
	for _, s := range servers {
		cs = append(cs, s.Client(t))
	}
	return servers, cs
}

// bubble is a testing/synctest bubble with miniredis nodes whose keys expire on the bubble's clock.
type bubble struct {
	ms      []*miniredis.Miniredis
	clients []*redis.Client
	nodes   []redis.UniversalClient

	mu   sync.Mutex
	hung []net.Conn // the server ends of hung connections
}

// inBubble runs test in a synctest bubble with n miniredis nodes. test may turn nodes into hung or slow ones
// (hang, slow) before making its Clients; it must close the Clients it makes.
func inBubble(t *testing.T, n int, test func(t *testing.T, b *bubble)) {
	synctest.Test(t, func(t *testing.T) {
		b := &bubble{}
		for range n {
			m := miniredis.NewMiniRedis()
			c := redistest.SynctestClient(m)
			b.ms = append(b.ms, m)
			b.clients = append(b.clients, c)
			b.nodes = append(b.nodes, c)
		}
		defer func() {
			for i := range b.ms {
				_ = b.clients[i].Close()
				b.ms[i].Close()
			}
			// go-redis does not always close a connection whose handshake timed out.
			b.mu.Lock()
			defer b.mu.Unlock()
			for _, c := range b.hung {
				_ = c.Close()
			}
		}()
		test(t, b)
	})
}

// client returns a redlock Client on the bubble's nodes; the caller closes it.
func (b *bubble) client(t *testing.T, opts ...redlock.Option) *redlock.Client {
	t.Helper()
	c, err := redlock.New(b.nodes, opts...)
	require.NoError(t, err)
	return c
}

// hang makes node i a server that accepts connections and never answers, like a stopped process.
func (b *bubble) hang(i int) { b.clients[i].AddHook(dialHook(b.hungConn)) }

// slow makes node i get every command d late.
func (b *bubble) slow(i int, d time.Duration) {
	b.clients[i].AddHook(dialHook(func(c net.Conn) net.Conn { return &slowConn{Conn: c, delay: d} }))
}

// dialHook replaces or wraps the connections a client dials.
type dialHook func(net.Conn) net.Conn

func (h dialHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return h(c), nil
	}
}
func (h dialHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h dialHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// hungConn replaces a connection by one that swallows what is written and never answers.
func (b *bubble) hungConn(real net.Conn) net.Conn {
	_ = real.Close()
	mine, theirs := net.Pipe()
	b.mu.Lock()
	b.hung = append(b.hung, theirs)
	b.mu.Unlock()
	go func() {
		_, _ = io.Copy(io.Discard, theirs)
		_ = theirs.Close()
	}()
	return mine
}

// slowConn delivers what is written to it delay late, after the first write (the connection's handshake, which
// go-redis bounds by its dial timeout): the server runs each command delay late and answers at once.
type slowConn struct {
	net.Conn
	delay  time.Duration
	writes atomic.Int64
}

func (c *slowConn) Write(p []byte) (int, error) {
	if c.writes.Add(1) > 1 {
		time.Sleep(c.delay)
	}
	return c.Conn.Write(p)
}

// value returns the lock key's value on a miniredis node ("" when absent).
func value(m *miniredis.Miniredis, key string) string {
	v, _ := m.Get(key)
	return v
}

// holders counts the nodes whose key holds want.
func holders(ms []*miniredis.Miniredis, key, want string) int {
	n := 0
	for _, m := range ms {
		if value(m, key) == want {
			n++
		}
	}
	return n
}

// isClosed reports whether ch is closed.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
