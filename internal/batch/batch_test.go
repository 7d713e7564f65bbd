package batch_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/keyward/keyward/internal/batch"
	"github.com/keyward/keyward/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pipelines records the size of every pipeline a client sends, but for those go-redis sends when it opens a
// connection (HELLO, CLIENT SETINFO).
type pipelines struct {
	mu    sync.Mutex
	sizes []int
}

func (h *pipelines) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *pipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *pipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if name := cmds[0].Name(); name != "hello" && name != "client" {
			h.mu.Lock()
			h.sizes = append(h.sizes, len(cmds))
			h.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

func (h *pipelines) get() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]int(nil), h.sizes...)
}

// newClient returns a client of an in-memory miniredis, for a synctest bubble: synctest.Wait then tells when
// every goroutine of the test is blocked, in line or on the test's channels.
func newClient(t *testing.T) (*redis.Client, *pipelines) {
	m := miniredis.NewMiniRedis()
	t.Cleanup(m.Close)
	rdb := redistest.SynctestClient(m)
	t.Cleanup(func() { _ = rdb.Close() })
	h := &pipelines{}
	rdb.AddHook(h)
	return rdb, h
}

// fill puts two calls in flight (the most a Batcher has) that wait until release is closed; it returns once both
// are in flight, and wg is done once both returned.
func fill(t *testing.T, b *batch.Batcher, release <-chan struct{}, wg *sync.WaitGroup) {
	for range 2 {
		wg.Go(func() {
			assert.NoError(t, b.Do(context.Background(), func(redis.Pipeliner) { t.Error("queued") },
				func() { <-release }))
		})
	}
	synctest.Wait()
}

// A call with nothing else in flight runs by itself, as without batching.
func TestALoneCallRunsAlone(t *testing.T) { synctest.Test(t, aloneCallRunsAlone) }

func aloneCallRunsAlone(t *testing.T) {
	rdb, h := newClient(t)
	b := batch.New(rdb)
	ctx := context.Background()
	for range 3 {
		ran := false
		require.NoError(t, b.Do(ctx, func(redis.Pipeliner) { t.Error("queued") }, func() {
			ran = true
			require.NoError(t, rdb.Set(ctx, "k", "v", 0).Err())
		}))
		assert.True(t, ran)
	}
	assert.Empty(t, h.get(), "no pipeline")
}

// Calls that come while the calls in flight wait for the server go out together, in one pipeline, and each gets
// its own answers.
func TestCallsThatComeMeanwhileShareAPipeline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rdb, h := newClient(t)
		b := batch.New(rdb)
		ctx := context.Background()
		release := make(chan struct{})
		var inFlight sync.WaitGroup
		fill(t, b, release, &inFlight)

		const queued = 5
		var answers sync.WaitGroup
		var queuedCalls atomic.Int64
		cmds := make([]*redis.StringCmd, queued)
		for i := range queued {
			answers.Go(func() {
				assert.NoError(t, b.Do(ctx, func(p redis.Pipeliner) {
					queuedCalls.Add(1)
					cmds[i] = p.Echo(ctx, i)
				}, func() { t.Error("ran alone") }))
				assert.Equal(t, string(rune('0'+i)), cmds[i].Val(), "its own answer")
			})
		}
		synctest.Wait() // all five in line
		close(release)
		inFlight.Wait()
		answers.Wait()
		assert.Equal(t, int64(queued), queuedCalls.Load())
		assert.Equal(t, []int{queued}, h.get(), "one pipeline for the five")
	})
}

// A queued call whose ctx ends returns its error at once; the batch goes on for the others.
func TestAQueuedCallReturnsWhenItsContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rdb, h := newClient(t)
		b := batch.New(rdb)
		ctx := context.Background()
		release := make(chan struct{})
		var inFlight sync.WaitGroup
		fill(t, b, release, &inFlight)

		cctx, cancel := context.WithCancel(ctx)
		cancel()
		err := b.Do(cctx, func(p redis.Pipeliner) { p.Ping(ctx) }, func() { t.Error("ran alone") })
		assert.ErrorIs(t, err, context.Canceled)
		close(release)
		inFlight.Wait()
		synctest.Wait() // the pipeline of the call that gave up went out
		assert.Equal(t, []int{1}, h.get())

		// The Batcher is idle again: the next call runs alone.
		ran := false
		require.NoError(t, b.Do(ctx, func(redis.Pipeliner) { t.Error("queued") }, func() { ran = true }))
		assert.True(t, ran)
	})
}
