package keywardgocron_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitLimit bounds every wait of these tests for an event: far above what the event takes, so that a failure is a
// lost event, not a slow machine.
const waitLimit = 20 * time.Second

// client returns a go-redis client for srv with go-redis' default options (named name, so that a test can find
// its connections on the server), closed when the test ends.
func client(t *testing.T, srv *redistest.Server, name string) *redis.Client {
	t.Helper()
	return redistest.NewClient(t, &redis.Options{Addr: srv.Addr(), ClientName: name})
}

// killConnections closes, on the server, every connection of the clients named name (CLIENT KILL), and returns
// how many it closed.
func killConnections(t *testing.T, admin *redis.Client, name string) int {
	t.Helper()
	ctx := t.Context()
	list, err := admin.ClientList(ctx).Result()
	if err != nil {
		t.Fatalf("CLIENT LIST: %v", err)
	}
	killed := 0
	for line := range strings.Lines(list) {
		fields := map[string]string{}
		for f := range strings.FieldsSeq(line) {
			k, v, _ := strings.Cut(f, "=")
			fields[k] = v
		}
		if fields["name"] != name {
			continue
		}
		n, err := admin.ClientKillByFilter(ctx, "ID", fields["id"]).Result()
		if err != nil {
			t.Fatalf("CLIENT KILL ID %s: %v", fields["id"], err)
		}
		killed += int(n)
	}
	return killed
}

// within returns a context that ends after waitLimit, or with the test.
func within(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// receive returns the next value of ch, failing the test after waitLimit.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("no %s within %v", what, waitLimit)
		panic("unreachable")
	}
}

// events is a keyward.Observer that passes on the events of some kinds; Observe never blocks.
type events struct {
	kinds    []keyward.EventKind
	ch       chan keyward.Event
	overflow atomic.Bool // an event found the buffer full; next fails the test
}

func newEvents(kinds ...keyward.EventKind) *events {
	return &events{kinds: kinds, ch: make(chan keyward.Event, 1024)}
}

func (e *events) Observe(_ context.Context, ev keyward.Event) {
	for _, k := range e.kinds {
		if ev.Kind == k {
			select {
			case e.ch <- ev:
			default:
				e.overflow.Store(true)
			}
			return
		}
	}
}

// next returns the next event, failing the test after waitLimit.
func (e *events) next(t *testing.T) keyward.Event {
	t.Helper()
	if e.overflow.Load() {
		t.Fatal("events: buffer full, events were dropped")
	}
	return receive(t, e.ch, "event")
}

// answered is a go-redis hook that counts the commands that got an answer (no error) while it is on, and tells a
// channel of each.
type answered struct {
	mu sync.Mutex
	on bool
	ch chan struct{}
}

func newAnswered() *answered { return &answered{ch: make(chan struct{}, 1024)} }

// start counts from now on.
func (a *answered) start() {
	a.mu.Lock()
	a.on = true
	a.mu.Unlock()
}

func (a *answered) tell(err error) {
	a.mu.Lock()
	on := a.on
	a.mu.Unlock()
	if on && err == nil {
		select {
		case a.ch <- struct{}{}:
		default:
		}
	}
}

func (a *answered) DialHook(next redis.DialHook) redis.DialHook { return next }

func (a *answered) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		a.tell(err)
		return err
	}
}

func (a *answered) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		a.tell(err)
		return err
	}
}
