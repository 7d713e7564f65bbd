package keyward_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward"
)

func TestLogObserverLevelsAndAttributes(t *testing.T) {
	var buf bytes.Buffer
	o := keyward.LogObserver(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx := context.Background()
	o.Observe(ctx, keyward.Event{Kind: keyward.Obtained, Source: "lock", Key: "k", Fence: 7, Wait: 3 * time.Millisecond})
	o.Observe(ctx, keyward.Event{Kind: keyward.Lost, Source: "redlock", Key: "k", Err: keyward.ErrLost})
	o.Observe(ctx, keyward.Event{Kind: keyward.Reconnected, Source: "keyspace", Err: errors.New("EOF")})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines:\n%s", len(lines), buf.String())
	}
	for i, want := range []string{
		`level=DEBUG msg="keyward: obtained" source=lock key=k fence=7 wait=3ms`,
		`level=WARN msg="keyward: lost" source=redlock key=k err="keyward: lock lost"`,
		`level=INFO msg="keyward: reconnected" source=keyspace err=EOF`,
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d = %q, want it to contain %q", i, lines[i], want)
		}
	}
}

func TestLogObserverSkipsDisabledLevels(t *testing.T) {
	var buf bytes.Buffer
	o := keyward.LogObserver(slog.New(slog.NewTextHandler(&buf, nil))) // Info and above
	o.Observe(context.Background(), keyward.Event{Kind: keyward.WaitStarted, Source: "lock", Key: "k"})
	o.Observe(context.Background(), keyward.Event{Kind: keyward.Released, Source: "lock", Key: "k", Err: errors.New("timeout")})
	if got := buf.String(); strings.Contains(got, "wait started") || !strings.Contains(got, "level=WARN") {
		t.Fatalf("got %q: want only the failed release, at Warn", got)
	}
	if keyward.LogObserver(nil) != nil {
		t.Fatal("LogObserver(nil) is not nil")
	}
}

func TestEventKindNames(t *testing.T) {
	for k := keyward.Obtained; k <= keyward.Error; k++ {
		if s := k.String(); s == "unknown" || s == "" {
			t.Errorf("kind %d has no name", k)
		}
	}
	if s := keyward.EventKind(0).String(); s != "unknown" {
		t.Errorf("kind 0 = %q", s)
	}
}

func TestNodeErrorNamesTheNodeAndUnwraps(t *testing.T) {
	err := error(&keyward.NodeError{Node: 2, Addr: "127.0.0.1:7002", Err: keyward.ErrNoPermission})
	if !errors.Is(err, keyward.ErrNoPermission) || err.Error() != "node 2 (127.0.0.1:7002): keyward: no permission" {
		t.Fatalf("got %q", err)
	}
	var ne *keyward.NodeError
	if !errors.As(err, &ne) || ne.Node != 2 {
		t.Fatal("errors.As did not find the NodeError")
	}
	if got := (&keyward.NodeError{Node: 0, Err: errors.New("x")}).Error(); got != "node 0: x" {
		t.Fatalf("got %q", got)
	}
}
