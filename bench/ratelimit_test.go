package main

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/benchstat"
	"github.com/keyward/keyward/internal/redistest"
)

// A short run of the rate-limit scenario in this process (4 goroutines, 600 ms), for each contender: the loop, the
// server's counts and the figures of the report. The real runs (make bench) are 4 processes × 8 goroutines × 10 s.
func TestRateLimitScenarioSmoke(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	clock, err := benchstat.NewClock()
	require.NoError(t, err)
	var runs []rateRun
	for _, c := range rateContenders {
		t.Run(c.Name, func(t *testing.T) {
			admin := srv.Client(t)
			require.NoError(t, admin.FlushAll(ctx).Err())
			admit, err := c.Open(goredisClient(srv.Addr()), "bench:rate")
			require.NoError(t, err)
			_, err = admit(ctx) // loads the script
			require.NoError(t, err)
			require.NoError(t, admin.FlushAll(ctx).Err())
			before, err := benchstat.Snapshot(ctx, admin)
			require.NoError(t, err)
			start := clock.Now()
			d := 600 * time.Millisecond
			adms, err := admitUntil(ctx, clock, admit, 4, 0, start.Add(d))
			require.NoError(t, err)
			after, err := benchstat.Snapshot(ctx, admin)
			require.NoError(t, err)
			run := rateRun{Contender: c, Duration: d, Admissions: adms, Start: start.UnixNano(), End: start.Add(d).UnixNano(),
				Cost: after.Since(before)}
			t.Log(run.progress())
			assert.Greater(t, run.OfBound(), 0.9, "the limit was used")
			assert.LessOrEqual(t, run.Busiest(run.Start), rateBurst+rateLimit)
			if c.Keyward {
				assert.LessOrEqual(t, run.CallsPerAdmission(), 1.05, "one call per admission")
				assert.True(t, run.Granted(), "keyward's admissions carry the server's times")
				assert.Equal(t, "0", run.ExcessGranted())
				for _, a := range adms {
					assert.GreaterOrEqual(t, a.Late, time.Duration(0), "Wait returns after the server's time")
				}
			} else {
				assert.Equal(t, "—", run.ExcessGranted())
			}
			runs = append(runs, run)
		})
	}

	// The report's texts show the runs, with every verb filled in.
	rep := report{RateLimit: runs, Config: config{rateLimit: 600 * time.Millisecond, rateLimitRuns: 1}}
	for name, text := range map[string]string{"tables": rep.Tables(), "BENCHMARKS.md": rep.benchmarks(), "README": rep.readme()} {
		assert.NotContains(t, text, "%!", name)
		assert.Contains(t, text, "| **keyward ratelimit** |", name)
		assert.Contains(t, text, "| redis_rate |", name)
	}
}
