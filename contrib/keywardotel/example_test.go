package keywardotel_test

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/keyward/keyward/contrib/keywardotel"
	"github.com/keyward/keyward/lock"
)

// One Observer, given to a lock Client, records its metrics and spans. Here they go to an in-memory reader and
// recorder; an application passes its own providers (or sets the globals), e.g. with an OTLP or a Prometheus
// exporter.
func Example() {
	srv, _ := miniredis.Run() // an embedded server for the example
	defer srv.Close()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()

	reader := sdkmetric.NewManualReader()
	spans := tracetest.NewSpanRecorder()
	obs, err := keywardotel.New(
		keywardotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))),
		keywardotel.WithTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))),
		keywardotel.WithKeyLabel(keywardotel.KeyAsIs), // a few fixed keys: label them as they are
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	locks, err := lock.New(rdb, lock.WithObserver(obs))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer locks.Close()

	ctx := context.Background()
	l, _ := locks.TryObtain(ctx, "jobs:nightly", time.Minute)
	_, err = locks.TryObtain(ctx, "jobs:nightly", time.Minute) // another holder would find it taken
	fmt.Println("second try:", err)
	_ = l.Release(ctx)

	var rm metricdata.ResourceMetrics
	_ = reader.Collect(ctx, &rm)
	var lines []string
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch data := m.Data.(type) {
		case metricdata.Histogram[float64]:
			for _, p := range data.DataPoints {
				lines = append(lines, fmt.Sprintf("%s [%s] {%s} count %d", m.Name, m.Unit,
					p.Attributes.Encoded(attribute.DefaultEncoder()), p.Count))
			}
		case metricdata.Sum[int64]:
			for _, p := range data.DataPoints {
				lines = append(lines, fmt.Sprintf("%s [%s] {%s} %d", m.Name, m.Unit,
					p.Attributes.Encoded(attribute.DefaultEncoder()), p.Value))
			}
		}
	}
	slices.Sort(lines)
	for _, line := range lines {
		fmt.Println(line)
	}
	for _, s := range spans.Ended() {
		var outcome string
		for _, kv := range s.Attributes() {
			if kv.Key == keywardotel.AttrOutcome {
				outcome = kv.Value.AsString()
			}
		}
		fmt.Printf("span %q: %s, %d link(s)\n", s.Name(), outcome, len(s.Links()))
	}
	// Output:
	// second try: lock "jobs:nightly": keyward: not obtained: held by another
	// keyward.acquire.duration [s] {keyward.key=jobs:nightly,keyward.op=try obtain,keyward.outcome=not_obtained,keyward.source=lock} count 1
	// keyward.acquire.duration [s] {keyward.key=jobs:nightly,keyward.op=try obtain,keyward.outcome=obtained,keyward.source=lock} count 1
	// keyward.held [{lock}] {keyward.key=jobs:nightly,keyward.source=lock} 0
	// keyward.hold.duration [s] {keyward.end=released,keyward.key=jobs:nightly,keyward.source=lock} count 1
	// span "keyward.lock try obtain": obtained, 0 link(s)
	// span "keyward.lock try obtain": not_obtained, 1 link(s)
}
