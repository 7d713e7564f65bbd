package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/keyward/keyward"
)

// defaultURL is the server used without --redis and $REDIS_URL, as redis-cli does.
const defaultURL = "redis://localhost:6379"

// connFlags are the flags of every sub-command that talks to Redis.
type connFlags struct {
	url     string
	prefix  string
	timeout time.Duration
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "redis", "", "")
	fs.StringVar(&c.prefix, "prefix", "", "")
	c.timeout = 5 * time.Second
	newDuration(fs, &c.timeout, "timeout", "")
}

const connHelp = `  --redis URL      the Redis server: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://… (TLS),
                   unix:///path; default $REDIS_URL, else ` + defaultURL + `
  --prefix P       put P in front of every lock name, as lock.WithPrefix does (default none)
  --timeout D      how long to wait for Redis to connect and answer (default 5s)
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

// options parses raw as a Redis URL, with keyward's client settings. Errors never show the password.
func options(raw string, timeout time.Duration) (*redis.Options, error) {
	if !strings.Contains(raw, "://") {
		return nil, exitWith(ExitUsage, fmt.Errorf("bad Redis URL %q: want redis://HOST:PORT, rediss://HOST:PORT (TLS) or unix:///path", redact(raw)))
	}
	opt, err := redis.ParseURL(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error quotes the whole URL, password and all
		}
		msg := strings.TrimPrefix(err.Error(), "redis: ")
		if strings.HasPrefix(msg, "invalid URL scheme") {
			msg += " (want redis://, rediss:// or unix://)"
		}
		return nil, exitWith(ExitUsage, fmt.Errorf("bad Redis URL %q: %s", redact(raw), msg))
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = timeout
	}
	// A refused dial will not succeed 100 ms later; keep the first error quick.
	opt.DialerRetries = 2
	// A context deadline bounds a command's socket deadline: a refresh never outlives the lock's validity.
	opt.ContextTimeoutEnabled = true
	opt.DisableIdentity = true
	// Maintenance notifications are for Redis Enterprise/Cloud hand-overs and start background work; a lock
	// command does not need them.
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return opt, nil
}

// redact returns raw with its password replaced by "xxxxx", or, when raw is not a URL at all, as it is.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// Cut out anything between "//" and the last "@", where a password would be.
		if i, j := strings.Index(raw, "//"), strings.LastIndex(raw, "@"); i >= 0 && j > i {
			return raw[:i+2] + "xxxxx" + raw[j:]
		}
		return raw
	}
	return u.Redacted()
}

// connect returns a client for the Redis URL of the flags, once the server has answered a PING.
func (c *connFlags) connect(ctx context.Context, env Env) (*redis.Client, error) {
	raw := c.redisURL(env)
	opt, err := options(raw, c.timeout)
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(opt)
	if err := ping(ctx, rdb, redact(raw), c.timeout); err != nil {
		_ = rdb.Close()
		return nil, err
	}
	return rdb, nil
}

// ping checks that the server answers, and explains in an operator's words why not.
func ping(ctx context.Context, rdb *redis.Client, where string, timeout time.Duration) error {
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := rdb.Ping(pctx).Err()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return exitWith(ExitUnavailable, context.Cause(ctx))
	}
	addr := rdb.Options().Addr
	var reply redis.Error
	switch {
	case errors.As(err, &reply) && strings.HasPrefix(reply.Error(), "NOAUTH"):
		return exitWith(ExitNoPermission, fmt.Errorf("Redis at %s requires a password: put it in the URL, "+
			"redis://:PASSWORD@HOST:PORT (or redis://USER:PASSWORD@… for an ACL user)", addr))
	case errors.As(err, &reply) && strings.HasPrefix(reply.Error(), "WRONGPASS"):
		return exitWith(ExitNoPermission, fmt.Errorf("Redis at %s refused the user name or password of %s (%v)", addr, where, err))
	case errors.As(err, &reply) && strings.HasPrefix(reply.Error(), "NOPERM"):
		return exitWith(ExitNoPermission, fmt.Errorf("Redis at %s: the ACL user of %s may not run PING (%v)", addr, where, err))
	case errors.As(err, &reply):
		return exitWith(ExitUnavailable, fmt.Errorf("Redis at %s answered with an error: %v", addr, err))
	}
	hint := ""
	if rdb.Options().TLSConfig != nil {
		// A plain server either waits for the rest of the handshake or answers it with an error reply.
		hint = " (the URL asks for TLS, rediss://: does the server speak TLS on that port?)"
	}
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return exitWith(ExitUnavailable, fmt.Errorf("no answer from Redis at %s within %v%s", addr, timeout, hint))
	}
	return exitWith(ExitUnavailable, fmt.Errorf("cannot reach Redis at %s: %v%s", addr, err, hint))
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
	}
	return err
}
