package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/ratelimit"
)

const limitUsage = `Usage: keyward limit [flags] --rate N/PERIOD KEY [--] COMMAND [ARGS...]

Runs COMMAND once the rate limit KEY lets it through: at most N runs per PERIOD across every machine that uses
the same Redis (the ratelimit package). keyward takes the next turn in line on the server in one round trip and
sleeps until it, without polling; turns go out in the order they were asked for, at the rate. Nothing is held
while COMMAND runs: a limit counts starts, not runs at once (for that, see keyward run). The recipe for
alerts that every replica may send, ten a minute in all:

  keyward limit --rate 10/m --no-wait alerts -- ./send-alert.sh

Flags:
  --rate N/PERIOD          the limit, required: N runs per PERIOD, where PERIOD is s, m, h or a duration
                           (10/s, 100/m, 5/h, 3/1m30s); turns come PERIOD/N apart
  --burst B                how many may start at once after a quiet time (default N)
  -n, --no-wait            do not wait: exit at once with the conflict status when no turn is free now
  --wait D                 wait at most D for a turn (default: as long as it takes; --wait 0 is --no-wait); a
                           turn further away than D is not taken, and keyward exits at once
  --grace D                should keyward be killed while COMMAND runs: time between SIGTERM and SIGKILL to
                           COMMAND's group (default 5s)
  -E, --conflict-exit-code N
                           exit status when no turn was free (--no-wait) or none came within --wait (default 75)
  -v, --verbose            say on stderr how long keyward waited for its turn
` + connHelp + `
Durations: 30s, 10m, 1h30m; a bare number is seconds.

The limit's key is the prefix and KEY; it expires by itself once the limit is idle. Every process that uses KEY
should give the same --rate and --burst: each spaces its own turns by its own limit.

COMMAND runs in a process group of its own, with KEYWARD_KEY set to KEY. SIGINT, SIGTERM, SIGHUP, SIGQUIT,
SIGUSR1 and SIGUSR2 are forwarded to COMMAND's process group; while keyward waits, the terminating ones end the
wait and give the turn back.

Exit status:
  COMMAND's     COMMAND ran and ended (128+N when it was killed by signal N)
  75            no turn was free (--no-wait), or none came within --wait (see --conflict-exit-code)
  64            bad flags, arguments, rate or Redis URL
  69            Redis unreachable, not answering, or failing
  77            Redis refused the credentials, or the ACL user lacks a permission
  126, 127      COMMAND could not be executed, or was not found
  128+N         keyward got signal N while waiting for its turn
`

type limitFlags struct {
	waitFlags
	conn    connFlags
	rate    string
	burst   int
	grace   time.Duration
	verbose bool
}

func limitCommand(ctx context.Context, env Env, args []string) error {
	var f limitFlags
	fs := newFlagSet("limit")
	f.conn.register(fs)
	fs.StringVar(&f.rate, "rate", "", "")
	fs.IntVar(&f.burst, "burst", 0, "")
	f.waitFlags.register(fs)
	f.grace = 5 * time.Second
	newDuration(fs, &f.grace, "grace", "")
	fs.BoolVar(&f.verbose, "verbose", false, "")
	fs.BoolVar(&f.verbose, "v", false, "")
	pos, err := parse(fs, args, 1)
	if done, err := help(env, limitUsage, err); done || err != nil {
		return err
	}
	if err := checkCommand(pos, "KEY", "keyward limit [flags] --rate N/PERIOD KEY -- COMMAND [ARGS]"); err != nil {
		return err
	}
	limit, err := parseRate(f.rate, f.burst)
	if err != nil {
		return err
	}
	if err := f.waitFlags.check(); err != nil {
		return err
	}
	return f.run(ctx, env, limit, pos[0], pos[1:])
}

// parseRate reads --rate N/PERIOD and --burst B (0: N) as a limit.
func parseRate(rate string, burst int) (ratelimit.Limit, error) {
	if rate == "" {
		return ratelimit.Limit{}, usagef("missing --rate N/PERIOD, such as --rate 10/s")
	}
	n, per, ok := strings.Cut(rate, "/")
	count, err := strconv.Atoi(n)
	if !ok || err != nil || count < 1 {
		return ratelimit.Limit{}, usagef("--rate %q: want N/PERIOD with N a whole number above 0, such as 10/s, 100/m or 3/1m30s", rate)
	}
	var period time.Duration
	switch per {
	case "s":
		period = time.Second
	case "m":
		period = time.Minute
	case "h":
		period = time.Hour
	default:
		if period, err = time.ParseDuration(per); err != nil || period <= 0 {
			return ratelimit.Limit{}, usagef("--rate %q: want a PERIOD of s, m, h or a duration above 0, such as 1m30s", rate)
		}
	}
	if burst < 0 {
		return ratelimit.Limit{}, usagef("--burst %d: want a whole number above 0", burst)
	}
	if burst == 0 {
		burst = count
	}
	l := ratelimit.Limit{Rate: count, Period: period, Burst: burst}
	if err := l.Validate(); err != nil {
		return l, usagef("--rate %s --burst %d: %s", rate, burst, strings.TrimPrefix(err.Error(), "keyward: invalid argument: "))
	}
	return l, nil
}

func (f *limitFlags) run(ctx context.Context, env Env, limit ratelimit.Limit, key string, argv []string) error {
	// From now on the forwarded signals are ours: a signal while waiting ends the wait and gives the turn back.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)

	rdb, _, err := f.conn.connect(ctx, env)
	if err != nil {
		return err
	}
	defer rdb.Close()
	lim, err := ratelimit.New(rdb, key, limit, ratelimit.WithPrefix(f.conn.prefix))
	if err != nil {
		return exitWith(ExitUsage, err)
	}
	if err := f.turn(ctx, env, lim, key, sigs); err != nil {
		return err
	}
	c, err := startChild(env, argv, []string{"KEYWARD_KEY=" + key}, f.grace)
	if err != nil {
		return err
	}
	c.supervise(env, sigs, nil, f.grace, nil)
	return exitWith(c.exitCode(), nil)
}

// turn waits for a turn of lim as the flags say. A terminating signal while waiting ends the wait (the turn is
// given back): keyward then exits 128+N, as a shell would have.
func (f *limitFlags) turn(ctx context.Context, env Env, lim *ratelimit.Limiter, key string, sigs <-chan os.Signal) error {
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if f.waitFlag.set && !f.noWait {
		var stop context.CancelFunc
		wctx, stop = context.WithTimeout(wctx, f.wait)
		defer stop()
	}
	start := time.Now()
	done := make(chan error, 1)
	var retryAfter time.Duration
	go func() {
		if f.noWait {
			res, err := lim.Allow(wctx)
			if err == nil && res.Allowed == 0 {
				retryAfter = res.RetryAfter
				err = errNoTurn
			}
			done <- err
			return
		}
		done <- lim.Wait(wctx)
	}()
	err, interrupted := awaitOrInterrupt(sigs, done, cancel)
	switch {
	case interrupted != nil:
		if f.verbose {
			fmt.Fprintf(env.Stderr, "keyward limit: %v while waiting for a turn of %q\n", interrupted, key)
		}
		return exitWith(128+signalNumber(interrupted), nil)
	case err == nil:
		if f.verbose {
			fmt.Fprintf(env.Stderr, "keyward limit: a turn of %q after %v\n", key, time.Since(start).Round(time.Millisecond))
		}
		return nil
	case errors.Is(err, errNoTurn):
		if f.verbose {
			fmt.Fprintf(env.Stderr, "keyward limit: no turn of %q free now (the next in %v); COMMAND not run\n", key,
				retryAfter.Round(time.Millisecond))
		}
		return exitWith(f.conflict, nil)
	case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		if f.verbose {
			fmt.Fprintf(env.Stderr, "keyward limit: no turn of %q within %v; COMMAND not run\n", key, f.wait)
		}
		return exitWith(f.conflict, nil)
	}
	return exitWith(exitFor(err), explainLimit(err))
}

var errNoTurn = errors.New("no turn free")

// explainLimit adds what an operator can do to the errors of a rate limit that have a known remedy.
func explainLimit(err error) error {
	if errors.Is(err, ratelimit.ErrNoPermission) {
		return fmt.Errorf("%w (the ACL user needs +evalsha +eval +get +set +time and access to the key)", err)
	}
	return explain(err)
}
