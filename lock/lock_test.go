package lock_test

import (
	"context"
	"errors"
	"math"
	"os"
	"runtime"
	"strconv"
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
	"github.com/keyward/keyward/lock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// inBubble runs test inside a testing/synctest bubble with a miniredis whose keys expire on the bubble's clock,
// and a Client with opts.
func inBubble(t *testing.T, test func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client), opts ...lock.Option) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		defer m.Close()
		rdb := redistest.SynctestClient(m)
		defer rdb.Close()
		locks, err := lock.New(rdb, opts...)
		require.NoError(t, err)
		test(t, m, locks)
	})
}

func newClient(t *testing.T, rdb redis.UniversalClient, opts ...lock.Option) *lock.Client {
	locks, err := lock.New(rdb, opts...)
	require.NoError(t, err)
	return locks
}

func TestObtainAndRelease(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		locks := newClient(t, rdb, lock.WithPrefix("locks:"))

		before := time.Now()
		l, err := locks.TryObtain(ctx, "report", 10*time.Second)
		after := time.Now()
		require.NoError(t, err)
		assert.Equal(t, "report", l.Key())
		assert.Equal(t, l.Value(), rdb.Get(ctx, "locks:report").Val(), "the prefixed key holds the token")
		assert.Contains(t, l.Value(), "pid="+strconv.Itoa(os.Getpid()), "the token carries the holder's pid")
		assert.Positive(t, l.Fence())
		// Valid for the ttl less the default drift (1 % + 2 ms), from a moment during the call.
		validity := 10*time.Second - 102*time.Millisecond
		assert.False(t, l.Until().Before(before.Add(validity)), "valid from no earlier than the call")
		assert.False(t, l.Until().After(after.Add(validity)), "valid from no later than the call")

		_, err = locks.TryObtain(ctx, "report", 10*time.Second)
		require.ErrorIs(t, err, lock.ErrNotObtained)
		assert.Contains(t, err.Error(), `"report"`)

		ttl, err := l.TTL(ctx)
		require.NoError(t, err)
		assert.InDelta(t, 10*time.Second, ttl, float64(time.Second))

		require.NoError(t, l.Refresh(ctx, time.Minute))
		ttl, err = l.TTL(ctx)
		require.NoError(t, err)
		assert.InDelta(t, time.Minute, ttl, float64(time.Second))

		require.NoError(t, l.Release(ctx))
		assert.Zero(t, rdb.Exists(ctx, "locks:report").Val())
		assert.NoError(t, l.Err(), "a clean release is not a loss")
		select {
		case <-l.Lost():
			t.Fatal("Release closed Lost")
		default:
		}

		next, err := locks.TryObtain(ctx, "report", time.Second)
		require.NoError(t, err)
		assert.Greater(t, next.Fence(), l.Fence(), "the next holder's fence is larger")
		require.NoError(t, next.Release(ctx))
	})
}

func TestSecondReleaseNeedsNoRoundTrip(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	ctx := context.Background()
	l, err := newClient(t, rdb).TryObtain(ctx, "k", time.Second)
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx))
	require.NoError(t, rdb.Close())
	assert.NoError(t, l.Release(ctx), "already released: nil, and no command is sent on the closed client")
}

func TestReleaseAfterExpiryLeavesTheNextHolderAlone(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client) {
		ctx := context.Background()
		first, err := locks.TryObtain(ctx, "job", time.Second)
		require.NoError(t, err)

		time.Sleep(time.Second + time.Millisecond)
		<-first.Lost() // closed at the validity deadline, without auto-refresh
		require.ErrorIs(t, first.Err(), lock.ErrLost)

		second, err := locks.TryObtain(ctx, "job", time.Second)
		require.NoError(t, err, "the expired key is free")

		require.ErrorIs(t, first.Refresh(ctx, time.Second), lock.ErrLost)
		_, err = first.TTL(ctx)
		require.ErrorIs(t, err, lock.ErrLost)

		err = first.Release(ctx)
		require.ErrorIs(t, err, lock.ErrNotHeld)
		require.ErrorIs(t, err, lock.ErrLost)
		got, _ := m.Get("job")
		assert.Equal(t, second.Value(), got, "the late release did not delete the new holder's key")
		require.NoError(t, second.Release(ctx))
	})
}

func TestLostIsClosedAtTheDeadlineNotBefore(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, locks *lock.Client) {
		start := time.Now()
		l, err := locks.TryObtain(context.Background(), "job", time.Second)
		require.NoError(t, err)
		<-l.Lost()
		// Default drift: 1 % of 1 s + 2 ms.
		assert.Equal(t, time.Second-12*time.Millisecond, time.Since(start))
		assert.Equal(t, start.Add(time.Second-12*time.Millisecond), l.Until())
	})
}

func TestAutoRefreshKeepsTheLockForManyTTLs(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client) {
		ctx := context.Background()
		l, err := locks.TryObtain(ctx, "job", time.Second, lock.WithAutoRefresh())
		require.NoError(t, err)

		time.Sleep(10 * time.Second)
		select {
		case <-l.Lost():
			t.Fatalf("lost after 10 ttls: %v", l.Err())
		default:
		}
		ttl, err := l.TTL(ctx)
		require.NoError(t, err)
		assert.Greater(t, ttl, time.Second/2)
		_, err = locks.TryObtain(ctx, "job", time.Second)
		require.ErrorIs(t, err, lock.ErrNotObtained)
		require.NoError(t, l.Release(ctx))
		assert.False(t, m.Exists("job"))
	})
}

func TestAutoRefreshReportsLoss(t *testing.T) {
	tests := []struct {
		name  string
		steal func(m *miniredis.Miniredis)
	}{
		{"key deleted", func(m *miniredis.Miniredis) { m.Del("job") }},
		{"key taken by another", func(m *miniredis.Miniredis) { m.Set("job", "someone else") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client) {
				ctx := context.Background()
				l, err := locks.TryObtain(ctx, "job", 3*time.Second, lock.WithAutoRefresh())
				require.NoError(t, err)
				tt.steal(m)
				start := time.Now()
				<-l.Lost()
				assert.Equal(t, time.Second, time.Since(start), "noticed at the next refresh, a third of the ttl")
				require.ErrorIs(t, l.Err(), lock.ErrLost)
				require.ErrorIs(t, l.Release(ctx), lock.ErrLost)
				if tt.name == "key taken by another" {
					got, _ := m.Get("job")
					assert.Equal(t, "someone else", got)
				}
			})
		})
	}
}

func TestAutoRefreshRetriesUntilTheDeadline(t *testing.T) {
	t.Run("the server recovers in time", func(t *testing.T) {
		inBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client) {
			l, err := locks.TryObtain(context.Background(), "job", 3*time.Second, lock.WithAutoRefresh())
			require.NoError(t, err)
			m.SetError("LOADING Redis is loading the dataset in memory")
			time.Sleep(2 * time.Second) // the refresh at 1 s and its retries fail
			m.SetError("")
			time.Sleep(2 * time.Second) // a retry before the deadline (2.968 s) succeeds
			select {
			case <-l.Lost():
				t.Fatalf("lost: %v", l.Err())
			default:
			}
			require.NoError(t, l.Release(context.Background()))
		})
	})
	t.Run("the server does not", func(t *testing.T) {
		inBubble(t, func(t *testing.T, m *miniredis.Miniredis, locks *lock.Client) {
			start := time.Now()
			l, err := locks.TryObtain(context.Background(), "job", 3*time.Second, lock.WithAutoRefresh())
			require.NoError(t, err)
			m.SetError("LOADING Redis is loading the dataset in memory")
			<-l.Lost()
			assert.Equal(t, l.Until(), start.Add(3*time.Second-32*time.Millisecond))
			assert.Equal(t, l.Until(), time.Now(), "lost exactly at the validity deadline")
			require.ErrorIs(t, l.Err(), lock.ErrLost)
			m.SetError("")
			require.ErrorIs(t, l.Release(context.Background()), lock.ErrLost)
		})
	})
}

func TestGuard(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		ctx := context.Background()
		locks := newClient(t, rdb)
		l, err := locks.TryObtain(ctx, "{counter}:lock", 10*time.Second)
		require.NoError(t, err)

		require.NoError(t, l.Guard(ctx, func(p redis.Pipeliner) error {
			p.IncrBy(ctx, "{counter}:value", 5)
			return nil
		}))
		assert.Equal(t, "5", rdb.Get(ctx, "{counter}:value").Val())

		// The holder stalls; its key expires and another replica takes the lock.
		require.NoError(t, rdb.Del(ctx, "{counter}:lock").Err())
		other, err := locks.TryObtain(ctx, "{counter}:lock", 10*time.Second)
		require.NoError(t, err)

		err = l.Guard(ctx, func(p redis.Pipeliner) error {
			p.IncrBy(ctx, "{counter}:value", 100)
			return nil
		})
		require.ErrorIs(t, err, lock.ErrLost, "the late write is refused")
		assert.Equal(t, "5", rdb.Get(ctx, "{counter}:value").Val(), "and did not happen")
		<-l.Lost()
		require.NoError(t, other.Release(ctx))
	})
}

func TestGuardRetriesWhenItsOwnRefreshTouchedTheKey(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	ctx := context.Background()
	l, err := newClient(t, rdb).TryObtain(ctx, "job", 10*time.Second)
	require.NoError(t, err)
	calls := 0
	require.NoError(t, l.Guard(ctx, func(p redis.Pipeliner) error {
		calls++
		if calls == 1 {
			// Between WATCH and EXEC the holder refreshes its own lock, which touches the key.
			require.NoError(t, l.Refresh(ctx, 20*time.Second))
		}
		p.Set(ctx, "out", calls, 0)
		return nil
	}))
	assert.Equal(t, 2, calls)
	assert.Equal(t, "2", rdb.Get(ctx, "out").Val())
}

func TestBadInput(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	ctx := context.Background()
	locks := newClient(t, rdb)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()

	for name, c := range map[string]redis.UniversalClient{
		"nil client":               nil,
		"nil *redis.Client":        (*redis.Client)(nil),
		"nil *redis.ClusterClient": (*redis.ClusterClient)(nil),
		"nil *redis.Ring":          (*redis.Ring)(nil),
	} {
		c, err := lock.New(c)
		assert.ErrorIs(t, err, lock.ErrInvalid, name)
		assert.Nil(t, c, name)
	}
	_, err := lock.New(rdb, lock.WithDrift(-1, 0))
	assert.ErrorIs(t, err, lock.ErrInvalid, "negative drift")
	_, err = lock.New(rdb, lock.WithDrift(1, 0))
	assert.ErrorIs(t, err, lock.ErrInvalid, "drift factor of one")

	tests := []struct {
		name string
		ctx  context.Context
		key  string
		ttl  time.Duration
		want error
	}{
		{"empty key", ctx, "", time.Second, lock.ErrInvalid},
		{"zero ttl", ctx, "k", 0, lock.ErrInvalid},
		{"negative ttl", ctx, "k", -time.Second, lock.ErrInvalid},
		{"ttl within the drift margin", ctx, "k", 2 * time.Millisecond, lock.ErrInvalid},
		{"ttl above MaxTTL", ctx, "k", lock.MaxTTL + time.Millisecond, lock.ErrInvalid},
		{"ttl whose doubling overflows", ctx, "k", math.MaxInt64, lock.ErrInvalid},
		{"cancelled context", cancelled, "k", time.Second, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := locks.TryObtain(tt.ctx, tt.key, tt.ttl)
			assert.ErrorIs(t, err, tt.want)
			assert.Nil(t, l)
			l, err = locks.Obtain(tt.ctx, tt.key, tt.ttl)
			assert.ErrorIs(t, err, tt.want)
			assert.Nil(t, l)
		})
	}
	assert.Zero(t, rdb.DBSize(ctx).Val(), "no bad input reached the server")
	_, err = lock.New(rdb, lock.WithClaimWindow(lock.MaxTTL+time.Millisecond))
	assert.ErrorIs(t, err, lock.ErrInvalid, "claim window above MaxTTL")

	l, err := locks.TryObtain(ctx, "k", time.Second)
	require.NoError(t, err)
	assert.ErrorIs(t, l.Refresh(ctx, 0), lock.ErrInvalid, "PEXPIRE 0 would delete the key")
	assert.ErrorIs(t, l.Refresh(ctx, -time.Second), lock.ErrInvalid)
	assert.ErrorIs(t, l.Refresh(ctx, lock.MaxTTL+time.Millisecond), lock.ErrInvalid)
	assert.ErrorIs(t, l.Refresh(ctx, math.MaxInt64), lock.ErrInvalid)
	assert.Equal(t, int64(1), rdb.Exists(ctx, "k").Val())

	require.NoError(t, rdb.LPush(ctx, "a-list", "x").Err())
	_, err = locks.TryObtain(ctx, "a-list", time.Second)
	assert.ErrorIs(t, err, lock.ErrWrongType)
	assert.Contains(t, err.Error(), "WRONGTYPE")
}

// An acquire whose reply was lost may have taken the lock: TryObtain releases it and reports the error. Both ways
// of acquiring: a Client's first try runs the acquire script, later ones the pipeline without a script.
func TestAmbiguousAcquireIsCleanedUp(t *testing.T) {
	redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
		t.Run("script", func(t *testing.T) { ambiguousAcquire(t, rdb, "evalsha", false) })
		t.Run("pipeline", func(t *testing.T) { ambiguousAcquire(t, rdb, "set", true) })
	})
}

func ambiguousAcquire(t *testing.T, rdb *redis.Client, lose string, warm bool) {
	ctx := context.Background()
	hook := &redistest.LostReply{Name: lose}
	require.NoError(t, rdb.ScriptLoad(ctx, "return 1").Err()) // warm the connection
	locks := newClient(t, rdb)
	if warm {
		l, err := locks.TryObtain(ctx, "warm", time.Second) // the acquire script ran once
		require.NoError(t, err)
		require.NoError(t, l.Release(ctx))
	}
	rdb.AddHook(hook) // it stays on rdb, spent, once it lost a reply

	l, err := locks.TryObtain(ctx, "upload", 10*time.Second)
	require.Error(t, err)
	assert.Nil(t, l)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "the timeout is reported, not success")
	assert.NotErrorIs(t, err, lock.ErrNotObtained)
	assert.True(t, hook.Done())
	assert.Zero(t, rdb.Exists(ctx, "upload").Val(), "the key the server did set was released")
}

// TestMutualExclusion: goroutines take turns at one lock, each section a read-modify-write of a shared count with
// yields between the read and the write, so that two holders at once show as an "inside" count above one and as
// lost updates (the count ends below the number of sections).
func TestMutualExclusion(t *testing.T) {
	t.Run("contending tries", func(t *testing.T) {
		redistest.ForEachServer(t, func(t *testing.T, rdb *redis.Client) {
			ctx := withTimeout(t, 30*time.Second)
			var inside, shared, sections atomic.Int64
			var wg sync.WaitGroup
			for range 4 { // 4 "processes" of 2 goroutines
				locks := newClient(t, rdb)
				for range 2 {
					wg.Go(func() {
						for range 50 {
							l, err := locks.TryObtain(ctx, "shared", 5*time.Second)
							if errors.Is(err, lock.ErrNotObtained) {
								continue
							}
							if !assert.NoError(t, err) {
								return
							}
							criticalSection(t, &inside, &shared, func() { runtime.Gosched() })
							sections.Add(1)
							assert.NoError(t, l.Release(ctx))
						}
					})
				}
			}
			wg.Wait()
			assert.Positive(t, sections.Load())
			assert.Equal(t, sections.Load(), shared.Load(), "no update was lost")
		})
	})
	// A holder that overruns its ttl releases late, in the middle of the next holder's section: the release must
	// find the lock gone and leave it alone (were the token ignored, it would free the lock under its holder's feet
	// and let a third in). Every other lock is released in time, so only these late releases show a release that
	// ignores the token.
	t.Run("late releases", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			m := miniredis.NewMiniRedis()
			defer m.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour) // on the bubble's clock
			defer cancel()
			const ttl = 100 * time.Millisecond
			var inside, shared, sections atomic.Int64
			section := func(l *lock.Lock) {
				criticalSection(t, &inside, &shared, func() {
					runtime.Gosched()
					time.Sleep(ttl / 2)
				})
				sections.Add(1)
				assert.NoError(t, l.Release(ctx))
			}
			clients := make([]*lock.Client, 3) // 3 "processes"
			for i := range clients {
				rdb := redistest.SynctestClient(m)
				defer rdb.Close()
				clients[i] = newClient(t, rdb)
				defer clients[i].Close()
			}

			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() { // the late one: every other lock it gets, it holds past its ttl
				defer close(stop)
				for i := range 10 {
					l, err := clients[0].Obtain(ctx, "shared", ttl)
					if !assert.NoError(t, err) {
						return
					}
					if i%2 == 0 {
						section(l)
						continue
					}
					select {
					case <-l.Lost():
					case <-time.After(ttl):
						t.Error("the lock was not lost at its validity deadline")
					}
					// The key expires a moment later and a waiter takes the lock, for a section of ttl/2.
					time.Sleep(ttl / 4)
					if !assert.Equal(t, int64(1), inside.Load(), "the next holder is in its section") {
						return
					}
					assert.ErrorIs(t, l.Release(ctx), lock.ErrNotHeld, "the late release found the lock gone")
				}
			})
			for _, locks := range []*lock.Client{clients[0], clients[1], clients[1], clients[2], clients[2]} {
				wg.Go(func() { // the others, until the late one is done
					for {
						select {
						case <-stop:
							return
						default:
						}
						l, err := locks.Obtain(ctx, "shared", ttl)
						if !assert.NoError(t, err) {
							return
						}
						section(l)
					}
				})
			}
			wg.Wait()
			assert.Greater(t, sections.Load(), int64(5), "the others had sections too")
			assert.Equal(t, sections.Load(), shared.Load(), "no update was lost")
		})
	})
}

// criticalSection increments shared by reading it, calling work and writing it back; inside counts the goroutines
// in a section, which must never be more than one.
func criticalSection(t *testing.T, inside, shared *atomic.Int64, work func()) {
	t.Helper()
	assert.Equal(t, int64(1), inside.Add(1), "two holders at once")
	v := shared.Load()
	work()
	shared.Store(v + 1)
	inside.Add(-1)
}
