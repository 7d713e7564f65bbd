package lock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/batch"
	"github.com/keyward/keyward/internal/bound"
	"github.com/keyward/keyward/internal/keys"
	"github.com/keyward/keyward/internal/lease"
	"github.com/keyward/keyward/internal/lockopt"
	"github.com/keyward/keyward/internal/script"
	"github.com/keyward/keyward/internal/token"
	"github.com/keyward/keyward/internal/watch"
)

// A Client takes locks on one Redis deployment through the caller's client. It is safe for concurrent use and
// meant to be kept for the life of the program. Its waiters share the client's pub/sub connection with every
// other user of the same client (other Clients, semaphores, elections, keyspace.Watchers): it is opened by the
// first wait, and closed when the last of them is closed.
type Client struct {
	client redis.UniversalClient // the caller's client
	// rdb runs the scripts on client so that they return when their ctx ends, whatever client's options
	// (internal/bound): a refresh must not keep a lock "held" past its deadline on a server that stopped answering.
	rdb     redis.Scripter
	bounded *bound.Client
	opts    lockopt.Settings
	publish script.Publish
	id      string // this Client's place name in the Redis queues of the locks it waits for

	watcher *watch.Handle // the Client's use of the pub/sub connection of its client, shared with the other users

	mu     sync.Mutex
	queues map[string]*queue // by lock key

	tries, failedTries atomic.Int64
	// batch sends the plain tries and releases of concurrent goroutines in one pipeline (nil on a Cluster).
	batch *batch.Batcher
	// fast is the state of the plain try without a script (script.AcquireFast): fastUnknown until the acquire
	// script answered once, then fastOn, or fastOff for a server without SET NX GET or a Cluster.
	fast atomic.Int32
	// txAllowed: the user may run MULTI and EXEC (see Lock.checkTx).
	txAllowed atomic.Bool
}

// New returns a Client that takes locks through rdb, with opts as the defaults for every lock. It returns an
// ErrInvalid error for a nil rdb (also a typed nil such as a nil *redis.Client) or an invalid option.
func New(rdb redis.UniversalClient, opts ...Option) (*Client, error) {
	if err := lockopt.CheckClient(rdb); err != nil {
		return nil, err
	}
	o, err := lockopt.Defaults().With(opts...)
	if err != nil {
		return nil, err
	}
	b := bound.New(rdb)
	c := &Client{client: rdb, rdb: b.Scripter(), bounded: b, opts: o, publish: script.PublishPlain, id: token.New(""),
		queues: map[string]*queue{}}
	if single, ok := rdb.(*redis.Client); ok {
		c.batch = batch.New(single)
	} else {
		c.fast.Store(fastOff) // a Cluster would send TIME to any node
	}
	c.watcher = watch.Attach(rdb, nil)
	return c, nil
}

// The states of Client.fast.
const (
	fastUnknown = iota
	fastOn
	fastOff
)

// Close ends the Client's use of its client's pub/sub connection (the connection is closed when no other Client,
// semaphore, election or keyspace.Watcher of the same client uses it); Obtain calls still waiting return an
// error matching ErrClosed. Held locks are not released.
func (c *Client) Close() error {
	c.mu.Lock()
	for _, q := range c.queues {
		if len(q.waiters) == 0 && q.holder == nil {
			c.dropLocked(q) // a subscription kept for watchLinger
		}
	}
	c.mu.Unlock()
	return c.watcher.Close()
}

// Stats are counts of a Client's work, for monitoring and benchmarks.
type Stats struct {
	// Tries counts acquire attempts sent to Redis (TryObtain, and Obtain's tries).
	Tries int64
	// FailedTries counts those that found the lock taken.
	FailedTries int64
}

// Stats returns the Client's counts so far.
func (c *Client) Stats() Stats {
	return Stats{Tries: c.tries.Load(), FailedTries: c.failedTries.Load()}
}

// TryObtain takes the lock key for ttl if it is free, in one round trip. It returns an error matching
// ErrNotObtained when another holder has it, and never waits.
//
// If the attempt fails without an answer from the server (a timeout, a dropped connection, a cancelled ctx),
// the lock may have been taken on the server all the same: TryObtain then sends a best-effort release for its
// token, so the key is not left behind, and returns the error, never a lock.
func (c *Client) TryObtain(ctx context.Context, key string, ttl time.Duration, opts ...Option) (*Lock, error) {
	a, err := c.newAttempt(ctx, key, ttl, opts)
	if err != nil {
		return nil, err
	}
	l, _, err := a.try(ctx)
	return l, err
}

// attempt is one caller's attempt to take a lock, with the value it will store.
type attempt struct {
	c     *Client
	key   string
	names keys.Names
	value string
	ttl   time.Duration
	opts  lockopt.Settings
}

func (c *Client) newAttempt(ctx context.Context, key string, ttl time.Duration, opts []Option) (*attempt, error) {
	o, err := c.opts.With(opts...)
	if err != nil {
		return nil, err
	}
	name, err := o.Key(key)
	if err != nil {
		return nil, err
	}
	if ttl, err = o.TTL(ttl); err != nil {
		return nil, fmt.Errorf("lock %q: %w", key, err)
	}
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return &attempt{
		c:     c,
		key:   key,
		names: keys.For(name),
		value: token.New(o.Metadata),
		ttl:   ttl,
		opts:  o,
	}, nil
}

// try tries to take the lock once, without joining the queue. Without the lock, it returns how long the holder
// may keep it, when it knows.
func (a *attempt) try(ctx context.Context) (*Lock, time.Duration, error) {
	start := time.Now()
	a.c.tries.Add(1)
	res, err := a.acquire(ctx)
	if err != nil {
		if !script.IsReply(err) || res.OK {
			a.cleanUp(ctx)
		}
		return nil, 0, fmt.Errorf("lock %q: acquire: %w", a.key, err)
	}
	if !res.OK {
		a.c.failedTries.Add(1)
		return nil, res.PTTL, fmt.Errorf("lock %q: %w", a.key, keyward.ErrNotObtained)
	}
	return a.c.newLock(a, start, res.Fence), 0, nil
}

// acquire runs the plain try: SET NX GET, TIME and GET without a script (script.AcquireFast) once the Client knows the
// server has them, else the acquire script. The first try of a Client is the script's, which also shows that the
// user may run scripts and TIME before the Client takes a lock it could not release: a user refused EVALSHA gets
// the script's NOPERM, with nothing written.
func (a *attempt) acquire(ctx context.Context) (script.Acquired, error) {
	if a.c.fast.Load() == fastOn {
		ans, err := batch.Call(ctx, a.c.batch, func(p redis.Pipeliner) func() tried {
			try := script.QueueFastTry(ctx, p, a.names, a.value, a.ttl)
			return func() tried { return triedOf(try.Result()) }
		}, func() tried {
			return bound.Do(a.c.bounded, ctx, func(rdb redis.UniversalClient) tried {
				return triedOf(script.AcquireFast(ctx, rdb, a.names, a.value, a.ttl))
			}, func(err error) tried { return tried{err: err} })
		})
		if err == nil {
			err = ans.err
		}
		if !errors.Is(err, script.ErrNoFastPath) {
			return ans.res, err
		}
		a.c.fast.Store(fastOff)
	}
	res, err := script.Acquire(ctx, a.c.rdb, a.names, a.value, a.ttl)
	if err == nil {
		a.c.fast.CompareAndSwap(fastUnknown, fastOn)
	}
	return res, err
}

// tried is a plain try's answer.
type tried struct {
	res script.Acquired
	err error
}

func triedOf(res script.Acquired, err error) tried { return tried{res, err} }

// releaseNext runs the release script, in the pipeline of the Client's concurrent calls when others are in
// flight (see internal/batch).
func (c *Client) releaseNext(ctx context.Context, l *Lock, n script.Next) (script.Outcome, int64, error) {
	alone := func() released { return releasedOf(script.ReleaseNext(ctx, c.rdb, l.names, l.value, c.publish, n)) }
	if c.batch == nil {
		r := alone()
		return r.out, r.fence, r.err
	}
	r, err := batch.Call(ctx, c.batch, func(p redis.Pipeliner) func() released {
		q := script.QueueRelease(ctx, p, l.names, l.value, c.publish, n)
		return func() released { return releasedOf(q.Result()) }
	}, alone)
	switch {
	case err != nil:
		return script.NotHeld, 0, err
	case errors.Is(r.err, script.ErrNoScript):
		r = alone() // loads the script
	}
	return r.out, r.fence, r.err
}

// released is a release's answer.
type released struct {
	out   script.Outcome
	fence int64
	err   error
}

func releasedOf(out script.Outcome, fence int64, err error) released {
	return released{out, fence, err}
}

// cleanUp releases the lock in case an acquire whose answer was lost did take it. It uses a context of its own,
// since ctx may be what ended the acquire.
func (a *attempt) cleanUp(ctx context.Context) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), min(a.ttl, 2*time.Second))
	defer cancel()
	_, _ = script.Release(cctx, a.c.rdb, a.names, a.value, a.c.publish)
}

func (c *Client) newLock(a *attempt, start time.Time, fence int64) *Lock {
	l := &Lock{c: c, key: a.key, names: a.names, value: a.value, fence: fence, ttl: a.ttl}
	l.lease = lease.New(lease.Config{
		Start:       start,
		TTL:         a.ttl,
		Drift:       a.opts.Drift,
		AutoRefresh: a.opts.AutoRefresh,
		Ops: lease.Ops{
			Refresh: func(ctx context.Context, ttl time.Duration) (bool, error) {
				return script.Refresh(ctx, c.rdb, l.names, l.value, ttl)
			},
			Release: func(ctx context.Context) (bool, error) {
				return c.release(ctx, l)
			},
		},
	})
	return l
}
