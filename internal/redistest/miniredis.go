package redistest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// clientOptions are the go-redis options shared by every client made here.
func clientOptions(addr string) *redis.Options {
	return &redis.Options{
		Addr:                  addr,
		DialTimeout:           time.Second,
		ReadTimeout:           2 * time.Second,
		WriteTimeout:          2 * time.Second,
		PoolSize:              ClientPoolSize,
		DialerRetries:         1,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
		// The default "auto" mode builds a handoff worker whose circuit
		// breaker manager runs a goroutine with a 5-minute ticker until the
		// client is closed; it only matters for Redis Enterprise/Cloud.
		// Whatever the mode, NewClient auto-detects the endpoint type, which
		// for a host name in Addr is a DNS lookup (see SynctestClient);
		// giving the type skips that.
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode:         maintnotifications.ModeDisabled,
			EndpointType: maintnotifications.EndpointTypeNone,
		},
	}
}

// ClientPoolSize is the PoolSize of the clients made by this package. It is
// large on purpose: connections are only dialled when needed, and go-redis
// counts failed dials over the whole life of a client (the count is only reset
// by a successful background probe). Once the count reaches PoolSize, commands
// fail at once with the last dial error, and a goroutine
// (pool.(*ConnPool).tryDial) re-dials once a second until a dial succeeds.
// With a small pool a few commands against a killed server are enough to get
// there, after which a restarted server is seen up to a second late and the
// goroutine can outlive Close by a second (a goleak report). NewClient also
// waits that goroutine out on cleanup.
const ClientPoolSize = 1000

// tryDialInterval is how long go-redis' tryDial sleeps after a failed dial.
const tryDialInterval = time.Second

// NewClient returns a go-redis client for opt that is closed in t.Cleanup;
// use it to build a client from adjusted ClientOptions. If the client failed
// to dial often enough for go-redis to start its background re-dial goroutine
// (see ClientPoolSize), the cleanup waits (at most a second) for that
// goroutine to notice the client is closed and exit, so goleak does not
// report it. opt.Dialer defaults to a plain TCP dialer (no TLS).
func NewClient(t testing.TB, opt *redis.Options) *redis.Client {
	opt = ptrCopy(opt)
	dial := opt.Dialer
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	tr := &dialTracker{dial: dial}
	opt.Dialer = tr.Dial
	c := redis.NewClient(opt)
	poolSize := c.Options().PoolSize
	t.Cleanup(func() {
		_ = c.Close()
		tr.settle(poolSize)
	})
	return c
}

func ptrCopy[T any](p *T) *T {
	c := *p
	return &c
}

// dialTracker wraps a dialer and remembers failed dials.
type dialTracker struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)

	mu          sync.Mutex
	failures    int
	lastFailure time.Time
}

// Dial dials and counts failures.
func (d *dialTracker) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.dial(ctx, network, addr)
	if err != nil {
		d.mu.Lock()
		d.failures++
		d.lastFailure = time.Now()
		d.mu.Unlock()
	}
	return c, err
}

// settle runs after Close. If go-redis may have started its tryDial goroutine
// (at least poolSize failed dials), it waits until a tryDial sleep that began
// at the last failure is over: the goroutine then sees the closed pool and
// returns. There is no event to wait for, the sleep is inside go-redis.
func (d *dialTracker) settle(poolSize int) {
	for {
		d.mu.Lock()
		n, last := d.failures, d.lastFailure
		d.mu.Unlock()
		if n < poolSize {
			return
		}
		wait := time.Until(last.Add(tryDialInterval + 50*time.Millisecond))
		if wait <= 0 {
			return
		}
		time.Sleep(wait)
	}
}

// Miniredis starts an in-memory miniredis (miniredis.RunT, on a loopback TCP
// port) and returns it with a go-redis client to it. Both are closed in
// t.Cleanup, the client first.
func Miniredis(t testing.TB) (*miniredis.Miniredis, *redis.Client) {
	t.Helper()
	m := miniredis.RunT(t)
	return m, NewClient(t, clientOptions(m.Addr()))
}

// SynctestClient returns a go-redis client for m that dials with m.Dial() (an
// in-memory net.Pipe, no TCP), for use inside a testing/synctest bubble; m
// must have been created with miniredis.NewMiniRedis() inside the bubble (and
// not started: Dial starts it without a listener). The client's writes to the
// pipe are queued (see bufferedConn), as a socket's kernel buffer would. It also turns on
// m.ClockTTL(true), so key expiry follows the bubble's fake clock: a
// time.Sleep in the bubble expires keys. The caller closes the client, then
// m, before the bubble ends (pending timers do not keep a bubble alive, only
// goroutines do; an unclosed client keeps none either, but m does).
//
// What go-redis v9.22.0 does in the background, checked against its source
// and in a bubble, and what is set here:
//
//   - The connection pool has no reaper goroutine: idle and lifetime limits
//     are checked lazily when a connection is taken from the pool.
//     ConnMaxIdleTime is -1 all the same (ConnMaxLifetime 0), so a long
//     fake-clock sleep does not make the pool drop and redial connections.
//     MinIdleConns stays 0: above 0 the pool dials in background goroutines.
//   - Maintenance notifications (default mode "auto" for RESP3) start, in
//     NewClient, a goroutine with a 5-minute ticker (handoff circuit breaker
//     cleanup) that lives until Close. Disabled here, as in every client of
//     this package. Client-side caching and autopipelining also run
//     goroutines; they are off by default and must stay off.
//   - NewClient classifies the endpoint for maintenance notifications even
//     when they are disabled; for a host name in Addr that is a DNS lookup.
//     Done in a bubble, it initialises the net package's resolver state with
//     bubbled channels, and the next DNS lookup outside the bubble crashes the
//     binary ("fatal error: send on synctest channel from outside bubble").
//     MaintNotificationsConfig.EndpointType is set to "none", which skips it.
//   - Each dial runs in a short-lived goroutine that ends once the
//     connection is handed over; deadlines on a net.Pipe are bubble timers.
//     Neither keeps a bubble alive. After PoolSize failed dials the pool runs
//     a re-dial goroutine (see ClientPoolSize); in a bubble its one-second
//     sleeps pass on the fake clock and it ends after Close.
//   - Hazard: when more goroutines want a connection than PoolSize, the pool
//     waits on a time.Timer taken from a package-level sync.Pool shared by
//     every go-redis client in the binary. A timer created in a bubble that
//     later reaches a goroutine outside it crashes the test binary ("fatal
//     error: reset of synctest timer from outside bubble"). Hence the large
//     ClientPoolSize: keep concurrency in a bubble below it.
//
// The other options are those of Server.ClientOptions.
func SynctestClient(m *miniredis.Miniredis) *redis.Client {
	m.ClockTTL(true)
	opt := clientOptions("miniredis")
	opt.Dialer = func(context.Context, string, string) (net.Conn, error) { return Dial(m) }
	opt.MinIdleConns = 0
	opt.ConnMaxIdleTime = -1
	opt.ConnMaxLifetime = 0
	return redis.NewClient(opt)
}

// Dial connects to m in memory (miniredis's Dial, which works in a synctest bubble) through a connection whose
// writes never block, as a TCP socket's do with its kernel buffer: a bare in-memory pipe can deadlock a pub/sub
// connection (see bufferedConn). Dialers of clients that tests build by hand (a fake cluster) use it.
func Dial(m *miniredis.Miniredis) (net.Conn, error) {
	c, err := m.Dial()
	if err != nil {
		return nil, err
	}
	return newBufferedConn(c), nil
}
