package keywardotel_test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/keyward/keyward/contrib/keywardotel"
	"github.com/keyward/keyward/internal/redistest"
)

// A rig is an Observer that records into an in-memory metric reader and span recorder.
type rig struct {
	obs    *keywardotel.Observer
	reader *sdkmetric.ManualReader
	spans  *tracetest.SpanRecorder
}

func newRig(t *testing.T, opts ...keywardotel.Option) *rig {
	t.Helper()
	r := &rig{reader: sdkmetric.NewManualReader(), spans: tracetest.NewSpanRecorder()}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.spans))
	opts = append([]keywardotel.Option{keywardotel.WithMeterProvider(mp), keywardotel.WithTracerProvider(tp)}, opts...)
	obs, err := keywardotel.New(opts...)
	require.NoError(t, err)
	r.obs = obs
	return r
}

// read collects the metrics recorded so far.
func (r *rig) read(t *testing.T) reading {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.reader.Collect(context.Background(), &rm))
	rd := reading{}
	for _, sm := range rm.ScopeMetrics {
		require.Equal(t, keywardotel.ScopeName, sm.Scope.Name)
		rd = append(rd, sm.Metrics...)
	}
	return rd
}

// ended returns the spans ended so far, by name.
func (r *rig) ended(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range r.spans.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// A reading is what the metric reader collected.
type reading []metricdata.Metrics

func (rd reading) metric(name string) (metricdata.Metrics, bool) {
	for _, m := range rd {
		if m.Name == name {
			return m, true
		}
	}
	return metricdata.Metrics{}, false
}

// matches reports whether set has every attribute of want.
func matches(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// value returns the sum of the values of the int64 sum or gauge name over the points that have the attributes
// want.
func (rd reading) value(name string, want ...attribute.KeyValue) int64 {
	m, _ := rd.metric(name)
	var total int64
	switch data := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range data.DataPoints {
			if matches(p.Attributes, want) {
				total += p.Value
			}
		}
	case metricdata.Gauge[int64]:
		for _, p := range data.DataPoints {
			if matches(p.Attributes, want) {
				total += p.Value
			}
		}
	}
	return total
}

// count returns the count and the sum of the histogram name over the points that have the attributes want.
func (rd reading) count(name string, want ...attribute.KeyValue) (uint64, float64) {
	m, _ := rd.metric(name)
	data, _ := m.Data.(metricdata.Histogram[float64])
	var n uint64
	var sum float64
	for _, p := range data.DataPoints {
		if matches(p.Attributes, want) {
			n += p.Count
			sum += p.Sum
		}
	}
	return n, sum
}

// attrSets returns the attribute sets of the points of name, each as "k=v,k=v", sorted.
func (rd reading) attrSets(name string) []string {
	m, _ := rd.metric(name)
	var sets []attribute.Set
	switch data := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range data.DataPoints {
			sets = append(sets, p.Attributes)
		}
	case metricdata.Gauge[int64]:
		for _, p := range data.DataPoints {
			sets = append(sets, p.Attributes)
		}
	case metricdata.Histogram[float64]:
		for _, p := range data.DataPoints {
			sets = append(sets, p.Attributes)
		}
	}
	var out []string
	for _, s := range sets {
		out = append(out, s.Encoded(attribute.DefaultEncoder()))
	}
	sort.Strings(out)
	return out
}

// String renders the reading compactly, one line per point, for logs.
func (rd reading) String() string {
	var lines []string
	for _, m := range rd {
		switch data := m.Data.(type) {
		case metricdata.Sum[int64]:
			for _, p := range data.DataPoints {
				lines = append(lines, fmt.Sprintf("%s{%s} = %d %s", m.Name, p.Attributes.Encoded(attribute.DefaultEncoder()), p.Value, m.Unit))
			}
		case metricdata.Gauge[int64]:
			for _, p := range data.DataPoints {
				lines = append(lines, fmt.Sprintf("%s{%s} = %d %s", m.Name, p.Attributes.Encoded(attribute.DefaultEncoder()), p.Value, m.Unit))
			}
		case metricdata.Histogram[float64]:
			for _, p := range data.DataPoints {
				lines = append(lines, fmt.Sprintf("%s{%s} count=%d sum=%.4f%s min=%.4f%s max=%.4f%s buckets: %s", m.Name,
					p.Attributes.Encoded(attribute.DefaultEncoder()), p.Count, p.Sum, m.Unit, extremum(p.Min), m.Unit,
					extremum(p.Max), m.Unit, buckets(p, m.Unit)))
			}
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func extremum(e metricdata.Extrema[float64]) float64 {
	v, _ := e.Value()
	return v
}

// buckets renders the histogram's non-empty buckets, e.g. "≤0.005s:12 ≤0.01s:40".
func buckets(p metricdata.HistogramDataPoint[float64], unit string) string {
	var out []string
	for i, c := range p.BucketCounts {
		if c == 0 {
			continue
		}
		if i < len(p.Bounds) {
			out = append(out, fmt.Sprintf("≤%g%s:%d", p.Bounds[i], unit, c))
		} else {
			out = append(out, fmt.Sprintf(">%g%s:%d", p.Bounds[len(p.Bounds)-1], unit, c))
		}
	}
	return strings.Join(out, " ")
}

// inBubble runs test in a testing/synctest bubble with a miniredis whose keys expire on the bubble's clock, and a
// go-redis client to it.
func inBubble(t *testing.T, test func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client)) {
	synctest.Test(t, func(t *testing.T) {
		m := miniredis.NewMiniRedis()
		defer m.Close()
		rdb := redistest.SynctestClient(m)
		defer rdb.Close()
		test(t, m, rdb)
	})
}

var (
	srcLock      = keywardotel.AttrSource.String("lock")
	srcRedlock   = keywardotel.AttrSource.String("redlock")
	srcSemaphore = keywardotel.AttrSource.String("semaphore")
	srcElection  = keywardotel.AttrSource.String("election")
)

func outcome(o string) attribute.KeyValue { return keywardotel.AttrOutcome.String(o) }
func op(o string) attribute.KeyValue      { return keywardotel.AttrOp.String(o) }
func key(k string) attribute.KeyValue     { return keywardotel.AttrKey.String(k) }
