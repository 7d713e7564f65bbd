package cli

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/ratelimit"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		rate  string
		burst int
		want  ratelimit.Limit
	}{
		{"10/s", 0, ratelimit.PerSecond(10)},
		{"100/m", 0, ratelimit.PerMinute(100)},
		{"5/h", 2, ratelimit.PerHour(5).WithBurst(2)},
		{"3/1m30s", 0, ratelimit.Limit{Rate: 3, Period: 90 * time.Second, Burst: 3}},
		{"1/500ms", 20, ratelimit.Every(500*time.Millisecond, 20)},
	} {
		l, err := parseRate(tc.rate, tc.burst)
		require.NoError(t, err, tc.rate)
		assert.Equal(t, tc.want, l, tc.rate)
	}
	for _, bad := range []struct {
		rate  string
		burst int
	}{{"", 0}, {"10", 0}, {"0/s", 0}, {"-1/s", 0}, {"x/s", 0}, {"10/", 0}, {"10/d", 0}, {"10/-1s", 0}, {"10/0s", 0},
		{"10/s", -1}, {"2000000/s", 0}} {
		_, err := parseRate(bad.rate, bad.burst)
		var usage *usageError
		assert.ErrorAs(t, err, &usage, "%q burst %d", bad.rate, bad.burst)
	}
}

// Main in this process: COMMAND runs through the guard, which is this test binary (TestMain).
func TestLimitInProcess(t *testing.T) {
	s := redistest.Start(t)
	ctx := context.Background()
	main := func(args ...string) (int, string) {
		var stdout, stderr bytes.Buffer
		env := Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string {
			if k == "REDIS_URL" {
				return "redis://" + s.Addr()
			}
			return ""
		}}
		return Main(ctx, args, env), stdout.String() + stderr.String()
	}

	// Two turns a minute, bursts of 2: two run at once, the third has no turn free now.
	for i := range 2 {
		code, out := main("limit", "--rate", "2/m", "--no-wait", "alerts", "--", "sh", "-c", `echo "$KEYWARD_KEY"; exit 3`)
		assert.Equal(t, 3, code, "run %d passes COMMAND's status: %s", i, out)
		assert.Equal(t, "alerts\n", out)
	}
	code, out := main("limit", "--rate", "2/m", "-n", "-v", "alerts", "--", "true")
	assert.Equal(t, ExitNotObtained, code, out)
	assert.Contains(t, out, `no turn of "alerts" free now`)
	code, _ = main("limit", "--rate", "2/m", "-n", "-E", "1", "alerts", "--", "true")
	assert.Equal(t, 1, code)

	// The next turn is 30 s away: --wait 5s cannot have it, and exits at once.
	start := time.Now()
	code, out = main("limit", "--rate", "2/m", "--wait", "5s", "alerts", "--", "true")
	assert.Equal(t, ExitNotObtained, code, out)
	assert.Less(t, time.Since(start), 5*time.Second, "a turn past --wait is not waited for")

	// Another process holds the next second's turn: keyward waits for the one after it, never less.
	lim, err := ratelimit.New(s.Client(t), "jobs", ratelimit.PerSecond(1))
	require.NoError(t, err)
	res, err := lim.Allow(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, res.Allowed)
	taken := time.Now()
	code, out = main("limit", "--rate", "1/s", "-v", "jobs", "--", "true")
	assert.Equal(t, ExitOK, code, out)
	assert.Contains(t, out, `keyward limit: a turn of "jobs" after`)
	assert.GreaterOrEqual(t, time.Since(taken), time.Second, "it waited for its turn")

	// Bad input.
	for _, args := range [][]string{
		{"limit", "alerts", "--", "true"},
		{"limit", "--rate", "fast", "alerts", "--", "true"},
		{"limit", "--rate", "1/s"},
		{"limit", "--rate", "1/s", "alerts"},
		{"limit", "--rate", "1/s", "--no-wait", "--wait", "1s", "alerts", "--", "true"},
	} {
		code, out := main(args...)
		assert.Equal(t, ExitUsage, code, "%v: %s", args, out)
	}
	code, _ = main("limit", "--rate", "1/s", "other", "--", "no-such-command-here")
	assert.Equal(t, ExitNotFound, code)
}
