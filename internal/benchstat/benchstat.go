// Package benchstat holds the measurements keyward's benchmarks share: latency quantiles in units of a PING
// round trip measured in the same run, Jain's fairness index, hand-off gaps, and the Redis server's cost per
// operation from INFO commandstats and its CPU time.
package benchstat

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Quantile returns the q-quantile of ds (nearest rank); 0 for none.
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// Jain returns Jain's fairness index of the shares: 1 when all are equal, 1/n when one takes everything.
func Jain(shares []int64) float64 {
	var sum, sumSq float64
	for _, x := range shares {
		sum += float64(x)
		sumSq += float64(x) * float64(x)
	}
	if sumSq == 0 {
		return 0
	}
	return sum * sum / (float64(len(shares)) * sumSq)
}

// PingRTT returns the median of n back-to-back PING round trips.
func PingRTT(ctx context.Context, rdb redis.UniversalClient, n int) (time.Duration, error) {
	rtts := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if err := rdb.Ping(ctx).Err(); err != nil {
			return 0, err
		}
		rtts = append(rtts, time.Since(start))
	}
	return Quantile(rtts, 0.5), nil
}

// Span is one holder's time with the lock, on the local monotonic clock.
type Span struct {
	// Acquired is when Obtain returned; Releasing when Release was called (the critical section is the time
	// between them); Released when Release returned.
	Acquired, Releasing, Released time.Time
	// Holder identifies who held it (a goroutine, a process).
	Holder int
}

// Gaps returns, for consecutive spans in order of acquisition, the hand-off gap: the time from one holder's
// Release returning to the next holder's Obtain returning (zero when the next holder had the lock first: a
// release takes effect on the server before its answer is back). It also counts critical sections that
// overlapped, which is a mutual-exclusion violation, and hand-offs that went back to the same holder.
func Gaps(spans []Span) (gaps []time.Duration, overlaps, sameHolder int) {
	s := slices.Clone(spans)
	slices.SortFunc(s, func(a, b Span) int { return a.Acquired.Compare(b.Acquired) })
	for i := 1; i < len(s); i++ {
		if s[i].Acquired.Before(s[i-1].Releasing) {
			overlaps++
			continue
		}
		if s[i].Holder == s[i-1].Holder {
			sameHolder++
		}
		gaps = append(gaps, max(0, s[i].Acquired.Sub(s[i-1].Released)))
	}
	return gaps, overlaps, sameHolder
}

// ServerCost is a snapshot of a Redis server's counters.
type ServerCost struct {
	// Calls counts commands by name (lower case, as INFO commandstats names them), including the commands
	// that scripts run.
	Calls map[string]int64
	// CPU is the server's user + system CPU time.
	CPU time.Duration
}

// Snapshot reads the server's command counts and CPU time.
func Snapshot(ctx context.Context, rdb redis.UniversalClient) (ServerCost, error) {
	info, err := rdb.Info(ctx, "commandstats", "cpu").Result()
	if err != nil {
		return ServerCost{}, err
	}
	c := ServerCost{Calls: map[string]int64{}}
	for _, line := range strings.Split(info, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "cmdstat_"):
			name, rest, _ := strings.Cut(strings.TrimPrefix(line, "cmdstat_"), ":")
			for _, f := range strings.Split(rest, ",") {
				if v, ok := strings.CutPrefix(f, "calls="); ok {
					c.Calls[name], _ = strconv.ParseInt(v, 10, 64)
				}
			}
		case strings.HasPrefix(line, "used_cpu_sys:"), strings.HasPrefix(line, "used_cpu_user:"):
			_, v, _ := strings.Cut(line, ":")
			secs, _ := strconv.ParseFloat(v, 64)
			c.CPU += time.Duration(secs * float64(time.Second))
		}
	}
	return c, nil
}

// Since returns the counters accumulated since an earlier snapshot.
func (c ServerCost) Since(earlier ServerCost) ServerCost {
	d := ServerCost{Calls: map[string]int64{}, CPU: c.CPU - earlier.CPU}
	for k, v := range c.Calls {
		if n := v - earlier.Calls[k]; n != 0 {
			d.Calls[k] = n
		}
	}
	return d
}

// Scripts returns how many scripts ran (EVAL, EVALSHA, EVAL_RO, EVALSHA_RO, FCALL).
func (c ServerCost) Scripts() int64 {
	return c.Calls["eval"] + c.Calls["evalsha"] + c.Calls["eval_ro"] + c.Calls["evalsha_ro"] + c.Calls["fcall"]
}

// Commands returns how many commands ran in all, counting the ones scripts ran but not INFO itself.
func (c ServerCost) Commands() int64 {
	var n int64
	for k, v := range c.Calls {
		if k != "info" {
			n += v
		}
	}
	return n
}

// RTTs expresses d in units of rtt, for reports ("2.31 RTT").
func RTTs(d, rtt time.Duration) string {
	if rtt <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f RTT", float64(d)/float64(rtt))
}
