package redistest

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ping runs PING with a context timeout (the clients have
// ContextTimeoutEnabled, so it bounds the socket wait too).
func ping(t *testing.T, c *redis.Client, timeout time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	return c.Ping(ctx).Err()
}

func mustPing(t *testing.T, c *redis.Client) {
	t.Helper()
	if err := ping(t, c, 2*time.Second); err != nil {
		t.Fatalf("PING: %v", err)
	}
}

func configGet(t *testing.T, c *redis.Client, name string) string {
	t.Helper()
	got, err := c.ConfigGet(t.Context(), name).Result()
	if err != nil {
		t.Fatalf("CONFIG GET %s: %v", name, err)
	}
	return got[name]
}

func TestStartPing(t *testing.T) {
	s := Start(t)
	if s.Port() == 6379 {
		t.Fatal("port 6379 handed out")
	}
	if want := "127.0.0.1:" + strconv.Itoa(s.Port()); s.Addr() != want {
		t.Fatalf("Addr() = %q, want %q", s.Addr(), want)
	}
	if !s.Alive() {
		t.Fatal("Alive() = false after Start")
	}
	c := s.Client(t)
	mustPing(t, c)
	for name, want := range map[string]string{"save": "", "appendonly": "no", "bind": "127.0.0.1", "protected-mode": "no"} {
		if got := configGet(t, c, name); got != want {
			t.Errorf("CONFIG GET %s = %q, want %q", name, got, want)
		}
	}
	if log := s.Log(); !strings.Contains(log, "Ready to accept connections") {
		t.Errorf("log lacks readiness line:\n%s", log)
	}
}

func TestStartN(t *testing.T) {
	servers := StartN(t, 3)
	if len(servers) != 3 {
		t.Fatalf("got %d servers", len(servers))
	}
	seen := map[int]bool{}
	for _, s := range servers {
		if s.Port() == 6379 || seen[s.Port()] {
			t.Fatalf("bad or repeated port %d", s.Port())
		}
		seen[s.Port()] = true
		mustPing(t, s.Client(t))
	}
	// Independent: a key set on one is not on another.
	c0, c1 := servers[0].Client(t), servers[1].Client(t)
	if err := c0.Set(t.Context(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c1.Get(t.Context(), "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET on other server: %v, want redis.Nil", err)
	}
}

func TestWithNotify(t *testing.T) {
	s := Start(t, WithNotify("Kgx"))
	flags := configGet(t, s.Client(t), "notify-keyspace-events")
	for _, f := range "Kgx" { // Redis may reorder the flags
		if !strings.ContainsRune(flags, f) {
			t.Errorf("notify-keyspace-events = %q, lacks %c", flags, f)
		}
	}
}

func TestWithCluster(t *testing.T) {
	s := Start(t, WithCluster())
	c := s.Client(t)
	slot, err := c.ClusterKeySlot(t.Context(), "foo").Result()
	if err != nil || slot != 12182 {
		t.Fatalf("CLUSTER KEYSLOT foo = %d, %v; want 12182", slot, err)
	}
}

func TestWithArgs(t *testing.T) {
	s := Start(t, WithArgs("--maxmemory", "1mb"))
	if got := configGet(t, s.Client(t), "maxmemory"); got != "1048576" {
		t.Fatalf("maxmemory = %q", got)
	}
}

func TestKill(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	mustPing(t, c)
	s.Kill(t)
	if s.Alive() {
		t.Fatal("Alive() = true after Kill")
	}
	if err := ping(t, c, 2*time.Second); err == nil {
		t.Fatal("PING succeeded after Kill")
	}
	s.Kill(t) // killing a dead server is a no-op
}

func TestPauseResume(t *testing.T) {
	s := Start(t)
	c := s.Client(t)
	mustPing(t, c)
	for round := range 2 { // the second round checks that a stop is reported again
		s.Pause(t)
		if !s.Alive() {
			t.Fatal("Alive() = false while paused")
		}
		if err := ping(t, c, 200*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			t.Fatalf("round %d: PING while paused: %v, want a timeout", round, err)
		}
		s.Resume(t)
		mustPing(t, c)
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

func TestPauseThenKill(t *testing.T) {
	s := Start(t)
	s.Pause(t)
	s.Kill(t)
	if s.Alive() {
		t.Fatal("Alive() = true after Kill of a paused server")
	}
}

func TestRestart(t *testing.T) {
	s := Start(t, WithNotify("Kgx"))
	c := s.Client(t)
	port, pid := s.Port(), s.PID()
	if err := c.Set(t.Context(), "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	s.Restart(t)
	if s.Port() != port || s.PID() == pid || !s.Alive() {
		t.Fatalf("after Restart: port %d (was %d), pid %d (was %d), alive %v", s.Port(), port, s.PID(), pid, s.Alive())
	}
	// The old client reconnects by itself, to an empty server with the same options.
	mustPing(t, c)
	if n, err := c.DBSize(t.Context()).Result(); err != nil || n != 0 {
		t.Fatalf("DBSIZE after Restart = %d, %v; want 0", n, err)
	}
	if flags := configGet(t, c, "notify-keyspace-events"); !strings.ContainsRune(flags, 'K') {
		t.Fatalf("notify-keyspace-events after Restart = %q", flags)
	}

	// Restarting a killed server works too.
	s.Kill(t)
	s.Restart(t)
	mustPing(t, c)
}

func TestMiniredis(t *testing.T) {
	m, c := Miniredis(t)
	if err := c.Set(t.Context(), "k", "v", time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	if !m.Exists("k") {
		t.Fatal("key not in miniredis")
	}
	m.FastForward(2 * time.Second)
	if err := c.Get(t.Context(), "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET after expiry: %v, want redis.Nil", err)
	}
}

func TestSynctestClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		c := SynctestClient(m)
		ctx := t.Context()

		if err := c.Set(ctx, "k", "v", 1000*time.Millisecond).Err(); err != nil {
			t.Fatal(err)
		}
		if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
			t.Fatalf("GET k = %q, %v", v, err)
		}
		if pttl, err := c.PTTL(ctx, "k").Result(); err != nil || pttl != time.Second {
			t.Fatalf("PTTL k = %v, %v", pttl, err)
		}

		start := time.Now()
		time.Sleep(2 * time.Second)
		if d := time.Since(start); d != 2*time.Second {
			t.Fatalf("slept %v on the fake clock", d)
		}
		if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
			t.Fatalf("GET k after 2s: %v, want redis.Nil", err)
		}

		// Concurrent use inside the bubble (below ClientPoolSize).
		errs := make(chan error, 20)
		for range 20 {
			go func() { errs <- c.Incr(ctx, "n").Err() }()
		}
		for range 20 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if n, err := c.Get(ctx, "n").Int(); err != nil || n != 20 {
			t.Fatalf("n = %d, %v", n, err)
		}

		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		m.Close()
	})
	// Had the bubble done a DNS lookup (go-redis does one in NewClient for a
	// host name in Addr, see SynctestClient), this would crash the binary.
	if _, err := net.DefaultResolver.LookupHost(t.Context(), "localhost"); err != nil {
		t.Logf("lookup localhost: %v", err)
	}
}

// TestNewClientSettlesRedial drives a client into go-redis' saturated-dial
// state, where a background goroutine re-dials once a second. The cleanup of
// NewClient must wait it out; goleak in TestMain checks it did (keep this
// test last, so no other test hides a leak by taking long enough).
func TestNewClientSettlesRedial(t *testing.T) {
	s := Start(t)
	opt := s.ClientOptions()
	opt.PoolSize = 2
	opt.MaxRetries = -1
	c := NewClient(t, opt)
	mustPing(t, c)
	s.Kill(t)
	for range 3 {
		if err := ping(t, c, 2*time.Second); err == nil {
			t.Fatal("PING succeeded after Kill")
		}
	}
}

// Monotonic counts nanoseconds at the pace of time.Now: a unit or clock mix-up shows as a factor of 1000 or an
// offset.
func TestMonotonic(t *testing.T) {
	m0, err := Monotonic()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for time.Since(start) < 20*time.Millisecond { // let both clocks move (no wait for an event: a busy loop)
	}
	m1, err := Monotonic()
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if d := m1 - m0; d < elapsed-5*time.Millisecond || d > elapsed+5*time.Millisecond {
		t.Fatalf("CLOCK_MONOTONIC moved %v while time.Now moved %v", d, elapsed)
	}
}
