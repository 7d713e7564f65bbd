package election

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/redistest"
)

// heldLock is a keyward.Lock that is never reported lost by a timer: what a leader's lock looks like right after
// its process woke from a pause longer than its lease, before any timer had a chance to run.
type heldLock struct {
	keyward.Lock
	fence int64
	until time.Time
}

func (l heldLock) Fence() int64     { return l.fence }
func (l heldLock) Until() time.Time { return l.until }

func TestLeaderContextErrLooksAtTheClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := newLeaderContext(context.Background(), heldLock{fence: 42, until: time.Now().Add(time.Second)})
		assert.NoError(t, ctx.Err())
		assert.Equal(t, int64(42), TermFrom(ctx))

		time.Sleep(time.Second) // past the lease; no timer reports it here
		select {
		case <-ctx.Done():
			t.Fatal("Done closed by something other than Err")
		default:
		}
		assert.ErrorIs(t, ctx.Err(), context.Canceled, "the first check after the deadline reports the loss")
		assert.ErrorIs(t, context.Cause(ctx), keyward.ErrLost)
		<-ctx.Done()

		child, cancel := context.WithCancel(ctx)
		defer cancel()
		assert.Error(t, child.Err(), "contexts derived from it are cancelled too")
		assert.Equal(t, int64(42), TermFrom(child))
	})
}

func TestRecordTermsOnlyGoForward(t *testing.T) {
	_, rdb := redistest.Miniredis(t)
	ctx := context.Background()
	r := newRecord("report")
	require.Equal(t, "{report}:leader", r.key)
	ps := rdb.Subscribe(ctx, r.channel)
	t.Cleanup(func() { _ = ps.Close() })
	_, err := ps.Receive(ctx) // the subscription is confirmed
	require.NoError(t, err)
	message := func() string {
		t.Helper()
		m, err := ps.ReceiveMessage(ctx)
		require.NoError(t, err)
		return m.Payload
	}

	require.NoError(t, r.put(ctx, rdb, 5, "replica a", time.Second))
	assert.Equal(t, "elected 5 1000 replica a", message())
	l, ok, err := r.read(ctx, rdb)
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, Leader{Identity: "replica a", Term: 5, TTL: time.Second}, l)

	assert.ErrorIs(t, r.put(ctx, rdb, 3, "a late leader", time.Second), keyward.ErrLost, "an older term is refused")
	require.NoError(t, r.put(ctx, rdb, 5, "replica a", 2*time.Second), "the same term renews")
	l, _, err = r.read(ctx, rdb)
	require.NoError(t, err)
	assert.Equal(t, Leader{Identity: "replica a", Term: 5, TTL: 2 * time.Second}, l)
	assert.ErrorIs(t, r.put(ctx, rdb, 5, "replica a", 0), keyward.ErrLost, "a lease that ran out is not written")

	require.NoError(t, r.vacate(ctx, rdb, 3), "another term's vacancy changes nothing")
	_, ok, err = r.read(ctx, rdb)
	require.NoError(t, err)
	assert.True(t, ok)
	require.NoError(t, r.vacate(ctx, rdb, 5))
	assert.Equal(t, "vacated 5", message(), "the renewal and the refused writes announced nothing")
	_, ok, err = r.read(ctx, rdb)
	require.NoError(t, err)
	assert.False(t, ok)

	require.NoError(t, r.put(ctx, rdb, 7, "replica b", time.Second))
	assert.Equal(t, "elected 7 1000 replica b", message())
}

// TestRecordNotAnnouncedIsNotWritten: a user that may not publish on the record's channel is refused before the
// record is written or deleted (it used to be written, or deleted, and then the script failed on PUBLISH), with an
// error matching ErrNoPermission.
func TestRecordNotAnnouncedIsNotWritten(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := context.Background()
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", "app", "on", ">secret", "~*", "resetchannels", "+@all").Err())
	user := redistest.NewClient(t, &redis.Options{Addr: srv.Addr(), Username: "app", Password: "secret"})
	r := newRecord("report")

	err := r.put(ctx, user, 5, "replica a", time.Minute)
	require.ErrorIs(t, err, keyward.ErrNoPermission)
	assert.Zero(t, admin.Exists(ctx, r.key).Val(), "nothing was written")

	require.NoError(t, r.put(ctx, admin, 5, "replica a", time.Minute))
	require.NoError(t, r.put(ctx, user, 5, "replica a", 2*time.Minute), "a renewal announces nothing")
	err = r.vacate(ctx, user, 5)
	require.ErrorIs(t, err, keyward.ErrNoPermission)
	assert.Equal(t, "5 replica a", admin.Get(ctx, r.key).Val(), "nothing was deleted")
}

func TestParseChange(t *testing.T) {
	for _, tc := range []struct {
		payload string
		want    change
		ok      bool
	}{
		{"elected 5 1000 replica a", change{elected: true, leader: Leader{Identity: "replica a", Term: 5, TTL: time.Second}}, true},
		{"vacated 5", change{leader: Leader{Term: 5}}, true},
		{"elected 5 1000", change{}, false},
		{"elected 5 1000 ", change{}, false},
		{"elected x 1000 a", change{}, false},
		{"elected 0 1000 a", change{}, false},
		{"vacated", change{}, false},
		{"vacated -1", change{}, false},
		{"r someone 20", change{}, false},
		{"", change{}, false},
	} {
		t.Run(tc.payload, func(t *testing.T) {
			got, ok := parseChange(tc.payload)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
}
