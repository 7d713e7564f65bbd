package redlock_test

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward/internal/redistest"
	"github.com/keyward/keyward/redlock"
)

// queuedTries is a go-redis hook that closes its channel after the n-th acquire that joined a node's queue.
func queuedTries(n int64) (*redistest.AfterReply, chan struct{}) {
	ch := make(chan struct{})
	return &redistest.AfterReply{N: n, Fn: func() { close(ch) }, Match: func(r []any) bool {
		return len(r) == 2 && r[0] == int64(0)
	}}, ch
}

// A waiting process whose last waiter gives up after a release reserved the lock for it on the nodes gives the
// reservations back: the next process in line gets the lock at once, not when the claim window (a minute here)
// runs out.
func TestGivingUpPassesReservationsOn(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, bb *bubble) {
		// The Clients and their go-redis clients are closed before the bubble closes the nodes: a node that is
		// closed while a Client's watcher dials it again can wait for that connection for ever.
		var closers []func()
		defer func() {
			for _, f := range slices.Backward(closers) {
				f()
			}
		}()
		// client returns a redlock Client of its own (a process), with hooks on its clients of every node, and on
		// that of node 0.
		client := func(every redis.Hook, node0 redis.Hook) *redlock.Client {
			var nodes []redis.UniversalClient
			for i, m := range bb.ms {
				rdb := redistest.SynctestClient(m)
				if every != nil {
					rdb.AddHook(every)
				}
				if i == 0 && node0 != nil {
					rdb.AddHook(node0)
				}
				closers = append(closers, func() { _ = rdb.Close() })
				nodes = append(nodes, rdb)
			}
			c, err := redlock.New(nodes, redlock.WithClaimWindow(time.Minute), redlock.WithNodeTimeout(50*time.Millisecond))
			require.NoError(t, err)
			closers = append(closers, func() { _ = c.Close() })
			return c
		}
		stall := &redistest.StallAcquires{}
		bHook, bQueued := queuedTries(2) // the second try is the first that joins the queues
		cHook, cQueued := queuedTries(2)
		a, b, c := client(nil, nil), client(stall, bHook), client(nil, cHook)
		ctx := context.Background()
		held, err := a.TryObtain(ctx, "job", time.Hour)
		require.NoError(t, err)
		// TryObtain returns once a majority answered: let its acquire on the last node land too, or b's tries
		// may take that node (node 0, where b's hook counts the answers "taken") before it does.
		synctest.Wait()

		bctx, giveUp := context.WithCancel(ctx)
		bDone := make(chan error, 1)
		go func() {
			_, err := b.Obtain(bctx, "job", time.Hour)
			bDone <- err
		}()
		<-bQueued
		synctest.Wait()
		// The queues are scored by the servers' clocks, the bubble's here: c comes a millisecond later, not at
		// the same time (ties go by process id).
		time.Sleep(time.Millisecond)
		cDone := make(chan error, 1)
		var cGot time.Time
		go func() {
			l, err := c.Obtain(ctx, "job", time.Hour)
			cGot = time.Now()
			if err == nil {
				err = l.Release(ctx)
			}
			cDone <- err
		}()
		<-cQueued
		synctest.Wait()

		stall.On() // b cannot claim what is reserved for it
		released := time.Now()
		require.NoError(t, held.Release(ctx))
		synctest.Wait()
		giveUp()
		require.ErrorIs(t, <-bDone, context.Canceled)
		require.NoError(t, <-cDone)
		assert.Less(t, cGot.Sub(released), time.Second, "c did not wait out b's claim window")
	})
}
