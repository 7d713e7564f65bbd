// Package cli is the keyward command: run a command under a lock (the cron recipe), show and release locks,
// watch them change hands, and run the demo. cmd/keyward is a thin main around [Main]; the logic lives here
// so that it can be tested.
//
// The command follows the conventions of flock(1) and etcdctl: one sub-command per task, flags before or among
// the positional arguments, "--" before a command to run, and documented exit codes (the Exit constants).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Exit codes. keyward's own failures use the sysexits(3) codes, as flock(1) does, so that they stand apart from
// the exit status of a COMMAND that `keyward run` passes through.
const (
	// ExitOK: success.
	ExitOK = 0
	// ExitNotHeld: `status` found a key that nobody holds; `release --force` found nothing to release.
	ExitNotHeld = 1
	// ExitUsage: bad flags or arguments, or a bad Redis URL (EX_USAGE).
	ExitUsage = 64
	// ExitUnavailable: Redis unreachable, not answering, or answering with an error (EX_UNAVAILABLE).
	ExitUnavailable = 69
	// ExitSoftware: keyward failed for a reason of its own, such as the demo finding a broken invariant
	// (EX_SOFTWARE).
	ExitSoftware = 70
	// ExitNotObtained: `run --no-wait` found the lock taken, or `run --wait D` did not get it within D
	// (EX_TEMPFAIL: try again later). --conflict-exit-code changes it; flock(1) uses 1.
	ExitNotObtained = 75
	// ExitNoPermission: Redis refused the credentials, or the ACL user may not run a command keyward needs
	// (EX_NOPERM).
	ExitNoPermission = 77
	// ExitLost: the lock was lost while COMMAND ran (it expired, or was taken or deleted), so COMMAND was stopped;
	// or the lock was found not held when COMMAND ended. Outside the sysexits range, so it cannot be mistaken
	// for one of them.
	ExitLost = 79
	// ExitCannotRun: COMMAND was found but could not be executed (as sh and env(1) report it).
	ExitCannotRun = 126
	// ExitNotFound: COMMAND was not found (as sh and env(1) report it).
	ExitNotFound = 127
)

// Env is what the command reads and writes besides its arguments; Main uses the process's own in production.
type Env struct {
	// Stdin is COMMAND's standard input for run and elect.
	Stdin io.Reader
	// Stdout receives the command's output.
	Stdout io.Writer
	// Stderr receives messages and errors.
	Stderr io.Writer
	// Getenv reads environment variables (REDIS_URL).
	Getenv func(string) string
	// Version is what --version prints.
	Version string
}

// OSEnv returns the Env of the running process, with version as its version.
func OSEnv(version string) Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv, Version: version}
}

// A command is one sub-command.
type command struct {
	name    string
	summary string
	usage   string // the --help text
	run     func(ctx context.Context, env Env, args []string) error
}

func commands() []command {
	return []command{
		{name: "run", summary: "run COMMAND while holding the lock KEY", usage: runUsage, run: runCommand},
		{name: "status", summary: "show who holds each lock, its remaining ttl and fence", usage: statusUsage, run: statusCommand},
		{name: "release", summary: "delete a lock whoever holds it (needs --force)", usage: releaseUsage, run: releaseCommand},
		{name: "watch", summary: "print lock events (acquired, released, expired) as they happen", usage: watchUsage, run: watchCommand},
		{name: "elect", summary: "run COMMAND whenever this instance is the leader of an election", usage: electUsage, run: electCommand},
		{name: "limit", summary: "run COMMAND once the rate limit KEY lets it through (N per PERIOD)", usage: limitUsage, run: limitCommand},
		{name: "demo", summary: "the guided demo, on an embedded Redis", usage: demoUsage, run: demoCommand},
		{name: "version", summary: "print the version", usage: versionUsage, run: versionCommand},
	}
}

const mainUsage = `keyward: distributed locks on Redis, from the shell.

Usage:
  keyward COMMAND [flags] [ARGS]

Commands:
%s
Redis is reached at --redis URL, else $REDIS_URL, else redis://localhost:6379:
  redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]   rediss://… for TLS   unix:///path/to/redis.sock

Run 'keyward COMMAND --help' for a command's flags and exit codes; 'keyward --version' for the version.
`

// Main runs the keyward command with args (the program name left out) and returns its exit status. It never
// panics on bad input and never calls os.Exit.
func Main(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if env.Stdin == nil {
		env.Stdin = strings.NewReader("")
	}
	// go-redis logs dial failures on its own; keyward reports them once, in its own words.
	redis.SetLogger(quietLogger{})

	if len(args) == 0 {
		fmt.Fprint(env.Stderr, mainHelp())
		return ExitUsage
	}
	switch args[0] {
	case guardCommand:
		return runGuard(args[1:], env.Stderr)
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && args[0] == "help" {
			return Main(ctx, []string{args[1], "--help"}, env)
		}
		fmt.Fprint(env.Stdout, mainHelp())
		return ExitOK
	case "-version", "--version", "-V":
		return exitCode(env, "version", versionCommand(ctx, env, nil))
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return exitCode(env, c.name, c.run(ctx, env, args[1:]))
		}
	}
	if strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(env.Stderr, "keyward: flag %s before the command: put flags after it (keyward COMMAND [flags])\n"+
			"Run 'keyward --help' for usage.\n", args[0])
	} else {
		fmt.Fprintf(env.Stderr, "keyward: unknown command %q\nRun 'keyward --help' for usage.\n", args[0])
	}
	return ExitUsage
}

func mainHelp() string {
	var b strings.Builder
	for _, c := range commands() {
		fmt.Fprintf(&b, "  %-8s %s\n", c.name, c.summary)
	}
	return fmt.Sprintf(mainUsage, b.String())
}

// exitError is an error that decides the exit status. A message of "" prints nothing.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// exitWith returns an error that makes the command exit with code, after printing err (unless nil).
func exitWith(code int, err error) error { return &exitError{code: code, err: err} }

// usageError is a usage mistake: printed with a pointer to --help, exit ExitUsage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

// exitCode prints err for the sub-command name and returns the exit status it calls for.
func exitCode(env Env, name string, err error) int {
	if err == nil {
		return ExitOK
	}
	var usage *usageError
	if errors.As(err, &usage) {
		fmt.Fprintf(env.Stderr, "keyward %s: %s\nRun 'keyward %s --help' for usage.\n", name, usage.msg, name)
		return ExitUsage
	}
	var exit *exitError
	if errors.As(err, &exit) {
		if exit.err != nil {
			fmt.Fprintf(env.Stderr, "keyward %s: %v\n", name, exit.err)
		}
		return exit.code
	}
	fmt.Fprintf(env.Stderr, "keyward %s: %v\n", name, err)
	return exitFor(err)
}

// quietLogger drops go-redis's own log lines.
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}
