package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/keyward/keyward"
)

// defaultURL is the server used without --redis and $REDIS_URL, as redis-cli does.
const defaultURL = "redis://localhost:6379"

// connFlags are the flags of every sub-command that talks to Redis.
type connFlags struct {
	url     string
	prefix  string
	timeout time.Duration
	tls     tlsFiles
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "redis", "", "")
	fs.StringVar(&c.prefix, "prefix", "", "")
	c.timeout = 5 * time.Second
	newDuration(fs, &c.timeout, "timeout", "")
	c.registerTLS(fs)
}

func (c *connFlags) registerTLS(fs *flag.FlagSet) {
	fs.StringVar(&c.tls.ca, "tls-ca-file", "", "")
	fs.StringVar(&c.tls.cert, "tls-cert-file", "", "")
	fs.StringVar(&c.tls.key, "tls-key-file", "", "")
}

const connHelp = `  --redis URL      the Redis deployment; default $REDIS_URL, else ` + defaultURL + `:
                     redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]        one server (rediss:// for TLS)
                     unix:///path/to/redis.sock                         one server, on a socket
                     redis+cluster://[[USER]:PASSWORD@]HOST:PORT,HOST:PORT…
                                                                        a Cluster, through any of its nodes
                     redis+sentinel://[[USER]:PASSWORD@]HOST:PORT,HOST:PORT…/MASTER[/DB]
                                                                        the master of a Sentinel group, through
                                                                        its sentinels (default port 26379)
                   rediss+cluster:// and rediss+sentinel:// for TLS; options go after "?" (dial_timeout=3s;
                   sentinel_username=, sentinel_password= when the sentinels have their own)
  --prefix P       put P in front of every lock name, as lock.WithPrefix does (default none)
  --timeout D      how long to wait for Redis to connect and answer (default 5s)
  --tls-ca-file F  trust the CA certificates in PEM file F for rediss URLs (default: the system's)
  --tls-cert-file F, --tls-key-file F
                   present this client certificate and key (PEM) for rediss URLs
`

// redisURL returns the URL to use: --redis, else $REDIS_URL, else the default.
func (c *connFlags) redisURL(env Env) string {
	switch {
	case c.url != "":
		return c.url
	case env.Getenv("REDIS_URL") != "":
		return env.Getenv("REDIS_URL")
	}
	return defaultURL
}

// target parses raw, a URL of the flags or one of --nodes.
func (c *connFlags) target(raw string) (*target, error) {
	return parseTarget(raw, c.timeout, c.tls)
}

// connect returns a client for the Redis URL of the flags, once the deployment has answered.
func (c *connFlags) connect(ctx context.Context, env Env) (redis.UniversalClient, *target, error) {
	t, err := c.target(c.redisURL(env))
	if err != nil {
		return nil, nil, err
	}
	rdb := t.client()
	if err := ping(ctx, rdb, t, c.timeout); err != nil {
		_ = rdb.Close()
		return nil, nil, err
	}
	return rdb, t, nil
}

// ping checks that the deployment answers, and explains in an operator's words why not: every master of a
// Cluster, the master a Sentinel group names. A single server that turns out to be a Cluster node is refused,
// since only the keys of its own slots would work.
func ping(ctx context.Context, rdb redis.UniversalClient, t *target, timeout time.Duration) error {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	where := t.where
	var err error
	switch r := rdb.(type) {
	case *redis.ClusterClient:
		err = r.ForEachMaster(pctx, func(ctx context.Context, node *redis.Client) error {
			if err := node.Ping(ctx).Err(); err != nil {
				return &nodeError{addr: node.Options().Addr, err: err}
			}
			return nil
		})
		var ne *nodeError
		if errors.As(err, &ne) {
			where, err = "the Cluster's master at "+ne.addr, ne.err
		}
	default:
		if t.failover != nil {
			// Its own client, which does not retry: go-redis retries a failed master lookup for seconds.
			opt := *t.failover
			opt.MaxRetries = -1
			rdb = redis.NewFailoverClient(&opt)
			defer rdb.Close()
		}
		err = rdb.Ping(pctx).Err()
	}
	if err == nil && t.single != nil {
		err = notACluster(pctx, rdb, t)
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return exitWith(ExitUnavailable, context.Cause(ctx))
	}
	return explainConnect(err, t, where, timeout)
}

// nodeError is the failure of one node of a Cluster.
type nodeError struct {
	addr string
	err  error
}

func (e *nodeError) Error() string { return e.addr + ": " + e.err.Error() }
func (e *nodeError) Unwrap() error { return e.err }

// errIsCluster is returned by ping for a single-server URL that names a Cluster node.
var errIsCluster = errors.New("a Cluster node")

// notACluster refuses a Cluster node named by a single-server URL. A server whose ACL user may not run INFO
// passes: a key of another node's slot then fails with MOVED, which explain turns into the same advice.
func notACluster(ctx context.Context, rdb redis.UniversalClient, t *target) error {
	info, err := rdb.Info(ctx, "cluster").Result()
	if err != nil || !strings.Contains(info, "cluster_enabled:1") {
		return nil
	}
	return errIsCluster
}

// explainConnect turns the failure of ping into a message and an exit status.
func explainConnect(err error, t *target, where string, timeout time.Duration) error {
	var reply redis.Error
	isReply := errors.As(err, &reply)
	msg := ""
	if isReply {
		msg = reply.Error()
	}
	switch {
	case errors.Is(err, errIsCluster):
		return exitWith(ExitUsage, fmt.Errorf("%s is a Cluster node: use a redis+cluster://%s URL (each key "+
			"lives on the master of its slot)", where, t.single.Addr))
	case strings.HasPrefix(msg, "NOAUTH"):
		return exitWith(ExitNoPermission, fmt.Errorf("%s requires a password: put it in the URL, "+
			"redis://:PASSWORD@HOST:PORT (or redis://USER:PASSWORD@… for an ACL user)", where))
	case strings.HasPrefix(msg, "WRONGPASS"):
		return exitWith(ExitNoPermission, fmt.Errorf("%s refused the user name or password (%v)", where, err))
	case strings.HasPrefix(msg, "NOPERM"):
		return exitWith(ExitNoPermission, fmt.Errorf("%s: the ACL user may not run PING (%v)", where, err))
	case strings.Contains(msg, "cluster support disabled"):
		return exitWith(ExitUsage, fmt.Errorf("%s: not a Cluster (%v): use a redis:// URL", strings.Join(t.cluster.Addrs, ","), err))
	case t.failover != nil && strings.Contains(err.Error(), "sentinels specified in configuration are unreachable"):
		return explainSentinel(err, t, timeout)
	case isReply:
		return exitWith(ExitUnavailable, fmt.Errorf("%s answered with an error: %v", where, err))
	}
	hint := ""
	if t.tlsConfig() != nil {
		// A plain server either waits for the rest of the handshake or answers it with an error reply.
		hint = " (the URL asks for TLS, rediss://: does the server speak TLS on that port?)"
	}
	var unknownCA x509.UnknownAuthorityError
	var badName x509.HostnameError
	switch {
	case errors.As(err, &unknownCA):
		hint = " (the server's certificate is signed by a CA this system does not trust: --tls-ca-file FILE names the CA)"
	case errors.As(err, &badName):
		hint = " (the server's certificate is not for the host name of the URL)"
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return exitWith(ExitUnavailable, fmt.Errorf("no answer from %s within %v%s", where, timeout, hint))
	}
	return exitWith(ExitUnavailable, fmt.Errorf("cannot reach %s: %v%s", where, err, hint))
}

// explainSentinel explains why no sentinel named the master.
func explainSentinel(err error, t *target, timeout time.Duration) error {
	name, sentinels := t.failover.MasterName, strings.Join(t.failover.SentinelAddrs, ",")
	var reply redis.Error
	switch {
	case errors.Is(err, redis.Nil):
		return exitWith(ExitUsage, fmt.Errorf("the sentinels at %s know no master named %q", sentinels, name))
	case errors.As(err, &reply) && strings.Contains(reply.Error(), "unknown command"):
		return exitWith(ExitUsage, fmt.Errorf("%s: not a sentinel (%v): a redis+sentinel:// URL lists sentinels "+
			"(port 26379 by default), not Redis servers", sentinels, reply))
	case errors.As(err, &reply) && (strings.HasPrefix(reply.Error(), "NOAUTH") || strings.HasPrefix(reply.Error(), "WRONGPASS")):
		return exitWith(ExitNoPermission, fmt.Errorf("the sentinels at %s refused the connection (%v): their own "+
			"user and password go in the sentinel_username= and sentinel_password= options", sentinels, reply))
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return exitWith(ExitUnavailable, fmt.Errorf("no answer from the sentinels at %s within %v", sentinels, timeout))
	}
	return exitWith(ExitUnavailable, fmt.Errorf("cannot reach the sentinels at %s: %v", sentinels,
		strings.TrimPrefix(err.Error(), "redis: all sentinels specified in configuration are unreachable: ")))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// exitFor returns the exit status for an error of a Redis or lock operation.
func exitFor(err error) int {
	var reply redis.Error
	switch {
	case errors.Is(err, keyward.ErrInvalid):
		return ExitUsage
	case errors.Is(err, keyward.ErrNoPermission),
		errors.As(err, &reply) && (strings.HasPrefix(reply.Error(), "NOAUTH") || strings.HasPrefix(reply.Error(), "WRONGPASS")):
		return ExitNoPermission
	}
	return ExitUnavailable
}

// explain adds what an operator can do to the errors that have a known remedy.
func explain(err error) error {
	switch {
	case errors.Is(err, keyward.ErrNoPermission):
		return fmt.Errorf("%w (the ACL user needs +evalsha +eval +publish +subscribe and access to the lock's keys "+
			"and channels)", err)
	case errors.Is(err, keyward.ErrWrongType):
		return fmt.Errorf("%w (another program uses this name for a key of another type: pick another lock name "+
			"or a --prefix)", err)
	case errors.Is(err, keyward.ErrReadOnly):
		return fmt.Errorf("%w (connect to the primary, not a replica)", err)
	case strings.Contains(err.Error(), "MOVED ") || strings.Contains(err.Error(), "CROSSSLOT"):
		return fmt.Errorf("%w (the server is a Cluster node: use a redis+cluster:// URL)", err)
	}
	return err
}
