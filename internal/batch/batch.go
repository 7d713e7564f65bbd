// Package batch sends the commands of concurrent calls on one Redis client in one pipeline, the way rueidis
// pipelines its commands by itself. Redis is single-threaded, and a large part of what a small command costs it is
// reading the request and writing the reply: a pipeline of many calls pays those once. For locks taken and released
// at a high rate by many goroutines of one process, that is most of the server's CPU per lock.
//
// A call that finds nobody else in flight runs at once, by itself, exactly as it would without batching (its own
// commands, the client's hooks see them as usual): a lone call waits for nothing and costs nothing more. Calls
// that come while one is in flight wait in line, and all of them go out in the next pipeline, as soon as the
// server answered the previous one. A pipeline runs on a goroutine of its own; each caller waits for its answer
// or for its ctx to end, whichever comes first (its commands then run or not: an unknown outcome, as after a
// timeout).
package batch

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// A Batcher batches the calls of many goroutines on one client. Its zero value is not usable: use New.
type Batcher struct {
	rdb redis.Cmdable

	mu       sync.Mutex
	inFlight int     // calls and pipelines in flight, at most maxInFlight
	queue    []*call // calls waiting for the next pipeline
}

// maxInFlight is how many calls or pipelines a Batcher has in flight at most: while one waits for the server's
// answer, the next can be on its way, and the calls that come meanwhile wait for the first to come back.
const maxInFlight = 2

type call struct {
	add  func(p redis.Pipeliner)
	done chan struct{}
}

// New returns a Batcher that sends its pipelines on rdb.
func New(rdb redis.Cmdable) *Batcher { return &Batcher{rdb: rdb} }

// Do runs a call: alone, when nothing is in flight (alone runs its commands directly, and Do returns nil), or
// else by queueing its commands with add on the next pipeline, whose answers add's commands hold once Do returned
// nil. Do returns ctx's error when ctx ends first; the commands may then run or not. add must only queue
// commands; alone must return when ctx ends.
func (b *Batcher) Do(ctx context.Context, add func(p redis.Pipeliner), alone func()) error {
	b.mu.Lock()
	if b.inFlight < maxInFlight && len(b.queue) == 0 {
		b.inFlight++
		b.mu.Unlock()
		alone()
		b.next()
		return nil
	}
	c := &call{add: add, done: make(chan struct{})}
	b.queue = append(b.queue, c)
	b.mu.Unlock()
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		select {
		case <-c.done: // answered as ctx ended: the answer is worth more
			return nil
		default:
		}
		return ctx.Err()
	}
}

// next hands the caller's place in flight to the calls that queued meanwhile, on a goroutine of its own so that
// the caller returns, or gives it up.
func (b *Batcher) next() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.inFlight--
		return
	}
	go b.drain()
}

// drain sends pipelines of the queued calls until none is left.
func (b *Batcher) drain() {
	for {
		b.mu.Lock()
		batch := b.queue
		b.queue = nil
		if len(batch) == 0 {
			b.inFlight--
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		// The pipeline's ctx never ends: its callers wait on their own. go-redis's ReadTimeout ends it on a server
		// that stopped answering.
		_, _ = b.rdb.Pipelined(context.Background(), func(p redis.Pipeliner) error {
			for _, c := range batch {
				c.add(p)
			}
			return nil
		})
		for _, c := range batch {
			close(c.done)
		}
	}
}

// Call runs a call that answers a T, as Do does: alone, or queued on the next pipeline by queue, which returns
// how to read the answer once the pipeline ran. It returns ctx's error when ctx ends first.
func Call[T any](ctx context.Context, b *Batcher, queue func(p redis.Pipeliner) func() T, alone func() T) (T, error) {
	var answer T
	var read func() T
	if err := b.Do(ctx, func(p redis.Pipeliner) { read = queue(p) }, func() { answer = alone() }); err != nil {
		return answer, err
	}
	if read != nil {
		answer = read()
	}
	return answer, nil
}
