package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"

	"github.com/keyward/keyward"
	"github.com/keyward/keyward/election"
)

const electUsage = `Usage: keyward elect [flags] NAME [--] COMMAND [ARGS...]

Campaigns in the leader election NAME and runs COMMAND whenever this instance leads: every replica of a service
runs the same line, and one of them at a time runs COMMAND. If the leadership is lost while COMMAND runs (its
lease could not be renewed in time, or another was elected), COMMAND's process group gets SIGTERM, then
SIGKILL after --grace, and this instance campaigns again, to run COMMAND anew when it leads again. When COMMAND
ends by itself, keyward resigns, so that another instance leads within a few round trips, and exits with
COMMAND's status.

  keyward elect --ttl 15s scheduler -- ./scheduler --serve

Flags:
  --ttl D                  the leader's lease (default 15s), renewed every ttl/3; a leader that dies without
                           resigning is replaced within D
  --grace D                when COMMAND's group must stop (lead lost, keyward killed, processes left behind):
                           time between SIGTERM and SIGKILL (default 5s)
  --identity S             how this instance is named to the others (default "host=<hostname> pid=<pid>")
  --nodes URL,URL,…        elect on a Redlock quorum of these independent servers instead of --redis
  -v, --verbose            say on stderr when this instance starts and stops leading
` + connHelp + `
COMMAND runs in a process group of its own, with these environment variables:
  KEYWARD_ELECTION         the election's name
  KEYWARD_TERM             the term number, larger than every earlier leader's: a fencing token for storage
                           that refuses the writes of a leader that was paused past its lease
  KEYWARD_IDENTITY         this instance's identity
Signals are forwarded to COMMAND as 'keyward run' does; while campaigning, SIGINT, SIGTERM, SIGHUP and SIGQUIT
end keyward. As with 'keyward run', nothing of COMMAND's process group outlives this instance's lead: should
keyward be killed, even with SIGKILL, the group gets SIGTERM, then SIGKILL after --grace, and so does what
COMMAND leaves running in its group when it ends, before keyward resigns.

Exit status:
  COMMAND's     COMMAND ended by itself while leading (128+N when it was killed by signal N)
  64            bad flags, arguments or Redis URL
  69            Redis unreachable, not answering, or failing
  77            Redis refused the credentials, or the ACL user lacks a permission
  126, 127      COMMAND could not be executed, or was not found
  128+N         keyward got signal N while campaigning
`

type electFlags struct {
	lockFlags
	identity string
}

func electCommand(ctx context.Context, env Env, args []string) error {
	var f electFlags
	fs := newFlagSet("elect")
	f.register(fs)
	f.ttl = election.DefaultTTL
	fs.StringVar(&f.identity, "identity", "", "")
	pos, err := parse(fs, args, 1)
	if done, err := help(env, electUsage, err); done || err != nil {
		return err
	}
	if err := checkCommand(pos, "NAME", "keyward elect [flags] NAME -- COMMAND [ARGS]"); err != nil {
		return err
	}
	if err := f.checkTTL(); err != nil {
		return err
	}
	return f.run(ctx, env, pos[0], pos[1:])
}

// signalled is the cause of the campaign's end when keyward got a terminating signal.
type signalled struct{ sig os.Signal }

func (s signalled) Error() string { return "interrupted by " + s.sig.String() }

func (f *electFlags) run(ctx context.Context, env Env, name string, argv []string) error {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)

	b, err := f.open(ctx, env, false)
	if err != nil {
		return err
	}
	defer b.close()
	// A resignation that failed is told to the observer; Run itself returns runCtx's error once COMMAND ended.
	var (
		resignMu  sync.Mutex
		resignErr error // of the latest term
	)
	opts := []election.Option{election.WithTTL(f.ttl), election.WithObserver(keyward.ObserverFunc(
		func(_ context.Context, e keyward.Event) {
			resignMu.Lock()
			defer resignMu.Unlock()
			switch {
			case e.Kind == keyward.Obtained:
				resignErr = nil
			case e.Kind == keyward.Released && e.Err != nil && !errors.Is(e.Err, keyward.ErrNotHeld):
				resignErr = e.Err // not a lost term: that is nothing left to give back
			}
		}))}
	if f.identity != "" {
		opts = append(opts, election.WithIdentity(f.identity))
	}
	if b.rdb != nil {
		opts = append(opts, election.WithRedis(b.rdb))
	}
	el, err := election.New(b.locker, name, opts...)
	if err != nil {
		return exitWith(exitFor(err), err)
	}

	if f.verbose {
		fmt.Fprintf(env.Stderr, "keyward elect: campaigning in %q as %s\n", name, el.Identity())
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu      sync.Mutex
		current *child // COMMAND while it runs
	)
	// Signals go to COMMAND while it runs; while campaigning, a terminating one ends keyward.
	forwarding := make(chan struct{})
	defer close(forwarding)
	go func() {
		for {
			select {
			case <-forwarding:
				return
			case s := <-sigs:
				mu.Lock()
				c := current
				mu.Unlock()
				switch {
				case c != nil:
					c.signal(s)
				case s != syscall.SIGUSR1 && s != syscall.SIGUSR2:
					cancel(signalled{s})
				}
			}
		}
	}()

	code, ran := 0, false
	var startErr error
	err = el.Run(runCtx, func(leaderCtx context.Context) error {
		term := election.TermFrom(leaderCtx)
		if f.verbose {
			fmt.Fprintf(env.Stderr, "keyward elect: leading %q (term %d)\n", name, term)
		}
		c, err := startChild(env, argv, []string{
			"KEYWARD_ELECTION=" + name,
			"KEYWARD_TERM=" + strconv.FormatInt(term, 10),
			"KEYWARD_IDENTITY=" + el.Identity(),
		}, f.grace)
		if err != nil {
			startErr = err
			cancel(err)
			return nil
		}
		mu.Lock()
		current = c
		mu.Unlock()
		stopped := c.supervise(env, nil, leaderCtx.Done(), f.grace, func() {
			if errors.Is(context.Cause(leaderCtx), election.ErrLost) {
				fmt.Fprintf(env.Stderr, "keyward elect: lost the lead of %q (%s); stopping COMMAND: SIGTERM, "+
					"then SIGKILL after %v\n", name, lossReason(context.Cause(leaderCtx)), f.grace)
			}
		})
		mu.Lock()
		current = nil
		mu.Unlock()
		if !stopped || runCtx.Err() != nil {
			// COMMAND ended by itself (or keyward is ending): resign and exit with its status.
			code, ran = c.exitCode(), true
			cancel(nil)
		}
		return nil
	})
	if runCtx.Err() != nil && errors.Is(err, context.Canceled) {
		// Run ended as it was meant to (COMMAND exited, a signal): only a resignation that failed is worth telling.
		resignMu.Lock()
		err = resignErr
		resignMu.Unlock()
	}
	var sig signalled
	switch {
	case startErr != nil:
		return startErr
	case ran:
		if err != nil {
			fmt.Fprintf(env.Stderr, "keyward elect: %v\n", err)
		}
		return exitWith(code, nil)
	case errors.As(context.Cause(runCtx), &sig):
		return exitWith(128+signalNumber(sig.sig), nil)
	case err != nil:
		return exitWith(exitFor(err), explain(err))
	}
	return nil
}
