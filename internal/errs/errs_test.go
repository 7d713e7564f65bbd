package errs_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/errs"
)

func TestContextMatchesTheContextErrorAndTheCause(t *testing.T) {
	cause := errors.New("shutting down")
	ctx, cancel := context.WithCancelCause(context.Background())
	if err := errs.Context(ctx, "lock", "obtain", "k"); err != nil {
		t.Fatalf("live ctx: got %v, want nil", err)
	}
	cancel(cause)
	err := errs.Context(ctx, "lock", "obtain", "jobs:nightly")
	for _, target := range []error{context.Canceled, cause} {
		if !errors.Is(err, target) {
			t.Errorf("errors.Is(%v, %v) = false", err, target)
		}
	}
	if want := `lock "jobs:nightly": obtain: context canceled: shutting down`; err.Error() != want {
		t.Errorf("text %q, want %q", err, want)
	}
	if !errs.IsContext(err) {
		t.Error("IsContext = false")
	}
}

func TestContextWithoutACauseHasOneCause(t *testing.T) {
	ctx, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	err := errs.Context(ctx, "semaphore", "refresh", "k")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("errors.Is(%v, DeadlineExceeded) = false", err)
	}
	if got := strings.Count(err.Error(), "deadline exceeded"); got != 1 {
		t.Errorf("text %q repeats the error %d times", err, got)
	}
}

func TestClosedMatchesErrClosed(t *testing.T) {
	err := errs.Closed("redlock", "try obtain", "k")
	if !errors.Is(err, keyward.ErrClosed) || err.Error() != `redlock "k": try obtain: keyward: closed` {
		t.Fatalf("got %v", err)
	}
	if errs.IsContext(err) {
		t.Error("IsContext(Closed) = true")
	}
}

func TestANilContextIsAnInvalidArgument(t *testing.T) {
	var nilCtx context.Context
	for _, err := range []error{errs.Context(nilCtx, "lock", "obtain", "job"), errs.NilContext("lock", "obtain", "job")} {
		if !errors.Is(err, keyward.ErrInvalid) || err.Error() != `lock "job": obtain: keyward: invalid argument: nil ctx` {
			t.Errorf("got %v", err)
		}
		if errs.IsContext(err) {
			t.Errorf("IsContext(%v) = true", err)
		}
	}
}
