package cli

import (
	"context"
	"flag"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/internal/lockopt"
	"github.com/keyward/keyward/lock"
)

// lockFlags are the flags of the sub-commands that take locks (run, elect): where, and how long.
type lockFlags struct {
	conn    connFlags
	ttl     time.Duration
	nodes   string
	grace   time.Duration // between SIGTERM and SIGKILL to COMMAND, when the lock is lost
	verbose bool
}

func (f *lockFlags) register(fs *flag.FlagSet) {
	f.conn.register(fs)
	f.ttl = time.Minute
	newDuration(fs, &f.ttl, "ttl", "")
	fs.StringVar(&f.nodes, "nodes", "", "")
	f.grace = 5 * time.Second
	newDuration(fs, &f.grace, "grace", "")
	fs.BoolVar(&f.verbose, "verbose", false, "")
	fs.BoolVar(&f.verbose, "v", false, "")
}

// checkCommand checks the positional arguments NAME [--] COMMAND [ARGS] of a command that runs COMMAND under a
// lock; what names NAME ("KEY", "NAME") and synopsis is the command's usage line.
func checkCommand(pos []string, what, synopsis string) error {
	switch {
	case len(pos) == 0:
		return usagef("missing %s and COMMAND: %s", what, synopsis)
	case pos[0] == "":
		return usagef("empty %s", what)
	case len(pos) == 1:
		return usagef("missing COMMAND after %s %q: %s", what, pos[0], synopsis)
	case pos[1] == "":
		return usagef("empty COMMAND")
	}
	return nil
}

// checkKeys checks the positional arguments KEY... of a command that looks at locks; synopsis is its usage line.
func checkKeys(keys []string, synopsis string) error {
	if len(keys) == 0 {
		return usagef("missing KEY: %s", synopsis)
	}
	for _, k := range keys {
		if k == "" {
			return usagef("empty KEY")
		}
	}
	return nil
}

// checkTTL refuses a --ttl that no lock can have.
func (f *lockFlags) checkTTL() error {
	if f.ttl <= 0 {
		return usagef("--ttl must be more than 0")
	}
	if _, err := lockopt.Defaults().TTL(f.ttl); err != nil {
		return usagef("--ttl %v: %v", f.ttl, strings.TrimPrefix(err.Error(), "keyward: "))
	}
	return nil
}

// backend is where locks are taken: one Redis through lock/, or a quorum of independent ones through redlock/.
type backend struct {
	// locker takes the locks, with auto-refresh.
	locker keyward.Locker
	// rdb is the one deployment (nil for a quorum): status lookups for messages.
	rdb redis.UniversalClient
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
	rdb, _, err := f.conn.connect(ctx, env)
	if err != nil {
		return nil, err
	}
	locks, err := lock.New(rdb, lock.WithPrefix(f.conn.prefix))
	if err != nil {
		_ = rdb.Close()
		return nil, err
	}
	var opts []lock.ObtainOption
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
