package bound

import (
	"context"
	"errors"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/assert"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestHonors(t *testing.T) {
	for _, tc := range []struct {
		name string
		rdb  redis.UniversalClient
		want bool
	}{
		{"client, defaults", redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), false},
		{"client, ContextTimeoutEnabled", redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true}), true},
		{"cluster, defaults", redis.NewClusterClient(&redis.ClusterOptions{}), false},
		{"cluster, ContextTimeoutEnabled", redis.NewClusterClient(&redis.ClusterOptions{ContextTimeoutEnabled: true}), true},
		{"ring, ContextTimeoutEnabled", redis.NewRing(&redis.RingOptions{ContextTimeoutEnabled: true}), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.rdb.Close()
			assert.Equal(t, tc.want, Honors(tc.rdb))
		})
	}
}

// A call that blocks (a command to a server that stopped answering, on a client that ignores ctx and cannot be
// cloned with shorter timeouts) is left behind when ctx ends: Do returns ctx's error then, and the call finishes
// in the background.
func TestDoReturnsWhenCtxEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &Client{} // not a *redis.Client, and does not honour deadlines
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		answer := make(chan struct{})
		finished := make(chan struct{})
		start := time.Now()
		err := Err(c, ctx, func(redis.UniversalClient) error {
			defer close(finished)
			<-answer
			return errors.New("answered late")
		})
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, time.Second, time.Since(start))
		close(answer)
		<-finished
	})
}

// Without a way for ctx to end, or on a client that ends commands at their deadline, the call runs on the caller's
// goroutine.
func TestDoRunsInPlaceWhenNotNeeded(t *testing.T) {
	deadline, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	cancellable, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	for _, tc := range []struct {
		name   string
		c      *Client
		ctx    context.Context
		inline bool
	}{
		{"ctx that never ends", &Client{}, context.Background(), true},
		{"deadline on a client that honors it", &Client{honors: true}, deadline, true},
		{"deadline on a client that does not", &Client{}, deadline, false},
		{"cancellation only, on a client that honors deadlines", &Client{honors: true}, cancellable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, !tc.inline, tc.c.needed(tc.ctx))
		})
	}
}

// newClient returns a client that never dials.
func newClient(honors bool) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:                  "127.0.0.1:1",
		ContextTimeoutEnabled: honors,
		Dialer: func(context.Context, string, string) (net.Conn, error) {
			c, _ := net.Pipe() // a server that never answers
			return c, nil
		},
		DisableIdentity: true,
		MaxRetries:      -1,
		// No background goroutine, and no DNS lookup in the bubble (see redistest.SynctestClient).
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode:         maintnotifications.ModeDisabled,
			EndpointType: maintnotifications.EndpointTypeNone,
		},
	})
}

// A script on a client with go-redis's defaults, to a server that never answers, returns at its ctx's deadline,
// or at its cancellation, with ctx's error.
func TestScripterEndsWithCtx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rdb := newClient(false)
		defer rdb.Close()
		script := redis.NewScript("return 1")

		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := script.Run(ctx, New(rdb).Scripter(), []string{"k"}).Err()
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 100*time.Millisecond, time.Since(start))

		cctx, cancelNow := context.WithCancel(context.Background())
		time.AfterFunc(200*time.Millisecond, cancelNow)
		start = time.Now()
		err = script.Run(cctx, New(rdb).Scripter(), []string{"k"}).Err()
		assert.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, 200*time.Millisecond, time.Since(start))
	})
}
