package lockopt

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

func TestCheck(t *testing.T) {
	s := Defaults()
	open := func() bool { return false }
	shut := func() bool { return true }
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	ttl, err := s.Check(context.Background(), "lock", "obtain", "k", 1500*time.Microsecond+time.Second, open)
	if err != nil || ttl != 1001*time.Millisecond {
		t.Fatalf("Check = %v, %v; want 1.001s in whole milliseconds", ttl, err)
	}
	if _, err := s.Check(context.Background(), "semaphore", "acquire", "s", 0, shut); !errors.Is(err, keyward.ErrInvalid) ||
		!strings.Contains(err.Error(), `semaphore "s"`) {
		t.Errorf("a zero ttl: %v; want ErrInvalid naming the package and key, before the closed check", err)
	}
	if _, err := s.Check(cancelled, "lock", "obtain", "k", time.Second, shut); !errors.Is(err, keyward.ErrClosed) {
		t.Errorf("closed: %v; want ErrClosed before ctx's error", err)
	}
	if _, err := s.Check(cancelled, "redlock", "obtain", "k", time.Second, nil); !errors.Is(err, context.Canceled) ||
		!strings.Contains(err.Error(), `"k"`) {
		t.Errorf("ctx ended: %v; want context.Canceled naming the key", err)
	}
	if _, err := s.Check(context.Background(), "redlock", "obtain", "k", time.Second, nil); err != nil {
		t.Errorf("no closed check: %v", err)
	}
	var nilCtx context.Context
	if _, err := s.Check(nilCtx, "lock", "try obtain", "k", 0, shut); !errors.Is(err, keyward.ErrInvalid) ||
		err.Error() != `lock "k": try obtain: keyward: invalid argument: nil ctx` {
		t.Errorf("nil ctx: %v; want ErrInvalid for the nil ctx, before the ttl and closed checks", err)
	}
}
