package lease

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keyward/keyward"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is a fake lock server for one holder: it answers Refresh and Release as the real scripts would, with
// the key held while held is true, and counts the calls. fail, when set, is returned instead of an answer; a
// refresh's answer arrives after delay.
type server struct {
	mu       sync.Mutex
	held     bool
	fail     error
	delay    time.Duration
	refresh  int
	released int
}

func (s *server) ops() Ops {
	return Ops{
		Refresh: func(ctx context.Context, ttl time.Duration) (bool, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			time.Sleep(s.delay)
			s.refresh++
			if s.fail != nil {
				return false, s.fail
			}
			return s.held, nil
		},
		Release: func(ctx context.Context) (bool, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.fail != nil {
				return false, s.fail
			}
			s.released++
			ok := s.held
			s.held = false
			return ok, nil
		},
	}
}

func (s *server) set(f func(s *server)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *server) counts() (refresh, released int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refresh, s.released
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

const ttl = time.Second

var drift = DefaultDrift.Of(ttl) // 12 ms

func TestLostClosesAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &server{held: true}
		start := time.Now()
		l := New(Config{Start: start, TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()})
		assert.Equal(t, start.Add(ttl-drift), l.Until())

		time.Sleep(ttl - drift - time.Nanosecond)
		synctest.Wait()
		assert.False(t, isClosed(l.Lost()), "lost before the deadline")
		assert.NoError(t, l.Check())
		assert.NoError(t, l.Err())

		time.Sleep(time.Nanosecond)
		synctest.Wait()
		assert.True(t, isClosed(l.Lost()), "not lost at the deadline")
		assert.ErrorIs(t, l.Err(), keyward.ErrLost)
		assert.ErrorIs(t, l.Err(), keyward.ErrLeaseExpired, "the reason: its own deadline")
		assert.NotErrorIs(t, l.Err(), keyward.ErrGone)
		assert.ErrorIs(t, l.Check(), keyward.ErrLost)
		assert.ErrorIs(t, l.Release(t.Context()), keyward.ErrLost)
	})
}

func TestReleaseAfterTheDeadlineIsALoss(t *testing.T) {
	for _, tc := range []struct {
		name string
		keep bool // the server still has the key (within the drift margin)
	}{
		{"key still there", true},
		{"key expired", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := &server{held: tc.keep}
				// The deadline passed before the lease existed, as for a holder that resumes after a pause and
				// calls Release at once: no timer has had its turn, and the clock alone must decide.
				l := New(Config{Start: time.Now().Add(-ttl), TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()})
				err := l.Release(t.Context())
				assert.ErrorIs(t, err, keyward.ErrLost)
				assert.ErrorIs(t, err, keyward.ErrNotHeld)
				assert.True(t, isClosed(l.Lost()), "Lost not closed")
				_, released := srv.counts()
				assert.Equal(t, 1, released, "the key is still given back, if it is there")
				assert.False(t, srv.held)
			})
		})
	}
}

func TestRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &server{held: true}
		l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()})
		require.NoError(t, l.Release(t.Context()))
		require.NoError(t, l.Release(t.Context()), "a second Release")
		_, released := srv.counts()
		assert.Equal(t, 1, released, "a second Release makes no round trip")
		assert.ErrorIs(t, l.Check(), keyward.ErrNotHeld)
		assert.ErrorIs(t, l.Refresh(t.Context(), ttl), keyward.ErrNotHeld)

		time.Sleep(2 * ttl)
		synctest.Wait()
		assert.False(t, isClosed(l.Lost()), "a released lease is not lost")
		assert.NoError(t, l.Err())
	})
}

func TestReleaseOfATakenLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &server{held: false}
		l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()})
		err := l.Release(t.Context())
		assert.ErrorIs(t, err, keyward.ErrNotHeld)
		assert.NotErrorIs(t, err, keyward.ErrLost)
	})
}

func TestReleaseWithUnknownOutcomeKeepsTheLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		netErr := errors.New("i/o timeout")
		srv := &server{held: true, fail: netErr}
		l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()})
		assert.ErrorIs(t, l.Release(t.Context()), netErr)
		assert.NoError(t, l.Check(), "held until its deadline")

		srv.set(func(s *server) { s.fail = nil })
		assert.NoError(t, l.Release(t.Context()), "the retry")
	})
}

func TestRefreshMovesTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &server{held: true}
		l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()})
		time.Sleep(ttl / 2)
		sent := time.Now()
		require.NoError(t, l.Refresh(t.Context(), 2*ttl))
		assert.Equal(t, sent.Add(2*ttl-DefaultDrift.Of(2*ttl)), l.Until())

		time.Sleep(ttl) // past the first deadline
		synctest.Wait()
		assert.False(t, isClosed(l.Lost()))

		assert.ErrorIs(t, l.Refresh(t.Context(), 0), keyward.ErrInvalid)
		assert.ErrorIs(t, l.Refresh(t.Context(), time.Millisecond), keyward.ErrInvalid, "below the drift margin")
		assert.NoError(t, l.Check(), "a refused ttl leaves the lease as it was")
		require.NoError(t, l.Release(t.Context()))
	})
}

// A refresh whose answer is slow moves the deadline from when it was sent: the server may have set the ttl at
// once, and the reply spent the delay on the way back.
func TestALateRefreshCountsFromWhenItWasSent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &server{held: true, delay: ttl / 4}
		l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()})
		time.Sleep(ttl / 2)
		sent := time.Now()
		require.NoError(t, l.Refresh(t.Context(), ttl))
		assert.Equal(t, sent.Add(ttl-drift), l.Until(), "the deadline counts from the request, not from the reply")
		time.Sleep(time.Until(sent.Add(ttl - drift)))
		synctest.Wait()
		assert.True(t, isClosed(l.Lost()), "lost at the deadline counted from the request")
	})
}

func TestRefreshOfATakenLockIsALoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &server{held: true}
		l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()})
		srv.set(func(s *server) { s.held = false })
		assert.ErrorIs(t, l.Refresh(t.Context(), ttl), keyward.ErrLost)
		assert.True(t, isClosed(l.Lost()))
		assert.ErrorIs(t, l.Err(), keyward.ErrGone, "the reason: Redis no longer holds it")
		assert.NotErrorIs(t, l.Err(), keyward.ErrLeaseExpired)
		assert.ErrorIs(t, l.Release(t.Context()), keyward.ErrLost)
	})
}

func TestAFailedRefreshLeavesTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		netErr := errors.New("connection reset")
		srv := &server{held: true, fail: netErr}
		start := time.Now()
		l := New(Config{Start: start, TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()})
		time.Sleep(ttl / 2)
		assert.ErrorIs(t, l.Refresh(t.Context(), ttl), netErr)
		assert.Equal(t, start.Add(ttl-drift), l.Until())
		assert.NoError(t, l.Check())
		srv.set(func(s *server) { s.fail = nil })
		require.NoError(t, l.Release(t.Context()))
	})
}

func TestAutoRefreshKeepsTheLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &server{held: true}
		l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, AutoRefresh: true, Ops: srv.ops()})
		time.Sleep(10 * ttl)
		synctest.Wait()
		assert.False(t, isClosed(l.Lost()))
		assert.NoError(t, l.Check())
		refreshes, _ := srv.counts()
		assert.Equal(t, 30, refreshes, "one refresh per third of the ttl")
		require.NoError(t, l.Release(t.Context()))
	})
}

func TestAutoRefreshRetriesUntilTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		netErr := errors.New("connection refused")
		srv := &server{held: true}
		start := time.Now()
		l := New(Config{Start: start, TTL: ttl, Drift: DefaultDrift, AutoRefresh: true, Ops: srv.ops()})
		srv.set(func(s *server) { s.fail = netErr })

		<-l.Lost()
		assert.Equal(t, start.Add(ttl-drift), time.Now(), "lost at the deadline, not before")
		assert.ErrorIs(t, l.Err(), keyward.ErrLost)
		assert.ErrorIs(t, l.Err(), keyward.ErrLeaseExpired)
		refreshes, _ := srv.counts()
		// First try at ttl/3, then every ttl/10 until the deadline at ttl − 12 ms: 1 + 6 tries.
		assert.Equal(t, 7, refreshes)
		srv.set(func(s *server) { s.fail = nil })
		assert.ErrorIs(t, l.Release(t.Context()), keyward.ErrLost)
	})
}

func TestAutoRefreshRecoversFromAFailure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		netErr := errors.New("LOADING Redis is loading the dataset in memory")
		srv := &server{held: true, fail: netErr}
		l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, AutoRefresh: true, Ops: srv.ops()})
		time.Sleep(ttl/3 + ttl/10 + time.Millisecond) // two failed tries
		srv.set(func(s *server) { s.fail = nil })
		time.Sleep(5 * ttl)
		synctest.Wait()
		assert.NoError(t, l.Check())
		require.NoError(t, l.Release(t.Context()))
	})
}

func TestAutoRefreshReportsATakenLock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &server{held: true}
		start := time.Now()
		l := New(Config{Start: start, TTL: ttl, Drift: DefaultDrift, AutoRefresh: true, Ops: srv.ops()})
		srv.set(func(s *server) { s.held = false })
		<-l.Lost()
		assert.Equal(t, start.Add(ttl/3), time.Now(), "lost at the first refresh")
		assert.ErrorIs(t, l.Err(), keyward.ErrLost)
	})
}

func TestRun(t *testing.T) {
	t.Run("cancels fn's context with the loss", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv := &server{held: true}
			l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()})
			err := Run(t.Context(), l, func(ctx context.Context) error {
				<-ctx.Done()
				assert.ErrorIs(t, context.Cause(ctx), keyward.ErrLost)
				return context.Cause(ctx)
			})
			assert.ErrorIs(t, err, keyward.ErrLost)
		})
	})
	t.Run("releases after a panic", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			srv := &server{held: true}
			l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()})
			assert.PanicsWithValue(t, "boom", func() {
				_ = Run(t.Context(), l, func(ctx context.Context) error { panic("boom") })
			})
			_, released := srv.counts()
			assert.Equal(t, 1, released)
		})
	})
	t.Run("joins fn's error with the release's", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			fnErr := errors.New("fn failed")
			srv := &server{held: true}
			l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()})
			err := Run(t.Context(), l, func(ctx context.Context) error {
				srv.set(func(s *server) { s.held = false }) // taken meanwhile
				return fnErr
			})
			assert.ErrorIs(t, err, fnErr)
			assert.ErrorIs(t, err, keyward.ErrNotHeld)
		})
	})
}

// A refresh whose "not held" answer arrives after a concurrent Release has finished reports the lock not held;
// it must not return nil (which reads as "refreshed").
func TestRefreshRacingARelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &server{held: true}
		sent, answer := make(chan struct{}), make(chan struct{})
		ops := srv.ops()
		release := ops.Release
		ops.Refresh = func(ctx context.Context, ttl time.Duration) (bool, error) {
			close(sent)
			<-answer // the server ran the refresh after the release: not held
			return false, nil
		}
		l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, Ops: Ops{Refresh: ops.Refresh, Release: release}})
		refreshed := make(chan error, 1)
		go func() { refreshed <- l.Refresh(t.Context(), ttl) }()
		<-sent
		require.NoError(t, l.Release(t.Context()))
		close(answer)
		err := <-refreshed
		assert.ErrorIs(t, err, keyward.ErrNotHeld)
		assert.NoError(t, l.Err(), "a clean release is no loss")
	})
}

// A lease lost at its deadline stays reported as lost, with its reason, after the Release that reported the loss:
// Refresh, Check and a second Release say the same as the Release did.
func TestLostStaysLostAfterRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &server{held: true}
		l := New(Config{Start: time.Now().Add(-ttl), TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()})
		released := l.Release(t.Context())
		require.ErrorIs(t, released, keyward.ErrLost)
		for name, err := range map[string]error{
			"Refresh":       l.Refresh(t.Context(), ttl),
			"Check":         l.Check(),
			"Release again": l.Release(t.Context()),
		} {
			assert.ErrorIs(t, err, keyward.ErrLost, name)
			assert.EqualError(t, err, released.Error(), name)
		}
		_, n := srv.counts()
		assert.Equal(t, 1, n, "one round trip")
	})
}

// A release that found the lock gone is reported the same way afterwards, not as a clean release.
func TestNotHeldStaysNotHeldAfterRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := &server{held: false}
		l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()})
		released := l.Release(t.Context())
		require.ErrorIs(t, released, keyward.ErrNotHeld)
		assert.EqualError(t, l.Refresh(t.Context(), ttl), released.Error())
		assert.EqualError(t, l.Release(t.Context()), released.Error())
	})
}

func TestHooksTellRefreshFailuresThenTheLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		netErr := errors.New("connection refused")
		srv := &server{held: true, fail: netErr}
		var mu sync.Mutex
		var heard []string
		var lease atomic.Pointer[Lease]
		l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, AutoRefresh: true, Ops: srv.ops(),
			OnRefreshFailed: func(err error) {
				assert.ErrorIs(t, err, netErr)
				mu.Lock()
				heard = append(heard, "refresh failed")
				mu.Unlock()
			},
			OnLost: func(cause error) {
				assert.ErrorIs(t, cause, keyward.ErrLost)
				l := lease.Load()
				assert.True(t, isClosed(l.Lost()), "told after Lost is closed")
				assert.ErrorIs(t, l.Err(), keyward.ErrLost, "told without the lease's mutex held")
				mu.Lock()
				heard = append(heard, "lost")
				mu.Unlock()
			}})
		lease.Store(l)
		<-l.Lost()
		synctest.Wait()
		srv.set(func(s *server) { s.fail = nil })
		assert.ErrorIs(t, l.Release(t.Context()), keyward.ErrLost)
		mu.Lock()
		defer mu.Unlock()
		require.NotEmpty(t, heard)
		assert.Equal(t, "lost", heard[len(heard)-1], "the loss comes last, once")
		assert.Equal(t, 1, len(heard)-countOf(heard, "refresh failed"))
		assert.GreaterOrEqual(t, countOf(heard, "refresh failed"), 6, "every failed refresh is told")
	})
}

func TestOnLostIsToldOnce(t *testing.T) {
	for name, find := range map[string]func(l *Lease){
		"deadline": func(l *Lease) { <-l.Lost() },
		"refresh":  func(l *Lease) { _ = l.Refresh(context.Background(), ttl) },
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := &server{held: true}
				var told []error
				l := New(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, Ops: srv.ops(),
					OnLost: func(cause error) { told = append(told, cause) }})
				if name == "refresh" {
					srv.set(func(s *server) { s.held = false }) // found taken
				} else {
					time.Sleep(ttl) // past the deadline
				}
				find(l)
				synctest.Wait()
				_ = l.Check()
				_ = l.Refresh(context.Background(), ttl)
				_ = l.Release(context.Background())
				require.Len(t, told, 1)
				assert.ErrorIs(t, told[0], keyward.ErrLost)
			})
		})
	}
}

func countOf(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// recorder records what the hooks what it heard, in order.
type recorder struct {
	mu     sync.Mutex
	events []string
	errs   []error
}

// into sets cfg's hooks to r's.
func (r *recorder) into(cfg Config) Config {
	add := func(kind string) func(error) {
		return func(err error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.events = append(r.events, kind)
			r.errs = append(r.errs, err)
		}
	}
	cfg.OnRefreshFailed, cfg.OnLost = add("refresh failed"), add("lost")
	return cfg
}

func (r *recorder) heard() ([]string, []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...), append([]error(nil), r.errs...)
}

func TestHooksHearEveryWayOfLosing(t *testing.T) {
	for name, lose := range map[string]func(l *Lease, srv *server){
		"deadline": func(l *Lease, _ *server) { time.Sleep(ttl) },
		"refresh finds it taken": func(l *Lease, srv *server) {
			srv.set(func(s *server) { s.held = false })
			_ = l.Refresh(context.Background(), ttl)
		},
		"marked lost": func(l *Lease, _ *server) { l.MarkLost(keyward.ErrLost) },
		"check after the deadline": func(l *Lease, _ *server) {
			l.expiry.Stop() // as if the timer had not had its turn yet
			time.Sleep(ttl)
			_ = l.Check()
		},
		"release after the deadline": func(l *Lease, _ *server) {
			l.expiry.Stop()
			time.Sleep(ttl)
			_ = l.Release(context.Background())
		},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := &server{held: true}
				rec := &recorder{}
				l := New(rec.into(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, Ops: srv.ops()}))
				lose(l, srv)
				synctest.Wait()
				_ = l.Release(context.Background())
				events, errs := rec.heard()
				assert.Equal(t, []string{"lost"}, events)
				assert.ErrorIs(t, errs[0], keyward.ErrLost)
			})
		})
	}
}

func TestNoHooksAfterACleanRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		l := New(rec.into(Config{Start: time.Now(), TTL: ttl, Drift: DefaultDrift, AutoRefresh: true,
			Ops: (&server{held: true}).ops()}))
		require.NoError(t, l.Release(context.Background()))
		time.Sleep(2 * ttl)
		synctest.Wait()
		events, _ := rec.heard()
		assert.Empty(t, events)
	})
}
