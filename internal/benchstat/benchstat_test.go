package benchstat_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keyward/keyward/internal/benchstat"
	"github.com/keyward/keyward/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestJain(t *testing.T) {
	assert.InDelta(t, 1.0, benchstat.Jain([]int64{5, 5, 5, 5}), 1e-9)
	assert.InDelta(t, 0.25, benchstat.Jain([]int64{20, 0, 0, 0}), 1e-9)
	assert.Zero(t, benchstat.Jain(nil))
}

func TestQuantile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3}
	assert.Equal(t, time.Duration(3), benchstat.Quantile(ds, 0.5))
	assert.Equal(t, time.Duration(5), benchstat.Quantile(ds, 0.99))
	assert.Equal(t, []time.Duration{5, 1, 4, 2, 3}, ds, "the input is left as it was")
}

func TestGaps(t *testing.T) {
	at := func(ms int) time.Time { return time.Unix(0, 0).Add(time.Duration(ms) * time.Millisecond) }
	gaps, overlaps, same := benchstat.Gaps([]benchstat.Span{
		{Acquired: at(10), Releasing: at(12), Released: at(13), Holder: 2},
		{Acquired: at(0), Releasing: at(4), Released: at(5), Holder: 1},
		{Acquired: at(7), Releasing: at(8), Released: at(9), Holder: 1},
		{Acquired: at(11), Releasing: at(14), Released: at(15), Holder: 3}, // overlaps the previous one
		{Acquired: at(14), Releasing: at(16), Released: at(17), Holder: 4}, // before 3's Release returned
	})
	assert.Equal(t, []time.Duration{2 * time.Millisecond, time.Millisecond, 0}, gaps)
	assert.Equal(t, 1, overlaps)
	assert.Equal(t, 1, same)
}

func TestSnapshot(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	before, err := benchstat.Snapshot(ctx, rdb)
	require.NoError(t, err)
	require.NoError(t, rdb.Eval(ctx, "redis.call('SET', KEYS[1], '1'); return redis.call('GET', KEYS[1])", []string{"k"}).Err())
	after, err := benchstat.Snapshot(ctx, rdb)
	require.NoError(t, err)
	d := after.Since(before)
	assert.Equal(t, int64(1), d.Scripts())
	assert.Equal(t, int64(1), d.Calls["set"])
	assert.Equal(t, int64(3), d.Commands(), "the script and the two commands it ran")
	assert.GreaterOrEqual(t, d.CPU, time.Duration(0))
	assert.Equal(t, "2.50 RTT", benchstat.RTTs(5*time.Millisecond, 2*time.Millisecond))
}
