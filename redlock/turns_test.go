package redlock_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/redlock"
)

// obtainAsync starts Obtain on c and returns where its lock arrives.
func obtainAsync(t *testing.T, c *redlock.Client, ctx context.Context) <-chan *redlock.Lock {
	got := make(chan *redlock.Lock, 1)
	go func() {
		l, err := c.Obtain(ctx, "job", time.Minute)
		assert.NoError(t, err)
		got <- l
	}()
	synctest.Wait() // it tried, joined the nodes' queues, and waits
	// The queues order processes by the server's clock, which miniredis reads from the bubble's: let it move, so
	// that the next process comes later.
	time.Sleep(time.Millisecond)
	return got
}

// holderAndWaiter returns, in the bubble, a process that holds "job", another one, and what closes both.
func holderAndWaiter(t *testing.T, b *bubble) (*redlock.Client, *redlock.Lock, func()) {
	p, q := b.client(t), b.client(t)
	held, err := p.TryObtain(context.Background(), "job", time.Minute)
	require.NoError(t, err)
	// TryObtain returns once a majority answered; its acquire on the last node is still on its way. Let it land
	// before q tries: q's first try could otherwise take that node, and the clean-up release of its failed try
	// would reserve the lock there for whoever is first in the node's queue, a claim window before p's release.
	synctest.Wait()
	return q, held, func() {
		assert.NoError(t, q.Close())
		assert.NoError(t, p.Close())
	}
}

// assertGone checks that no node of the bubble has key.
func assertGone(t *testing.T, b *bubble, key, why string) {
	t.Helper()
	for i, m := range b.ms {
		assert.False(t, m.Exists(key), "node %d: %s", i, why)
	}
}

// handOff releases from, and returns the lock that then arrives on to; the Obtain behind still (if not nil)
// must still be waiting.
func handOff(t *testing.T, from *redlock.Lock, to, still <-chan *redlock.Lock, why string) *redlock.Lock {
	t.Helper()
	require.NoError(t, from.Release(context.Background()))
	synctest.Wait()
	l := <-to
	if still != nil {
		assert.Empty(t, still, why)
	}
	return l
}

func TestTurnsGoToProcessesInArrivalOrder(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		p, q, r := b.client(t), b.client(t), b.client(t)
		defer p.Close()
		defer q.Close()
		defer r.Close()
		held, err := p.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		gotQ := obtainAsync(t, q, ctx)
		gotR := obtainAsync(t, r, ctx)

		lq := handOff(t, held, gotQ, gotR, "the release reserved the lock for the first in line only")
		lr := handOff(t, lq, gotR, nil, "")
		assert.Greater(t, lr.Fence(), lq.Fence())
		require.NoError(t, lr.Release(ctx))
		synctest.Wait()
		assertGone(t, b, keys.For("job").Queue, "the queue is empty once nobody waits")
	})
}

func TestCohortOfTheHoldersOwnWaitersThenTheNextProcess(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		a, other := b.client(t, redlock.WithCohort(1)), b.client(t)
		defer a.Close()
		defer other.Close()
		a1, err := a.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		gotA2 := obtainAsync(t, a, ctx) // waits for a1, not at the nodes
		gotB := obtainAsync(t, other, ctx)
		gotA3 := obtainAsync(t, a, ctx)

		a2 := handOff(t, a1, gotA2, gotB, "within the cohort, the release reserved the lock for a's own waiter")
		lb := handOff(t, a2, gotB, gotA3, "the cohort (1) was used up: the next process had its turn")
		a3 := handOff(t, lb, gotA3, nil, "")
		assert.Greater(t, a3.Fence(), lb.Fence())
		assert.Greater(t, lb.Fence(), a2.Fence())
		require.NoError(t, a3.Release(ctx))
	})
}

func TestAProcessThatDiedFirstInLineCostsOneClaimWindow(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		q, held, closeAll := holderAndWaiter(t, b)
		defer closeAll()
		for _, m := range b.ms { // a process that joined the queues and died
			_, err := m.ZAdd(keys.For("job").Queue, 0, "dead")
			require.NoError(t, err)
		}
		gotQ := obtainAsync(t, q, ctx)

		released := time.Now()
		require.NoError(t, held.Release(ctx))
		synctest.Wait()
		assert.Equal(t, 3, holders(b.ms, "job", "reserved:dead"), "reserved for the first in line")
		lq := <-gotQ
		took := time.Since(released)
		// The waiter's timer is set at the end of the dead process's claim window + 1 ms + a jitter below 1 ms
		// (see arm); no time passes in the bubble while it tries.
		assert.GreaterOrEqual(t, took, 20*time.Millisecond+time.Millisecond, "after the claim window")
		assert.Less(t, took, 20*time.Millisecond+2*time.Millisecond, "at the claim window's end, not at the holder's ttl")
		require.NoError(t, lq.Release(ctx))
	})
}

func TestAWaiterThatGivesUpLeavesTheQueues(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		q, held, closeAll := holderAndWaiter(t, b)
		defer closeAll()
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := q.Obtain(wctx, "job", time.Minute)
		require.True(t, errors.Is(err, context.DeadlineExceeded), "%v", err)
		synctest.Wait() // the background clean-up
		assertGone(t, b, keys.For("job").Queue, "left the queue")
		require.NoError(t, held.Release(ctx))
		synctest.Wait() // the release on the last node, after a majority answered
		assertGone(t, b, "job", "freed, not reserved for a waiter that left")
	})
}

func TestAWaiterThatGotTheLockLeavesTheQueueOfANodeThatAnsweredLate(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		queue := keys.For("job").Queue
		b.clients[2].AddHook(lateScripts(10 * time.Millisecond)) // node 2 answers after the others decided
		require.NoError(t, b.ms[2].Set("job", "another holder's part"))
		b.ms[2].SetTTL("job", time.Hour)
		// settle lets node 2 answer: synctest.Wait alone does not wait out its sleep.
		settle := func() {
			time.Sleep(time.Second)
			synctest.Wait()
		}
		q, held, closeAll := holderAndWaiter(t, b) // held on nodes 0 and 1
		defer closeAll()
		gotQ := obtainAsync(t, q, ctx)
		settle()
		for i, m := range b.ms {
			members, err := m.ZMembers(queue)
			require.NoError(t, err, "node %d: q waits in the queue", i)
			require.Len(t, members, 1, "node %d: q waits in the queue", i)
		}

		lq := handOff(t, held, gotQ, nil, "")
		settle() // node 2's late answer to q's winning try: taken
		assert.Equal(t, "another holder's part", value(b.ms[2], "job"))
		assertGone(t, b, queue, "q holds the lock: it waits in no node's queue, also not where the lock was taken")
		require.NoError(t, lq.Release(ctx))
	})
}

// lateScripts is a go-redis hook that sends each script d late: the node runs it, and answers, after the others.
type lateScripts time.Duration

func (lateScripts) DialHook(next redis.DialHook) redis.DialHook { return next }
func (lateScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (d lateScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			time.Sleep(time.Duration(d))
		}
		return next(ctx, cmd)
	}
}
