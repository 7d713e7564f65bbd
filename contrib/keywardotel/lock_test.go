package keywardotel_test

import (
	"context"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/goleak"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/contrib/keywardotel"
	"github.com/keyward/keyward/lock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// attr returns the value of the attribute k of s (of a span, an event or a link), and whether it has one.
func attr(kvs []attribute.KeyValue, k attribute.Key) (attribute.Value, bool) {
	for _, kv := range kvs {
		if kv.Key == k {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func eventNames(s sdktrace.ReadOnlySpan) []string {
	var names []string
	for _, e := range s.Events() {
		names = append(names, e.Name)
	}
	return names
}

// Each outcome of a call is counted, with its duration, and ends the call's span: obtained, not obtained, cancelled,
// and errors by type (an invalid argument, a closed client).
func TestOutcomes(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		r := newRig(t)
		locks, err := lock.New(rdb, lock.WithObserver(r.obs), lock.WithPrefix("p:"))
		require.NoError(t, err)
		ctx := context.Background()

		l, err := locks.TryObtain(ctx, "job", time.Minute)
		require.NoError(t, err)
		_, err = locks.TryObtain(ctx, "job", time.Minute)
		require.ErrorIs(t, err, keyward.ErrNotObtained)
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = locks.Obtain(wctx, "job", time.Minute)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		_, err = locks.Obtain(ctx, "", time.Minute)
		require.ErrorIs(t, err, keyward.ErrInvalid)

		rd := r.read(t)
		assert.EqualValues(t, 1, rd.value("keyward.held", srcLock), "the lock is held")
		time.Sleep(time.Second)
		require.NoError(t, l.Release(ctx))
		require.NoError(t, locks.Close())
		_, err = locks.TryObtain(ctx, "job", time.Minute)
		require.ErrorIs(t, err, keyward.ErrClosed)

		rd = r.read(t)
		const d = "keyward.acquire.duration"
		for _, tc := range []struct {
			attrs []attribute.KeyValue
			n     uint64
			sum   float64
		}{
			{[]attribute.KeyValue{srcLock, op("try obtain"), outcome("obtained")}, 1, 0},
			{[]attribute.KeyValue{srcLock, op("try obtain"), outcome("not_obtained")}, 1, 0},
			{[]attribute.KeyValue{srcLock, op("obtain"), outcome("cancelled")}, 1, 2},
			{[]attribute.KeyValue{srcLock, op("obtain"), outcome("error"), keywardotel.AttrErrorType.String("invalid")}, 1, 0},
			{[]attribute.KeyValue{srcLock, op("try obtain"), outcome("error"), keywardotel.AttrErrorType.String("closed")}, 1, 0},
		} {
			n, sum := rd.count(d, tc.attrs...)
			assert.Equal(t, tc.n, n, "%v", tc.attrs)
			assert.Equal(t, tc.sum, sum, "%v", tc.attrs)
		}
		n, _ := rd.count(d)
		assert.EqualValues(t, 5, n, "five calls")
		for _, set := range rd.attrSets(d) {
			assert.NotContains(t, set, "keyward.key", "lock keys are not labelled by default")
			assert.Equal(t, strings.Contains(set, "outcome=error"), strings.Contains(set, "error.type="), set)
		}
		assert.Zero(t, rd.value("keyward.held", srcLock), "released")
		assert.Zero(t, rd.value("keyward.waiters", srcLock), "the cancelled wait ended")
		n, sum := rd.count("keyward.hold.duration", srcLock, keywardotel.AttrEnd.String("released"))
		assert.EqualValues(t, 1, n)
		assert.Equal(t, 3.0, sum, "held from the start to the release")
		assert.Zero(t, keywardotel.Holdings(r.obs))

		// The spans: one per call, with the whole key, the outcome and the fence; an error status only for errors.
		tries, obtains := r.ended("keyward.lock try obtain"), r.ended("keyward.lock obtain")
		require.Len(t, tries, 3)
		require.Len(t, obtains, 2)
		holder := tries[0]
		for _, s := range append(tries, obtains...) {
			k, _ := attr(s.Attributes(), keywardotel.AttrKey)
			src, _ := attr(s.Attributes(), keywardotel.AttrSource)
			oc, _ := attr(s.Attributes(), keywardotel.AttrOutcome)
			if s != obtains[1] {
				assert.Equal(t, "p:job", k.AsString(), "the whole key, with the prefix")
			}
			assert.Equal(t, "lock", src.AsString())
			if oc.AsString() == keywardotel.OutcomeError {
				assert.Equal(t, codes.Error, s.Status().Code, s.Name())
			} else {
				assert.Equal(t, codes.Unset, s.Status().Code, "%s %s is no error", s.Name(), oc.AsString())
			}
		}
		fence, ok := attr(holder.Attributes(), keywardotel.AttrFence)
		require.True(t, ok)
		assert.Equal(t, l.Fence(), fence.AsInt64())
		oc, _ := attr(tries[1].Attributes(), keywardotel.AttrOutcome)
		assert.Equal(t, "not_obtained", oc.AsString())
		require.Len(t, tries[1].Links(), 1, "the try that found the lock taken links to its holder")
		assert.Equal(t, holder.SpanContext(), tries[1].Links()[0].SpanContext)
		et, _ := attr(tries[2].Attributes(), keywardotel.AttrErrorType)
		assert.Equal(t, "closed", et.AsString())

		cancelled := obtains[0]
		oc, _ = attr(cancelled.Attributes(), keywardotel.AttrOutcome)
		assert.Equal(t, "cancelled", oc.AsString())
		wait, _ := attr(cancelled.Attributes(), keywardotel.AttrWait)
		assert.Equal(t, 2.0, wait.AsFloat64())
		assert.Equal(t, []string{"keyward.wait_started", "keyward.wait_ended"}, eventNames(cancelled))
		require.Len(t, cancelled.Links(), 1, "the waiter links to the holder")
		assert.Equal(t, holder.SpanContext(), cancelled.Links()[0].SpanContext)
		linkKind, _ := attr(cancelled.Links()[0].Attributes, keywardotel.AttrLink)
		assert.Equal(t, "holder", linkKind.AsString())
		et, _ = attr(obtains[1].Attributes(), keywardotel.AttrErrorType)
		assert.Equal(t, "invalid", et.AsString())
		assert.NotEmpty(t, obtains[1].Events(), "the error is recorded on the span")
	})
}

// A waiter that gets the lock handed over links to the span of the Do that held it; Do's own obtain is a child of
// Do's span; the waiters gauge goes up and back to zero.
func TestWaitForAHolderInDo(t *testing.T) {
	inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
		r := newRig(t)
		locks, err := lock.New(rdb, lock.WithObserver(r.obs))
		require.NoError(t, err)
		defer locks.Close()
		ctx := context.Background()

		inFn, release := make(chan struct{}), make(chan struct{})
		doErr := make(chan error)
		go func() {
			doErr <- locks.Do(ctx, "job", time.Minute, func(context.Context) error {
				close(inFn)
				<-release
				time.Sleep(2 * time.Second)
				return nil
			})
		}()
		<-inFn
		got := make(chan error)
		go func() {
			l, err := locks.Obtain(ctx, "job", time.Minute)
			if err == nil {
				time.Sleep(time.Second)
				err = l.Release(ctx)
			}
			got <- err
		}()
		synctest.Wait() // the waiter waits
		rd := r.read(t)
		assert.EqualValues(t, 1, rd.value("keyward.waiters", srcLock))
		assert.EqualValues(t, 1, rd.value("keyward.held", srcLock))
		close(release)
		require.NoError(t, <-doErr)
		require.NoError(t, <-got)

		rd = r.read(t)
		assert.Zero(t, rd.value("keyward.waiters", srcLock))
		assert.Zero(t, rd.value("keyward.held", srcLock))
		n, sum := rd.count("keyward.acquire.duration", srcLock, op("obtain"), outcome("obtained"))
		assert.EqualValues(t, 2, n, "Do's obtain and the waiter's")
		assert.Equal(t, 2.0, sum, "Do's obtain did not wait, the waiter waited 2 s")
		n, _ = rd.count("keyward.acquire.duration", op("do"))
		assert.Zero(t, n, "Do is not counted: its time includes fn's")
		n, sum = rd.count("keyward.hold.duration", srcLock)
		assert.EqualValues(t, 2, n)
		assert.Equal(t, 3.0, sum)

		dos, obtains := r.ended("keyward.lock do"), r.ended("keyward.lock obtain")
		require.Len(t, dos, 1)
		require.Len(t, obtains, 2)
		do := dos[0]
		own, waiter := obtains[0], obtains[1]
		assert.Equal(t, do.SpanContext().SpanID(), own.Parent().SpanID(), "Do's obtain is a child of Do")
		assert.False(t, waiter.Parent().IsValid(), "the waiter's span is a root")
		require.Len(t, waiter.Links(), 1)
		assert.Equal(t, do.SpanContext(), waiter.Links()[0].SpanContext, "linked to the holder's Do")
		wait, _ := attr(waiter.Attributes(), keywardotel.AttrWait)
		assert.Equal(t, 2.0, wait.AsFloat64())
		assert.Equal(t, []string{"keyward.wait_started", "keyward.wait_ended"}, eventNames(waiter))
		fence, _ := attr(do.Attributes(), keywardotel.AttrFence)
		ownFence, _ := attr(own.Attributes(), keywardotel.AttrFence)
		assert.Positive(t, fence.AsInt64())
		assert.Equal(t, ownFence, fence, "Do's span has the fence of the lock it held")
		assert.Contains(t, eventNames(do), "keyward.released", "the release on Do's context is an event of Do's span")
		assert.Zero(t, keywardotel.Holdings(r.obs))
	})
}

// A lock lost at its validity deadline (refreshes failing) and one found taken are counted by reason; failed
// refreshes are counted; a Released after the Lost does not count the lock off twice.
func TestLostAndRefreshFailures(t *testing.T) {
	inBubble(t, func(t *testing.T, m *miniredis.Miniredis, rdb *redis.Client) {
		r := newRig(t, keywardotel.WithKeyLabel(keywardotel.KeyAsIs))
		locks, err := lock.New(rdb, lock.WithObserver(r.obs))
		require.NoError(t, err)
		defer locks.Close()
		ctx := context.Background()

		// Expired: refreshes fail until the deadline.
		refreshed, err := locks.TryObtain(ctx, "refreshed", time.Second, lock.WithAutoRefresh())
		require.NoError(t, err)
		m.SetError("LOADING Redis is loading the dataset in memory")
		<-refreshed.Lost()
		synctest.Wait()
		m.SetError("")
		rd := r.read(t)
		assert.Positive(t, rd.value("keyward.refresh.failures", srcLock, key("refreshed")))
		assert.EqualValues(t, 1, rd.value("keyward.lost", srcLock, key("refreshed"), keywardotel.AttrReason.String("expired")))
		assert.Zero(t, rd.value("keyward.held", srcLock))
		require.ErrorIs(t, refreshed.Release(ctx), keyward.ErrLost)

		// Expired without auto-refresh: the key is still there when the holder releases it after the deadline,
		// so the release succeeds on the server (Released without error) after the Lost.
		late, err := locks.TryObtain(ctx, "late", 2*time.Second)
		require.NoError(t, err)
		<-late.Lost()
		synctest.Wait() // the timer's goroutine tells the loss after it closed Lost
		require.ErrorIs(t, late.Release(ctx), keyward.ErrLost)

		// Taken: the key was deleted, and a call found it gone.
		taken, err := locks.TryObtain(ctx, "taken", time.Minute)
		require.NoError(t, err)
		m.Del("taken")
		_, err = taken.TTL(ctx)
		require.ErrorIs(t, err, keyward.ErrLost)
		require.ErrorIs(t, taken.Release(ctx), keyward.ErrLost)

		rd = r.read(t)
		assert.EqualValues(t, 1, rd.value("keyward.lost", key("late"), keywardotel.AttrReason.String("expired")))
		assert.EqualValues(t, 1, rd.value("keyward.lost", key("taken"), keywardotel.AttrReason.String("taken")))
		assert.EqualValues(t, 3, rd.value("keyward.lost"))
		assert.Zero(t, rd.value("keyward.held", srcLock), "each lock counted off once")
		n, _ := rd.count("keyward.hold.duration", keywardotel.AttrEnd.String("lost"))
		assert.EqualValues(t, 3, n)
		n, _ = rd.count("keyward.hold.duration", keywardotel.AttrEnd.String("released"))
		assert.Zero(t, n, "the releases after the losses are not holds of their own")
		assert.Zero(t, keywardotel.Holdings(r.obs))
	})
}

// The default key label leaves lock keys out and keeps semaphore and election names; KeyAsIs, KeyPrefix and a
// function of the user's label as they say.
func TestKeyLabels(t *testing.T) {
	for _, tc := range []struct {
		name  string
		label func(source, key string) string
		want  []string
	}{
		{"default", nil, []string{"keyward.source=lock"}},
		{"as is", keywardotel.KeyAsIs, []string{"keyward.key=cache:user:42,keyward.source=lock",
			"keyward.key=cache:user:43,keyward.source=lock", "keyward.key=jobs,keyward.source=lock"}},
		{"prefix", keywardotel.KeyPrefix(":"), []string{"keyward.key=cache:user,keyward.source=lock",
			"keyward.source=lock"}},
		{"custom", func(source, key string) string { return source + "/" + strings.ToUpper(key[:1]) },
			[]string{"keyward.key=lock/C,keyward.source=lock", "keyward.key=lock/J,keyward.source=lock"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inBubble(t, func(t *testing.T, _ *miniredis.Miniredis, rdb *redis.Client) {
				var opts []keywardotel.Option
				if tc.label != nil {
					opts = append(opts, keywardotel.WithKeyLabel(tc.label))
				}
				r := newRig(t, opts...)
				locks, err := lock.New(rdb, lock.WithObserver(r.obs))
				require.NoError(t, err)
				defer locks.Close()
				for _, k := range []string{"cache:user:42", "cache:user:43", "jobs"} {
					l, err := locks.TryObtain(context.Background(), k, time.Minute)
					require.NoError(t, err)
					require.NoError(t, l.Release(context.Background()))
				}
				rd := r.read(t)
				assert.Equal(t, tc.want, rd.attrSets("keyward.held"))
				for _, s := range r.spans.Ended() {
					k, _ := attr(s.Attributes(), keywardotel.AttrKey)
					assert.Contains(t, []string{"cache:user:42", "cache:user:43", "jobs"}, k.AsString(),
						"spans carry the whole key")
				}
			})
		})
	}
	assert.Equal(t, "pool", keywardotel.DefaultKeyLabel("semaphore", "pool"))
	assert.Equal(t, "leader", keywardotel.DefaultKeyLabel("election", "leader"))
	assert.Equal(t, "", keywardotel.DefaultKeyLabel("redlock", "jobs"))
	assert.Equal(t, "pool", keywardotel.KeyPrefix(":")("semaphore", "pool"))
	assert.Equal(t, "", keywardotel.KeyPrefix("")("lock", "a:b"))
}

func TestNewRejectsNilOptions(t *testing.T) {
	for _, opt := range []keywardotel.Option{keywardotel.WithMeterProvider(nil),
		keywardotel.WithTracerProvider(nil), keywardotel.WithKeyLabel(nil)} {
		_, err := keywardotel.New(opt)
		assert.ErrorIs(t, err, keyward.ErrInvalid)
	}
	obs, err := keywardotel.New() // the global providers
	require.NoError(t, err)
	var _ keyward.CallObserver = obs
}
