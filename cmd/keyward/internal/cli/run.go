package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/keyward/keyward"
)

const runUsage = `Usage: keyward run [flags] KEY [--] COMMAND [ARGS...]

Runs COMMAND while holding the lock KEY, and releases it when COMMAND ends: one run at a time across every
machine that uses the same Redis (flock(1) for a fleet). The lock is refreshed every ttl/3 while COMMAND runs.
The cron recipe (the other replicas skip the tick, silently, while one runs the report):

  */5 * * * *  keyward run --no-wait --ttl 10m nightly-report -- ./report.sh

Flags:
  -n, --no-wait            do not wait: exit at once with the conflict status when KEY is taken
  --wait D                 wait at most D for KEY (default: as long as it takes; --wait 0 is --no-wait)
  --ttl D                  the lock's ttl (default 1m): refreshed every ttl/3 while COMMAND runs; should keyward
                           die, the others get KEY at most D later
  --grace D                when COMMAND's group must stop (lock lost, keyward killed, processes left behind):
                           time between SIGTERM and SIGKILL (default 5s)
  -E, --conflict-exit-code N
                           exit status when KEY is taken or not obtained within --wait (default 75; flock uses 1)
  --nodes URL,URL,…        take a Redlock quorum lock on these independent servers instead of --redis
  -v, --verbose            say on stderr when the lock is obtained, released or taken by another
` + connHelp + `
Durations: 30s, 10m, 1h30m; a bare number is seconds.

COMMAND runs in a process group of its own, with these environment variables:
  KEYWARD_KEY              the lock name
  KEYWARD_FENCE            the fencing token, larger than every earlier holder's: storage that remembers the
                           largest it has seen can refuse the writes of a holder that was paused past its ttl
  KEYWARD_TOKEN            the value stored under the lock key (random token, host, pid)
SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 are forwarded to COMMAND's process group. If the lock is
lost while COMMAND runs (it could not be refreshed before its ttl ran out, or it was deleted or taken), COMMAND's
process group gets SIGTERM, then SIGKILL after --grace, and keyward exits 79. Should keyward itself be killed,
even with SIGKILL, COMMAND's process group gets the same (a guard process, "keyward __guard", sees to it). What
COMMAND leaves running in its group when it ends gets the same too, before the lock is released.

Exit status:
  COMMAND's     COMMAND ran and ended (128+N when it was killed by signal N)
  75            KEY was taken (--no-wait), or not obtained within --wait (see --conflict-exit-code)
  79            the lock was lost while COMMAND ran, and COMMAND was stopped; or it was found not held when
                COMMAND ended
  64            bad flags, arguments or Redis URL
  69            Redis unreachable, not answering, or failing
  77            Redis refused the credentials, or the ACL user lacks a permission
  126, 127      COMMAND could not be executed, or was not found
  128+N         keyward got signal N while waiting for the lock
`

// releaseTimeout bounds the release after COMMAND ended: whatever happens, keyward exits.
const releaseTimeout = 5 * time.Second

var errWaitExpired = errors.New("not obtained within --wait")

type runFlags struct {
	lockFlags
	waitFlags
}

// waitFlags are the flags of a command that waits for its turn (run, limit): --wait, --no-wait and the exit
// status when the turn did not come.
type waitFlags struct {
	wait     time.Duration
	waitFlag *durationValue
	noWait   bool
	conflict int
}

func (f *waitFlags) register(fs *flag.FlagSet) {
	f.waitFlag = newDuration(fs, &f.wait, "wait", "")
	fs.BoolVar(&f.noWait, "no-wait", false, "")
	fs.BoolVar(&f.noWait, "n", false, "")
	fs.IntVar(&f.conflict, "conflict-exit-code", ExitNotObtained, "")
	fs.IntVar(&f.conflict, "E", ExitNotObtained, "")
}

// check refuses flags that exclude each other or are out of range, and makes --wait 0 --no-wait.
func (f *waitFlags) check() error {
	switch {
	case f.noWait && f.waitFlag.set && f.wait > 0:
		return usagef("--no-wait and --wait D exclude each other")
	case f.conflict < 0 || f.conflict > 255:
		return usagef("--conflict-exit-code %d: want 0 to 255", f.conflict)
	}
	if f.waitFlag.set && f.wait == 0 {
		f.noWait = true
	}
	return nil
}

func runCommand(ctx context.Context, env Env, args []string) error {
	var f runFlags
	fs := newFlagSet("run")
	f.lockFlags.register(fs)
	f.waitFlags.register(fs)
	pos, err := parse(fs, args, 1)
	if done, err := help(env, runUsage, err); done || err != nil {
		return err
	}
	if err := checkCommand(pos, "KEY", "keyward run [flags] KEY -- COMMAND [ARGS]"); err != nil {
		return err
	}
	if err := f.waitFlags.check(); err != nil {
		return err
	}
	if err := f.checkTTL(); err != nil {
		return err
	}
	return f.run(ctx, env, pos[0], pos[1:])
}

func (f *runFlags) run(ctx context.Context, env Env, key string, argv []string) error {
	// From now on the forwarded signals are ours: none of them can kill keyward between obtaining the lock and
	// starting COMMAND, which would leave the lock behind until its ttl.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)

	b, err := f.open(ctx, env, true)
	if err != nil {
		return err
	}
	defer b.close()

	l, err := f.obtain(ctx, env, b, key, sigs)
	if err != nil {
		return err
	}
	if f.verbose {
		fmt.Fprintf(env.Stderr, "keyward run: obtained lock %q (fence %d, ttl %v)\n", key, l.Fence(), f.ttl)
	}
	return f.supervise(ctx, env, l, key, argv, sigs)
}

// obtain takes the lock as the flags say. A terminating signal while waiting ends the wait: keyward then exits
// 128+N, as a shell would have.
func (f *runFlags) obtain(ctx context.Context, env Env, b *backend, key string, sigs <-chan os.Signal) (keyward.Lock, error) {
	octx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if f.waitFlag.set && !f.noWait {
		var stop context.CancelFunc
		octx, stop = context.WithTimeoutCause(octx, f.wait, errWaitExpired)
		defer stop()
	}
	type result struct {
		l   keyward.Lock
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.l, r.err = b.locker.TryObtain(octx, key, f.ttl)
		if errors.Is(r.err, keyward.ErrNotObtained) && !f.noWait {
			if f.verbose {
				fmt.Fprintf(env.Stderr, "keyward run: waiting for lock %q%s\n", key, heldBy(b.holder(octx, key)))
			}
			r.l, r.err = b.locker.Obtain(octx, key, f.ttl)
		}
		done <- r
	}()

	r, interrupted := awaitOrInterrupt(sigs, done, cancel)
	if interrupted != nil {
		if r.l != nil {
			releaseQuietly(ctx, r.l)
		}
		if f.verbose {
			fmt.Fprintf(env.Stderr, "keyward run: %v while waiting for lock %q\n", interrupted, key)
		}
		return nil, exitWith(128+signalNumber(interrupted), nil)
	}
	switch {
	case r.err == nil:
		return r.l, nil
	case errors.Is(r.err, keyward.ErrNotObtained), errors.Is(r.err, errWaitExpired):
		if f.verbose {
			fmt.Fprintf(env.Stderr, "keyward run: lock %q %s; COMMAND not run\n", key, f.notObtained(ctx, b, key))
		}
		return nil, exitWith(f.conflict, nil)
	}
	return nil, exitWith(exitFor(r.err), explain(r.err))
}

// awaitOrInterrupt waits for the result on done. The first signal from sigs other than SIGUSR1 and SIGUSR2
// cancels the wait (cancel, with the signal as the cause) and is returned with the result that then comes.
func awaitOrInterrupt[T any](sigs <-chan os.Signal, done <-chan T, cancel context.CancelCauseFunc) (T, os.Signal) {
	var interrupted os.Signal
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGUSR1 || s == syscall.SIGUSR2 || interrupted != nil {
				continue
			}
			interrupted = s
			cancel(fmt.Errorf("interrupted by %v", s))
		case r := <-done:
			return r, interrupted
		}
	}
}

// notObtained says why the lock was not obtained, and who has it when that is known.
func (f *runFlags) notObtained(ctx context.Context, b *backend, key string) string {
	why := "is taken"
	if !f.noWait {
		why = fmt.Sprintf("was not obtained within %v", f.wait)
	}
	return why + heldBy(b.holder(ctx, key))
}

func heldBy(holder string) string {
	if holder == "" {
		return ""
	}
	return " (held by " + holder + ")"
}

// supervise runs COMMAND under the lock l until it ends, stops it if the lock is lost, and releases the lock.
func (f *runFlags) supervise(ctx context.Context, env Env, l keyward.Lock, key string, argv []string, sigs <-chan os.Signal) error {
	c, err := startChild(env, argv, lockVars(key, l), f.grace)
	if err != nil {
		releaseQuietly(ctx, l)
		return err
	}
	stopped := c.supervise(env, sigs, l.Lost(), f.grace, func() {
		fmt.Fprintf(env.Stderr, "keyward run: lock %q lost (%s); stopping COMMAND: SIGTERM, then SIGKILL after %v\n",
			key, lossReason(l.Err()), f.grace)
	})
	code := c.exitCode()

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	rerr := l.Release(rctx)
	switch {
	case stopped:
		return exitWith(ExitLost, nil)
	case l.Err() != nil:
		return exitWith(ExitLost, fmt.Errorf("lock %q lost as COMMAND ended (exit status %d): %s", key, code, lossReason(l.Err())))
	case errors.Is(rerr, keyward.ErrNotHeld):
		return exitWith(ExitLost, fmt.Errorf("lock %q was not held when COMMAND ended (exit status %d): "+
			"it expired, or was released or taken by another: %v", key, code, rerr))
	case rerr != nil:
		fmt.Fprintf(env.Stderr, "keyward run: could not release lock %q (it expires by itself within %v): %v\n", key, f.ttl, rerr)
	case f.verbose:
		fmt.Fprintf(env.Stderr, "keyward run: released lock %q; COMMAND exited with status %d\n", key, code)
	}
	return exitWith(code, nil)
}

// lossReason is why a lock was lost, without the "keyward: lock lost: " that the message around it says already.
func lossReason(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, "lock lost: "); i >= 0 {
		return msg[i+len("lock lost: "):]
	}
	return strings.TrimPrefix(msg, "keyward: ")
}

// lockVars are the environment variables COMMAND gets.
func lockVars(key string, l keyward.Lock) []string {
	return []string{
		"KEYWARD_KEY=" + key,
		"KEYWARD_FENCE=" + strconv.FormatInt(l.Fence(), 10),
		"KEYWARD_TOKEN=" + l.Value(),
	}
}

// releaseQuietly releases l when COMMAND did not run; the lock expires by itself if this fails.
func releaseQuietly(ctx context.Context, l keyward.Lock) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	_ = l.Release(rctx)
}
