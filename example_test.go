package keyward_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/lock"
	"github.com/keyward/keyward/redlock"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newLocker is the one place an application decides between one Redis and a quorum of independent ones: the
// code that takes locks sees only a keyward.Locker.
func newLocker(nodes []redis.UniversalClient) (keyward.Locker, func() error, error) {
	if len(nodes) == 1 {
		c, err := lock.New(nodes[0])
		if err != nil {
			return nil, nil, err
		}
		return c.Locker(), c.Close, nil
	}
	c, err := redlock.New(nodes)
	if err != nil {
		return nil, nil, err
	}
	return c.Locker(), c.Close, nil
}

// The same job runs under a lock on one Redis and under a lock on three, chosen by configuration.
func Example() {
	ctx := context.Background()
	for _, n := range []int{1, 3} {
		var nodes []redis.UniversalClient
		for range n {
			srv, _ := miniredis.Run() // embedded servers for the example
			defer srv.Close()
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			defer rdb.Close()
			nodes = append(nodes, rdb)
		}
		locker, closeLocker, err := newLocker(nodes)
		if err != nil {
			fmt.Println(err)
			return
		}
		err = locker.Do(ctx, "nightly-report", 30*time.Second, func(ctx context.Context) error {
			// ctx is cancelled, with a cause matching keyward.ErrLost, if the lock cannot be kept.
			fmt.Printf("%d node(s): the report runs under the lock\n", n)
			return nil
		})
		if err != nil {
			fmt.Println(err)
		}
		_ = closeLocker()
	}
	// Output:
	// 1 node(s): the report runs under the lock
	// 3 node(s): the report runs under the lock
}
