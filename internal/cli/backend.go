package cli

import (
	"context"
	"flag"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/lock"
)

// lockFlags are the flags of the sub-commands that take locks (run, elect): where, and how long.
type lockFlags struct {
	conn  connFlags
	ttl   time.Duration
	nodes string
}

func (f *lockFlags) register(fs *flag.FlagSet) {
	f.conn.register(fs)
	f.ttl = time.Minute
	newDuration(fs, &f.ttl, "ttl", "")
	fs.StringVar(&f.nodes, "nodes", "", "")
}

// backend is where locks are taken: one Redis through lock/, or a quorum of independent ones through redlock/.
type backend struct {
	// locker takes the locks, with auto-refresh.
	locker keyward.Locker
	// rdb is the single server (nil for a quorum): status lookups for messages.
	rdb *redis.Client
	// prefix goes in front of lock names to make their Redis keys.
	prefix string
	// close closes the clients.
	close func()
}

// open connects to the backend the flags name. With autoRefresh, the locks it takes are kept alive until
// released (run); without, their holder renews them (elect: the election does).
func (f *lockFlags) open(ctx context.Context, env Env, autoRefresh bool) (*backend, error) {
	if f.nodes != "" {
		return f.openQuorum(ctx, env, autoRefresh)
	}
	rdb, err := f.conn.connect(ctx, env)
	if err != nil {
		return nil, err
	}
	locks, err := lock.New(rdb, lock.WithPrefix(f.conn.prefix))
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	var opts []lock.Option
	if autoRefresh {
		opts = append(opts, lock.WithAutoRefresh())
	}
	return &backend{
		locker: locks.Locker(opts...),
		rdb:    rdb,
		prefix: f.conn.prefix,
		close: func() {
			_ = locks.Close()
			_ = rdb.Close()
		},
	}, nil
}

// holder describes who holds key, for messages; "" when unknown.
func (b *backend) holder(ctx context.Context, key string) string {
	if b.rdb == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := snapshot(ctx, b.rdb, key, b.prefix+key)
	if err != nil || s.State == stateFree {
		return ""
	}
	return s.describe()
}

// splitNodes splits the --nodes list.
func splitNodes(list string) []string {
	var out []string
	for _, n := range strings.Split(list, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}
