package keywardotel_test

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/contrib/keywardotel"
)

// BenchmarkCall measures what the Observer adds to one uncontended lock call and its release: StartCall, the
// Obtained and Ended events, and the Released, with the SDK's meter (and its tracer, sampling every span, with no
// exporter) in memory.
func BenchmarkCall(b *testing.B) {
	for _, traced := range []bool{false, true} {
		name := "metrics"
		if traced {
			name = "metrics+spans"
		}
		b.Run(name, func(b *testing.B) {
			opts := []keywardotel.Option{keywardotel.WithMeterProvider(sdkmetric.NewMeterProvider(
				sdkmetric.WithReader(sdkmetric.NewManualReader())))}
			if traced {
				opts = append(opts, keywardotel.WithTracerProvider(sdktrace.NewTracerProvider()))
			} else {
				opts = append(opts, keywardotel.WithTracerProvider(noop.NewTracerProvider()))
			}
			obs, err := keywardotel.New(opts...)
			if err != nil {
				b.Fatal(err)
			}
			base := context.Background()
			b.ReportAllocs()
			var fence int64
			for b.Loop() {
				fence++
				ctx := obs.StartCall(base, keyward.Call{Source: "lock", Op: "obtain", Key: "jobs:nightly"})
				obs.Observe(ctx, keyward.Event{Kind: keyward.Obtained, Source: "lock", Key: "jobs:nightly",
					Fence: fence, Wait: time.Millisecond})
				obs.Observe(ctx, keyward.Event{Kind: keyward.Ended, Source: "lock", Op: "obtain",
					Key: "jobs:nightly", Fence: fence, Wait: time.Millisecond})
				obs.Observe(base, keyward.Event{Kind: keyward.Released, Source: "lock", Key: "jobs:nightly",
					Fence: fence, Held: time.Millisecond})
			}
		})
	}
}
