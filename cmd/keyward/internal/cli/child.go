package cli

import (
	"bufio"
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
// shell script's own children must stop too when the lock is lost. keyward's guard process (guard.go) starts it
// and makes sure that the group ends with keyward, however keyward ends.
type child struct {
	guard      *exec.Cmd
	pgid       int
	control    *os.File      // keyward's end of the guard's control pipe; closed when the guard has exited
	exited     chan struct{} // closed once COMMAND's exit status is known (or the guard died without it)
	done       chan struct{} // closed once the guard has exited: COMMAND and every process of its group ended
	status     syscall.WaitStatus
	guardErr   error // the guard ended without telling COMMAND's status
	foreground bool  // COMMAND's group was made the terminal's foreground group
	tty        int
}

// startChild starts argv with the extra environment variables vars, through the guard; grace is the guard's time
// between SIGTERM and SIGKILL to COMMAND's group. On a terminal in the foreground, COMMAND's group becomes the
// terminal's foreground group, so that it can read the terminal and gets Ctrl-C directly.
func startChild(env Env, argv []string, vars []string, grace time.Duration) (*child, error) {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return nil, exitWith(ExitNotFound, fmt.Errorf("%s: command not found", argv[0]))
		}
		return nil, exitWith(ExitCannotRun, fmt.Errorf("cannot run %s: %v", argv[0], err))
	}
	c := &child{exited: make(chan struct{}), done: make(chan struct{})}
	where := "bg"
	if f, ok := env.Stdin.(*os.File); ok && inForeground(int(f.Fd())) {
		c.foreground, c.tty = true, int(f.Fd())
		where = "fg"
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, exitWith(ExitSoftware, err)
	}
	controlR, controlW, err := os.Pipe()
	if err != nil {
		_, _ = statusR.Close(), statusW.Close()
		return nil, exitWith(ExitSoftware, err)
	}
	// /proc/self/exe is this very binary, even if a newer keyward replaced the file since.
	cmd := exec.Command("/proc/self/exe", append([]string{guardCommand, grace.String(), where, "--", path}, argv...)...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = env.Stdin, env.Stdout, env.Stderr
	cmd.Env = append(os.Environ(), vars...)
	cmd.ExtraFiles = []*os.File{statusW, controlR}
	// A group of its own: a signal to keyward's group (kill -9 %1) must not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	_, _ = statusW.Close(), controlR.Close()
	if err != nil {
		_, _ = statusR.Close(), controlW.Close()
		return nil, exitWith(ExitSoftware, fmt.Errorf("cannot start keyward's guard process: %v", err))
	}
	c.guard, c.control = cmd, controlW

	status := bufio.NewReader(statusR)
	word, rest, err := readGuardStatus(status)
	if word == "started" {
		c.pgid, err = parseGuardInt(rest)
	}
	if word != "started" || err != nil {
		// COMMAND did not start: the guard exits by itself.
		_ = controlW.Close()
		_ = cmd.Wait()
		_ = statusR.Close()
		if word == "failed" {
			return nil, exitWith(ExitCannotRun, fmt.Errorf("cannot run %s: %s", argv[0], rest))
		}
		return nil, exitWith(ExitSoftware, fmt.Errorf("keyward's guard process failed to start COMMAND (%v)", cmd.ProcessState))
	}
	go func() {
		word, rest, err := readGuardStatus(status)
		var ws int
		if err == nil && word == "exited" {
			ws, err = parseGuardInt(rest)
		}
		if err == nil {
			c.status = syscall.WaitStatus(ws)
		} else {
			c.guardErr = fmt.Errorf("keyward's guard process ended without COMMAND's exit status (%v)", err)
			// Nothing stops COMMAND's group any more but Pdeathsig, which reaches COMMAND only.
			_ = syscall.Kill(-c.pgid, syscall.SIGKILL)
		}
		close(c.exited)
		_ = cmd.Wait()
		if c.guardErr != nil {
			c.guardErr = fmt.Errorf("%w: %v", c.guardErr, cmd.ProcessState)
		}
		_ = statusR.Close()
		_ = controlW.Close()
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
			if c.guardErr != nil {
				fmt.Fprintf(env.Stderr, "keyward: %v; COMMAND's process group killed\n", c.guardErr)
			}
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

// signal sends sig to COMMAND's process group, unless COMMAND has already exited (the guard then stops what it
// left in the group, and the group's id may soon be another's).
func (c *child) signal(sig os.Signal) {
	select {
	case <-c.exited:
		return
	default:
	}
	_ = syscall.Kill(-c.pgid, sig.(syscall.Signal))
}

// exitCode returns COMMAND's exit status as a shell reports it: 128+N when it was killed by signal N; ExitSoftware
// when the guard died without telling it. It must be called after done is closed.
func (c *child) exitCode() int {
	switch ws := c.status; {
	case c.guardErr != nil:
		return ExitSoftware
	case ws.Signaled():
		return 128 + int(ws.Signal())
	default:
		return ws.ExitStatus()
	}
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
