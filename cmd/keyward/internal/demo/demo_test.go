package demo

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keyward/keyward/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Every scenario holds its invariant, on the embedded Redis and on a real redis-server, and the demo leaves no
// key behind on a real server.
func TestScenarios(t *testing.T) {
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			t.Run("embedded", func(t *testing.T) {
				var out bytes.Buffer
				ok, err := Run(context.Background(), Config{Out: &out, Scenarios: []string{name}})
				require.NoError(t, err)
				assert.True(t, ok, out.String())
				assert.Contains(t, out.String(), "  ok  ")
				assert.NotContains(t, out.String(), "FAIL")
			})
			t.Run("redis-server", func(t *testing.T) {
				s := redistest.Start(t)
				rdb := s.Client(t)
				var out bytes.Buffer
				ok, err := Run(context.Background(), Config{Out: &out, Redis: s.ClientOptions(), Scenarios: []string{name}})
				require.NoError(t, err)
				assert.True(t, ok, out.String())
				assert.Contains(t, out.String(), "Redis at "+s.Addr())
				keys, err := rdb.Keys(context.Background(), "*").Result()
				require.NoError(t, err)
				assert.Empty(t, keys, "the demo deletes its keys")
			})
		})
	}
}

func TestUnknownScenario(t *testing.T) {
	_, err := Run(context.Background(), Config{Out: &bytes.Buffer{}, Scenarios: []string{"counter", "nope"}})
	assert.ErrorContains(t, err, `unknown scenario "nope" (the scenarios: counter, stampede, cron, handoff)`)
}

func TestAnInvariantThatBreaksFailsTheDemo(t *testing.T) {
	var out bytes.Buffer
	p := newPrinter(&out, false)
	p.check(true, "fine")
	p.check(false, "broken %d", 1)
	assert.Equal(t, 1, p.failures())
	assert.Equal(t, "  ok  fine\nFAIL  broken 1\n", out.String())
}

func TestProgressLineIsDrawnAndCleared(t *testing.T) {
	var out syncBuffer
	p := newPrinter(&out, true)
	drawn := make(chan struct{})
	done := p.step(func() string {
		select {
		case <-drawn:
		default:
			close(drawn)
		}
		return "3 of 4"
	})
	<-drawn // the progress line is drawn after a second
	p.info("a line in between")
	done()
	text := out.String()
	assert.Contains(t, text, "      … 3 of 4")
	assert.Contains(t, text, "\r\033[K      a line in between\n", "a line clears the progress line first")
	assert.True(t, strings.HasSuffix(text, "\r\033[K") || strings.HasSuffix(text, "between\n"))
}

func TestFormatting(t *testing.T) {
	assert.Equal(t, "1,000", thousands(1000))
	assert.Equal(t, "999", thousands(999))
	assert.Equal(t, "1,234,567", thousands(1234567))
	assert.Equal(t, "1 ms", human(time.Millisecond))
	assert.Equal(t, "250 ms", human(250*time.Millisecond))
	assert.Equal(t, "1.5 s", human(1500*time.Millisecond))
	assert.Equal(t, "1.4 ms", ms(1400*time.Microsecond))
	assert.Equal(t, "57 ms", ms(57200*time.Microsecond))

	samples := []time.Duration{5, 1, 4, 2, 3}
	assert.Equal(t, time.Duration(3), percentile(samples, 50))
	assert.Equal(t, time.Duration(5), percentile(samples, 99))
	assert.Equal(t, time.Duration(1), percentile(samples, 1))
	assert.Equal(t, []time.Duration{5, 1, 4, 2, 3}, samples, "percentile leaves its input alone")
}

// syncBuffer is a bytes.Buffer that the progress goroutine and the test may use at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
