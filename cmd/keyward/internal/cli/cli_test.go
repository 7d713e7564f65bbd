package cli

import (
	"bytes"
	"context"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/lock"
)

func TestMain(m *testing.M) {
	// Main in this process starts COMMAND through a copy of the running binary, the guard: this test binary.
	if len(os.Args) > 1 && os.Args[1] == guardCommand {
		os.Exit(runGuard(os.Args[2:], os.Stderr))
	}
	goleak.VerifyTestMain(m)
}

func TestParseTakesFlagsAmongArguments(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		maxPos int
		pos    []string
		ttl    time.Duration
		quiet  bool
	}{
		{name: "flags first", args: []string{"--ttl", "1m", "job", "--", "ls", "-l"}, maxPos: 1,
			pos: []string{"job", "ls", "-l"}, ttl: time.Minute},
		{name: "flags after the key", args: []string{"job", "--ttl", "2m", "-q", "--", "ls"}, maxPos: 1,
			pos: []string{"job", "ls"}, ttl: 2 * time.Minute, quiet: true},
		{name: "no terminator: COMMAND starts after KEY", args: []string{"-q", "job", "ls", "-l", "--ttl", "3m"},
			maxPos: 1, pos: []string{"job", "ls", "-l", "--ttl", "3m"}, quiet: true},
		{name: "terminator before KEY", args: []string{"--", "-job", "ls"}, maxPos: 1, pos: []string{"-job", "ls"}},
		{name: "any number of keys", args: []string{"a", "-q", "b", "--ttl", "5", "c"}, maxPos: -1,
			pos: []string{"a", "b", "c"}, ttl: 5 * time.Second, quiet: true},
		{name: "second of a bare number", args: []string{"--ttl", "1.5"}, maxPos: -1, ttl: 1500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFlagSet("test")
			var ttl time.Duration
			newDuration(fs, &ttl, "ttl", "")
			quiet := fs.Bool("q", false, "")
			pos, err := parse(fs, tc.args, tc.maxPos)
			require.NoError(t, err)
			assert.Equal(t, tc.pos, pos)
			assert.Equal(t, tc.ttl, ttl)
			assert.Equal(t, tc.quiet, *quiet)
		})
	}
}

func TestParseErrors(t *testing.T) {
	fs := newFlagSet("test")
	var ttl time.Duration
	newDuration(fs, &ttl, "ttl", "")
	_, err := parse(fs, []string{"--help"}, -1)
	assert.ErrorIs(t, err, flag.ErrHelp)
	_, err = parse(fs, []string{"--ttl", "-5s"}, -1)
	assert.ErrorContains(t, err, `invalid value "-5s" for flag --ttl: want a duration`)
	_, err = parse(fs, []string{"--ttl"}, -1)
	assert.ErrorContains(t, err, "flag needs an argument: --ttl")
	_, err = parse(fs, []string{"--nope"}, -1)
	assert.ErrorContains(t, err, "flag provided but not defined: --nope")
}

func TestFormatTTL(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Millisecond:                     "no expiry",
		1234567 * time.Microsecond:            "1.2s",
		987654 * time.Microsecond:             "988ms",
		9*time.Minute + 52*time.Second + 4e8:  "9m52s",
		59*time.Second + 960*time.Millisecond: "1m0s",
	} {
		assert.Equal(t, want, formatTTL(d), "%v", d)
	}
}

func TestVersion(t *testing.T) {
	assert.Equal(t, "v1.2.3", Version("v1.2.3"))
	assert.NotEmpty(t, Version(""))
	var out bytes.Buffer
	code := Main(context.Background(), []string{"--version"}, Env{Stdout: &out, Stderr: &out, Version: "v9"})
	assert.Equal(t, ExitOK, code)
	assert.True(t, strings.HasPrefix(out.String(), "keyward v9 (go"), out.String())
}

// Main in this process, for what needs no signals: status and release against a real server.
func TestStatusAndReleaseInProcess(t *testing.T) {
	s := redistest.Start(t)
	rdb := s.Client(t)
	ctx := context.Background()
	locks, err := lock.New(rdb)
	require.NoError(t, err)
	l, err := locks.TryObtain(ctx, "job", time.Minute)
	require.NoError(t, err)

	main := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		env := Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string {
			if k == "REDIS_URL" {
				return "redis://" + s.Addr()
			}
			return ""
		}}
		return Main(ctx, args, env), stdout.String(), stderr.String()
	}
	code, stdout, stderr := main("status", "job")
	assert.Equal(t, ExitOK, code, stderr)
	assert.Contains(t, stdout, "job  held")

	code, stdout, _ = main("release", "--force", "job")
	assert.Equal(t, ExitOK, code)
	assert.Contains(t, stdout, "job: released")
	assert.ErrorIs(t, l.Release(ctx), lock.ErrNotHeld)

	code, stdout, _ = main("status", "job")
	assert.Equal(t, ExitNotHeld, code)
	assert.Contains(t, stdout, "job  free")
}
