package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// forwarded are the signals keyward passes on to COMMAND. While keyward waits for the lock, the terminating
// ones (all but SIGUSR1 and SIGUSR2) end the wait instead.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

// child is COMMAND, running in a process group of its own so that a signal reaches everything it started: a
// shell script's own children must stop too when the lock is lost.
type child struct {
	cmd        *exec.Cmd
	pgid       int
	done       chan struct{} // closed once COMMAND has exited and been reaped
	foreground bool          // COMMAND's group was made the terminal's foreground group
	tty        int
}

// startChild starts argv with the extra environment variables env adds. On a terminal in the foreground, COMMAND's
// group becomes the terminal's foreground group, so that it can read the terminal and gets Ctrl-C directly.
func startChild(env Env, argv []string, vars []string) (*child, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = env.Stdin, env.Stdout, env.Stderr
	cmd.Env = append(os.Environ(), vars...)
	// Pdeathsig: should keyward itself be killed (SIGKILL, OOM), COMMAND gets SIGTERM instead of running on
	// without a lock that nobody refreshes any more.
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	c := &child{cmd: cmd, done: make(chan struct{})}
	if f, ok := env.Stdin.(*os.File); ok && inForeground(int(f.Fd())) {
		attr.Foreground, attr.Ctty = true, int(f.Fd())
		c.foreground, c.tty = true, int(f.Fd())
	}
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return nil, exitWith(ExitNotFound, fmt.Errorf("%s: command not found", argv[0]))
		}
		return nil, exitWith(ExitCannotRun, fmt.Errorf("cannot run %s: %v", argv[0], err))
	}
	c.pgid = cmd.Process.Pid
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// supervise waits until COMMAND exits, forwarding the signals from sigs (nil: none) to its process group. When
// stop is closed first, it calls stopping, sends SIGTERM, then SIGKILL after grace, and still waits for the exit.
// It reports whether COMMAND was stopped.
func (c *child) supervise(env Env, sigs <-chan os.Signal, stop <-chan struct{}, grace time.Duration, stopping func()) bool {
	var kill <-chan time.Time
	stopped := false
	for {
		select {
		case <-c.done:
			c.restoreTerminal()
			return stopped
		case s := <-sigs:
			c.signal(s)
		case <-stop:
			stop = nil
			stopped = true
			stopping()
			c.signal(syscall.SIGTERM)
			if grace == 0 {
				c.signal(syscall.SIGKILL)
				continue
			}
			t := time.NewTimer(grace)
			defer t.Stop()
			kill = t.C
		case <-kill:
			kill = nil
			fmt.Fprintf(env.Stderr, "keyward: COMMAND still running %v after SIGTERM: SIGKILL\n", grace)
			c.signal(syscall.SIGKILL)
		}
	}
}

// inForeground reports whether fd is a terminal whose foreground process group is keyward's.
func inForeground(fd int) bool {
	if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err != nil {
		return false
	}
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return err == nil && pgrp == unix.Getpgrp()
}

// signal sends sig to COMMAND's process group, unless COMMAND has already exited.
func (c *child) signal(sig os.Signal) {
	select {
	case <-c.done:
		return
	default:
	}
	_ = syscall.Kill(-c.pgid, sig.(syscall.Signal))
}

// exitCode returns COMMAND's exit status as a shell reports it: 128+N when it was killed by signal N. It must be
// called after done is closed.
func (c *child) exitCode() int {
	ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		return c.cmd.ProcessState.ExitCode()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// restoreTerminal gives the terminal back to keyward's process group after COMMAND ended, when COMMAND had it.
func (c *child) restoreTerminal() {
	if !c.foreground {
		return
	}
	// A background group that sets the foreground group gets SIGTTOU, which would stop keyward.
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	_ = unix.IoctlSetPointerInt(c.tty, unix.TIOCSPGRP, unix.Getpgrp())
}

// signalNumber returns the number of sig, for 128+N exit statuses.
func signalNumber(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return 0
}
