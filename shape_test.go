package keyward_test

// One situation, one error shape, in every package: this test puts lock, redlock, semaphore, election and ratelimit
// through the same situations on real servers and checks that each error names the key (or the semaphore's, the
// election's or the rate limiter's name, here all "job"), and matches the same keyward sentinel and cause with
// errors.Is. Run it with -v to print the table of the errors' texts.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/election"
	"github.com/keyward/keyward/internal/acl"
	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
	"github.com/keyward/keyward/ratelimit"
	"github.com/keyward/keyward/redlock"
	"github.com/keyward/keyward/semaphore"
)

// A taker takes "job" once through one package, with what the situation set up, and returns the error.
type taker struct {
	pkg  string
	take func(ctx context.Context) error
}

// takers returns a taker per package, each using clients: the first three are Redlock's nodes, the first is also
// lock's and election's server, and the fourth is the semaphore's (its keys would collide with the lock's) and the
// rate limiter's (its key has a prefix: "rate:job"; taking "job" is a Wait for its one token a minute), and a
// function that closes the packages' clients (the election has no Close of its own: its lock client's is the one
// that ends it).
func takers(t *testing.T, clients []redis.UniversalClient, electOnRedlock bool) ([]taker, func()) {
	t.Helper()
	locks, err := lock.New(clients[0])
	require.NoError(t, err)
	t.Cleanup(func() { _ = locks.Close() })
	quorum, err := redlock.New(clients[:3], redlock.WithNodeTimeout(200*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(func() { _ = quorum.Close() })
	sem, err := semaphore.New(clients[3], "job", 1)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sem.Close() })
	locker := locks.Locker()
	if electOnRedlock {
		locker = quorum.Locker()
	}
	elect, err := election.New(locker, "job")
	require.NoError(t, err)
	limiter := rateLimiter(t, clients[3])
	closeAll := func() {
		for _, c := range []interface{ Close() error }{locks, quorum, sem} {
			require.NoError(t, c.Close())
		}
	}
	return []taker{
		{"lock", func(ctx context.Context) error { return taken(locks.Obtain(ctx, "job", time.Minute)) }},
		{"redlock", func(ctx context.Context) error { return taken(quorum.Obtain(ctx, "job", time.Minute)) }},
		{"semaphore", func(ctx context.Context) error { return taken(sem.Acquire(ctx, time.Minute)) }},
		{"election", func(ctx context.Context) error {
			lead, err := elect.Campaign(ctx)
			if err == nil {
				_ = lead.Resign(context.Background())
				return errors.New("took it")
			}
			return err
		}},
		{"ratelimit", func(ctx context.Context) error {
			if err := limiter.Wait(ctx); err != nil {
				return err
			}
			return errors.New("took it")
		}},
	}, closeAll
}

// rateLimiter returns the rate limiter "job" of the takers: one token a minute, with the prefix "rate:".
func rateLimiter(t *testing.T, rdb redis.UniversalClient) *ratelimit.Limiter {
	l, err := ratelimit.New(rdb, "job", ratelimit.Every(time.Minute, 1), ratelimit.WithPrefix("rate:"))
	require.NoError(t, err)
	return l
}

// taken releases what a take got, and returns its error.
func taken[R interface{ Release(context.Context) error }](r R, err error) error {
	if err == nil {
		_ = r.Release(context.Background())
		return errors.New("took it")
	}
	return err
}

// A situation is set up on fresh servers; want are the errors every package's error must match.
type situation struct {
	name  string
	setup func(t *testing.T) (clients []redis.UniversalClient, ctx func() context.Context, want []error)
	// closed: the packages' clients are closed before the take.
	closed bool
	// quorum: only Redlock, and the election on Redlock, can be in the situation.
	quorum bool
}

var (
	table   = map[string]map[string]string{} // situation → package → error text
	tableMu sync.Mutex
)

func TestOneErrorShapeInEveryPackage(t *testing.T) {
	cause := errors.New("shutting down")
	situations := []situation{
		{name: "ctx cancelled with a cause", setup: func(t *testing.T) ([]redis.UniversalClient, func() context.Context, []error) {
			return servers(t, 4), func() context.Context {
				ctx, cancel := context.WithCancelCause(context.Background())
				cancel(cause)
				return ctx
			}, []error{context.Canceled, cause}
		}},
		{name: "deadline while waiting", setup: func(t *testing.T) ([]redis.UniversalClient, func() context.Context, []error) {
			clients := servers(t, 4)
			holdJob(t, clients)
			return clients, timeout(t, 100*time.Millisecond), []error{context.DeadlineExceeded}
		}},
		{name: "after Close", setup: func(t *testing.T) ([]redis.UniversalClient, func() context.Context, []error) {
			return servers(t, 4), context.Background, []error{keyward.ErrClosed}
		}, closed: true},
		{name: "no permission (keys outside the user's)", setup: func(t *testing.T) ([]redis.UniversalClient, func() context.Context, []error) {
			srvs := redistest.StartN(t, 4)
			clients := make([]redis.UniversalClient, len(srvs))
			for i, s := range srvs {
				clients[i] = s.DocumentedUser(t, acl.Election) // "job" is not under the rule's prefix
			}
			return clients, context.Background, []error{keyward.ErrNoPermission}
		}},
		{name: "quorum lost (2 of 3 nodes down; election on Redlock)", setup: func(t *testing.T) ([]redis.UniversalClient, func() context.Context, []error) {
			srvs := redistest.StartN(t, 4)
			clients := make([]redis.UniversalClient, len(srvs))
			for i, s := range srvs {
				clients[i] = s.Client(t)
			}
			srvs[1].Kill(t)
			srvs[2].Kill(t)
			return clients, timeout(t, time.Second), []error{keyward.ErrQuorum}
		}, quorum: true},
	}
	for _, s := range situations {
		t.Run(s.name, func(t *testing.T) {
			clients, ctx, want := s.setup(t)
			ts, closeAll := takers(t, clients, s.quorum)
			if s.closed {
				closeAll()
			}
			for _, tk := range ts {
				if s.quorum && (tk.pkg == "lock" || tk.pkg == "semaphore" || tk.pkg == "ratelimit") {
					record(s.name, tk.pkg, "n/a: one server")
					continue
				}
				if s.closed && tk.pkg == "ratelimit" {
					record(s.name, tk.pkg, "n/a: a Limiter holds no connection, and has no Close")
					continue
				}
				t.Run(tk.pkg, func(t *testing.T) {
					err := tk.take(ctx())
					record(s.name, tk.pkg, fmt.Sprint(err))
					require.Error(t, err)
					for _, w := range want {
						assert.ErrorIs(t, err, w)
					}
					assert.Contains(t, err.Error(), `"job"`, "the error names the key")
					assert.NotErrorIs(t, err, keyward.ErrInvalid)
					if s.name != "deadline while waiting" {
						assert.NotErrorIs(t, err, keyward.ErrNotObtained)
					}
				})
			}
		})
	}
	printTable(t, situations)
}

// timeout returns a function that returns a new context ending after d.
func timeout(t *testing.T, d time.Duration) func() context.Context {
	return func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		t.Cleanup(cancel)
		return ctx
	}
}

// servers starts n servers and returns a client for each, with go-redis's default options.
func servers(t *testing.T, n int) []redis.UniversalClient {
	t.Helper()
	var clients []redis.UniversalClient
	for _, s := range redistest.StartN(t, n) {
		clients = append(clients, s.Client(t))
	}
	return clients
}

// holdJob takes "job" as another process would, in every package's sense: the lock on each of the first three
// servers (lock's, election's and Redlock's), the semaphore's only permit and the rate limiter's token of the
// minute on the fourth.
func holdJob(t *testing.T, clients []redis.UniversalClient) {
	t.Helper()
	ctx := context.Background()
	for _, c := range clients[:3] {
		l, err := lock.New(c)
		require.NoError(t, err)
		t.Cleanup(func() { _ = l.Close() })
		_, err = l.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
	}
	sem, err := semaphore.New(clients[3], "job", 1)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sem.Close() })
	_, err = sem.TryAcquire(ctx, time.Minute)
	require.NoError(t, err)
	res, err := rateLimiter(t, clients[3]).Allow(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, res.Allowed)
}

func record(situation, pkg, text string) {
	tableMu.Lock()
	defer tableMu.Unlock()
	if table[situation] == nil {
		table[situation] = map[string]string{}
	}
	table[situation][pkg] = text
}

func printTable(t *testing.T, situations []situation) {
	tableMu.Lock()
	defer tableMu.Unlock()
	pkgs := []string{"lock", "redlock", "semaphore", "election", "ratelimit"}
	var b strings.Builder
	b.WriteString("\n| situation | " + strings.Join(pkgs, " | ") + " |\n|---|" + strings.Repeat("---|", len(pkgs)) + "\n")
	for _, s := range situations {
		row := []string{s.name}
		for _, p := range pkgs {
			row = append(row, "`"+table[s.name][p]+"`")
		}
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	t.Log(b.String())
}
