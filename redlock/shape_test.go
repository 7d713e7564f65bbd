package redlock_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/redlock"
)

// The shape of redlock's errors in the situations every package of keyward reports alike: a context that
// ended (with a cause, or at its deadline), a Client closed, a quorum lost, a permission refused. Run with -v
// for the texts.

// notOther checks that a context's or Close's error does not pose as another failure.
func notOther(t *testing.T, err error) {
	t.Helper()
	assert.NotErrorIs(t, err, redlock.ErrQuorum)
	assert.NotErrorIs(t, err, redlock.ErrInvalid)
	assert.NotErrorIs(t, err, redlock.ErrNotObtained)
}

func TestShapeContextCancelledWithACause(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		locks := b.client(t)
		defer locks.Close()
		why := errors.New("request abandoned")
		check := func(row string, err error) {
			t.Helper()
			t.Logf("%-40s %v", row, err)
			require.ErrorIs(t, err, context.Canceled, row)
			require.ErrorIs(t, err, why, row)
			assert.Contains(t, err.Error(), `"job"`, row)
			notOther(t, err)
		}
		cancelled, cancel := context.WithCancelCause(context.Background())
		cancel(why)
		_, err := locks.TryObtain(cancelled, "job", time.Minute)
		check("TryObtain, ctx cancelled before", err)
		_, err = locks.Obtain(cancelled, "job", time.Minute)
		check("Obtain, ctx cancelled before", err)
		check("Do, ctx cancelled before", locks.Do(cancelled, "job", time.Minute, func(context.Context) error { return nil }))
		_, err = locks.Locker().Obtain(cancelled, "job", time.Minute)
		check("Locker().Obtain, ctx cancelled before", err)

		// While it waits.
		other := b.client(t)
		defer other.Close()
		held, err := other.TryObtain(context.Background(), "job", time.Minute)
		require.NoError(t, err)
		waiting, cancel := context.WithCancelCause(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := locks.Obtain(waiting, "job", time.Minute)
			errc <- err
		}()
		synctest.Wait()
		cancel(why)
		check("Obtain, ctx cancelled while it waits", <-errc)
		synctest.Wait() // the waiter has left the nodes' queues (in the background), so no release reserves the lock for it
		require.NoError(t, held.Release(context.Background()))

		// A held lock's operations.
		l, err := locks.TryObtain(context.Background(), "job", time.Minute)
		require.NoError(t, err)
		check("Lock.Refresh, ctx cancelled", l.Refresh(cancelled, time.Minute))
		_, err = l.TTL(cancelled)
		check("Lock.TTL, ctx cancelled", err)
		check("Lock.Release, ctx cancelled", l.Release(cancelled))
		synctest.Wait()
		// The release was sent all the same (a caller's ctx does not cut a node's operation off): the retry
		// finds it done.
		assert.ErrorIs(t, l.Release(context.Background()), redlock.ErrNotHeld)
	})
}

func TestShapeDeadline(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		locks := b.client(t)
		defer locks.Close()
		p := b.client(t)
		defer p.Close()
		held, err := p.TryObtain(context.Background(), "job", time.Minute)
		require.NoError(t, err)
		defer func() { require.NoError(t, held.Release(context.Background())) }()

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = locks.Obtain(ctx, "job", time.Minute)
		t.Logf("%-40s %v", "Obtain, deadline while it waits", err)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), `redlock "job": obtain:`)
		notOther(t, err)

		why := errors.New("the request's budget ran out")
		ctx, cancel = context.WithTimeoutCause(context.Background(), time.Second, why)
		defer cancel()
		err = locks.Do(ctx, "job", time.Minute, func(context.Context) error { return nil })
		t.Logf("%-40s %v", "Do, deadline with a cause", err)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.ErrorIs(t, err, why)
		notOther(t, err)
	})
}

func TestShapeAfterClose(t *testing.T) {
	inBubble(t, 3, func(t *testing.T, b *bubble) {
		ctx := context.Background()
		locks := b.client(t)
		check := func(row string, err error) {
			t.Helper()
			t.Logf("%-40s %v", row, err)
			require.ErrorIs(t, err, redlock.ErrClosed, row)
			assert.Contains(t, err.Error(), `"job"`, row)
			notOther(t, err)
			assert.NotErrorIs(t, err, context.Canceled, row)
		}
		held, err := locks.TryObtain(ctx, "held", 3*time.Second, redlock.WithAutoRefresh())
		require.NoError(t, err)
		p := b.client(t)
		defer p.Close()
		other, err := p.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		errc := make(chan error, 1)
		go func() {
			_, err := locks.Obtain(ctx, "job", time.Minute)
			errc <- err
		}()
		synctest.Wait()
		require.NoError(t, locks.Close())
		check("Obtain waiting when Close ran", <-errc)
		require.NoError(t, locks.Close(), "a second Close")

		_, err = locks.TryObtain(ctx, "job", time.Minute)
		check("TryObtain after Close", err)
		_, err = locks.Obtain(ctx, "job", time.Minute)
		check("Obtain after Close", err)
		check("Do after Close", locks.Do(ctx, "job", time.Minute, func(context.Context) error { return nil }))
		_, err = locks.Locker().TryObtain(ctx, "job", time.Minute)
		check("Locker().TryObtain after Close", err)

		// A lock held at Close stays usable until released, auto-refresh included.
		time.Sleep(10 * time.Second)
		assert.Nil(t, held.Err(), "kept by auto-refresh past its ttl")
		require.NoError(t, held.Refresh(ctx, 3*time.Second))
		ttl, err := held.TTL(ctx)
		require.NoError(t, err)
		assert.Equal(t, 3*time.Second, ttl)
		require.NoError(t, held.Release(ctx))
		synctest.Wait()
		assertGone(t, b, "held", "released after Close")
		require.NoError(t, other.Release(ctx))
	})
}

// nodeErrors returns the NodeErrors of a quorum error, by node index.
func nodeErrors(t *testing.T, err error) map[int]*keyward.NodeError {
	t.Helper()
	var first *keyward.NodeError
	require.ErrorAs(t, err, &first, "errors.As finds a NodeError")
	u, ok := err.(interface{ Unwrap() []error })
	require.True(t, ok, "the ErrQuorum error itself is returned: %T", err)
	nes := map[int]*keyward.NodeError{}
	for _, e := range u.Unwrap() {
		if ne, ok := e.(*keyward.NodeError); ok {
			nes[ne.Node] = ne
		}
	}
	assert.Equal(t, first, nes[first.Node])
	return nes
}

func TestShapeQuorumLost(t *testing.T) {
	ms, clients := miniNodes(t, 3)
	locks := newClient(t, universal(clients), redlock.WithNodeTimeout(100*time.Millisecond))
	warm, err := locks.TryObtain(context.Background(), "warm", time.Minute) // connections open
	require.NoError(t, err)
	require.NoError(t, warm.Release(context.Background()))
	addrs := []string{ms[0].Addr(), ms[1].Addr(), ms[2].Addr()}
	ms[1].Close()
	ms[2].Close()

	_, err = locks.TryObtain(context.Background(), "job", time.Minute)
	t.Logf("%-40s %v", "TryObtain, 2 of 3 nodes down", err)
	require.ErrorIs(t, err, redlock.ErrQuorum)
	assert.NotErrorIs(t, err, redlock.ErrNotObtained)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "the caller's context did not end")
	assert.Contains(t, err.Error(), `"job"`)
	nes := nodeErrors(t, err)
	require.Len(t, nes, 2, "one per failed node")
	for _, i := range []int{1, 2} {
		require.Contains(t, nes, i)
		assert.Equal(t, addrs[i], nes[i].Addr, "node %d's address, from its client", i)
		assert.Error(t, errors.Unwrap(nes[i]), "the node's cause")
	}
}

func TestShapeNoPermission(t *testing.T) {
	ms, clients := miniNodes(t, 3)
	locks := newClient(t, universal(clients))
	// What redis-server answers a user refused a command outside a script (docs/DESIGN.md, "Errors"); the
	// ACL tests (acl_test.go) refuse real users on real servers.
	const noperm = "NOPERM this user has no permissions to run the 'evalsha' command"
	refuse := []int{0, 2}
	for _, i := range refuse {
		ms[i].SetError(noperm)
	}
	defer func() {
		for _, i := range refuse {
			ms[i].SetError("")
		}
	}()

	_, err := locks.TryObtain(context.Background(), "job", time.Minute)
	t.Logf("%-40s %v", "TryObtain, 2 of 3 nodes refuse", err)
	check := func(err error) {
		t.Helper()
		require.ErrorIs(t, err, redlock.ErrQuorum)
		require.ErrorIs(t, err, redlock.ErrNoPermission)
		assert.NotErrorIs(t, err, redlock.ErrNotObtained)
		nes := nodeErrors(t, err)
		require.Len(t, nes, 2)
		for _, i := range refuse {
			require.Contains(t, nes, i)
			assert.ErrorIs(t, nes[i], redlock.ErrNoPermission, "node %d", i)
			assert.Equal(t, ms[i].Addr(), nes[i].Addr)
		}
	}
	check(err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err = locks.Obtain(ctx, "job", time.Minute)
	t.Logf("%-40s %v", "Obtain, 2 of 3 nodes refuse", err)
	check(err)
	assert.NotErrorIs(t, err, context.DeadlineExceeded, "a refusal ends Obtain at once")
	assert.Less(t, time.Since(start), 10*time.Second)
}

func TestShapeWrongType(t *testing.T) {
	ms, clients := miniNodes(t, 3)
	locks := newClient(t, universal(clients))
	for _, m := range ms[1:] {
		_, err := m.Lpush("job", "x")
		require.NoError(t, err)
	}
	_, err := locks.TryObtain(context.Background(), "job", time.Minute)
	t.Logf("%-40s %v", "TryObtain, 2 of 3 keys of another type", err)
	require.ErrorIs(t, err, redlock.ErrQuorum)
	require.ErrorIs(t, err, redlock.ErrWrongType)
	nes := nodeErrors(t, err)
	require.Len(t, nes, 2)
	assert.ErrorIs(t, nes[1], redlock.ErrWrongType)
	assert.ErrorIs(t, nes[2], redlock.ErrWrongType)
	assert.Equal(t, ms[1].Addr(), nes[1].Addr)
}
