package redistest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/acl"
)

// User creates (or resets) the ACL user name on s with rule, the arguments of ACL SETUSER after the name, through
// an admin client, and returns a client for it built with go-redis's default options and password, closed when
// the test ends.
func (s *Server) User(t testing.TB, name, password string, rule []string) *redis.Client {
	t.Helper()
	args := []any{"ACL", "SETUSER", name}
	for _, a := range rule {
		args = append(args, a)
	}
	require.NoError(t, s.Client(t).Do(context.Background(), args...).Err())
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr(), Username: name, Password: password})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// DocumentedUser creates (or resets) the documented user (acl.User, with acl.Password) on s with rule, a documented
// rule such as acl.Lock, and returns a client for it built with go-redis's default options, with hooks added,
// closed when the test ends.
func (s *Server) DocumentedUser(t testing.TB, rule string, hooks ...redis.Hook) *redis.Client {
	t.Helper()
	rdb := s.User(t, acl.User, acl.Password, acl.Args(rule))
	for _, h := range hooks {
		rdb.AddHook(h)
	}
	return rdb
}

// OpenUser creates (or resets) the ACL user name on s, allowed every command, key and channel, and returns a client
// for it built with go-redis's default options and password, closed when the test ends. Tests take its channels
// away with RevokeChannels while it waits, and give them back with GrantChannels.
func (s *Server) OpenUser(t testing.TB, name, password string) *redis.Client {
	t.Helper()
	return s.User(t, name, password, []string{"on", ">" + password, "~*", "+@all", "resetchannels", "&*"})
}

// ChannelUser creates (or resets) the ACL user name on s, allowed every command and key but only the channels
// given (ACL channel rules such as "&keyward:probe:*"; none: no channel at all), and returns a client for it built
// with go-redis's default options and password "pw", closed when the test ends.
func (s *Server) ChannelUser(t testing.TB, name string, channels ...string) *redis.Client {
	t.Helper()
	return s.User(t, name, "pw", append([]string{"on", ">pw", "~*", "+@all", "resetchannels"}, channels...))
}

// RevokeChannels takes from the ACL user name every channel but keyward's probe channels ("keyward:probe:*"): the
// server closes the subscriptions it holds, and refuses new ones.
func (s *Server) RevokeChannels(t testing.TB, name string) {
	t.Helper()
	require.NoError(t, s.Client(t).Do(context.Background(), "ACL", "SETUSER", name, "resetchannels",
		"&keyward:probe:*").Err())
}

// GrantChannels gives the ACL user name every channel again.
func (s *Server) GrantChannels(t testing.TB, name string) {
	t.Helper()
	require.NoError(t, s.Client(t).Do(context.Background(), "ACL", "SETUSER", name, "&*").Err())
}

// Snapshot returns every key of database 0 with its serialized value (DUMP, without its ttl), read through an
// admin client: tests compare two snapshots to show that a refused call left nothing behind.
func (s *Server) Snapshot(t testing.TB) map[string]string {
	t.Helper()
	ctx := context.Background()
	admin := s.Client(t)
	names, err := admin.Keys(ctx, "*").Result()
	require.NoError(t, err)
	out := make(map[string]string, len(names))
	for _, k := range names {
		v, err := admin.Dump(ctx, k).Result()
		if err == redis.Nil {
			continue // expired meanwhile
		}
		require.NoError(t, err)
		out[k] = v
	}
	return out
}

// A Step is one call of a feature's main paths, made as an ACL user.
type Step struct {
	Name string
	// Atomic: a single call, on keys nobody else changes meanwhile, whose refusal must leave the keys as they were.
	Atomic bool
	Run    func(ctx context.Context) error
}

// RunSteps runs steps in order, each within d, until one fails, and returns its name and error. It checks what a
// step refused with an error matching keyward.ErrNoPermission leaves: an atomic step nothing at all; and after any
// failed step, nobody in a Redis queue ("*:queue"), unless inLine (a user refused ZREM cannot leave a queue it
// joined; its place expires with the queue).
func RunSteps(t testing.TB, s *Server, d time.Duration, steps []Step, inLine bool) (string, error) {
	t.Helper()
	for _, st := range steps {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		before := s.Snapshot(t)
		err := st.Run(ctx)
		cancel()
		if err == nil {
			continue
		}
		if st.Atomic && errors.Is(err, keyward.ErrNoPermission) {
			assert.Equal(t, before, s.Snapshot(t), "%s: refused, it left the keys as they were", st.Name)
		}
		if !inLine {
			admin := s.Client(t)
			queues, qerr := admin.Keys(context.Background(), "*:queue").Result()
			require.NoError(t, qerr)
			for _, q := range queues {
				assert.Zero(t, admin.ZCard(context.Background(), q).Val(), "%s: nobody is left in line in %s", st.Name, q)
			}
		}
		return st.Name, err
	}
	return "", nil
}

// Call returns an atomic Step.
func Call(name string, run func(ctx context.Context) error) Step {
	return Step{Name: name, Atomic: true, Run: run}
}

// Scene returns a Step of several calls, or of calls by more than one client.
func Scene(name string, run func(ctx context.Context) error) Step {
	return Step{Name: name, Run: run}
}

// Releaser is what a Handover or a GiveUp step takes and gives back: a lock, a permit.
type Releaser interface {
	Release(ctx context.Context) error
}

// Handover returns the Step "wait for another process's release": take gets what another process then waits for
// with wait; once waiting is closed (the waiter is subscribed and in line), the first releases it, and the step
// ends when the waiter got it and released it in turn. With a long ttl, only the release's message wakes the waiter
// within the step's time.
func Handover[R Releaser](take, wait func(ctx context.Context) (R, error), waiting <-chan struct{}) Step {
	return Scene("wait for another process's release", func(ctx context.Context) error {
		held, err := take(ctx)
		if err != nil {
			return err
		}
		wctx, cancelWait := context.WithCancel(ctx)
		defer cancelWait()
		done := make(chan error, 1)
		go func() {
			got, err := wait(wctx)
			if err == nil {
				err = got.Release(ctx)
			}
			done <- err
		}()
		select {
		case <-waiting:
		case err := <-done:
			return errors.Join(err, held.Release(ctx))
		}
		if err := held.Release(ctx); err != nil {
			cancelWait() // the waiter would wait for the holder's ttl
			return errors.Join(err, <-done)
		}
		return <-done
	})
}

// GiveUp returns the Step "give up waiting": take gets what another process then waits for with wait; once
// waiting is closed (the waiter is subscribed and in line), the waiter gives up (its ctx is cancelled), and then
// the first releases what it took. A wait that ends with context.Canceled is what the step expects.
func GiveUp[R Releaser](take, wait func(ctx context.Context) (R, error), waiting <-chan struct{}) Step {
	return Scene("give up waiting", func(ctx context.Context) error {
		held, err := take(ctx)
		if err != nil {
			return err
		}
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := wait(wctx)
			done <- err
		}()
		select {
		case <-waiting:
			cancel()
			if err = <-done; errors.Is(err, context.Canceled) {
				err = nil
			}
		case err = <-done:
		}
		cancel()
		return errors.Join(err, held.Release(ctx))
	})
}
