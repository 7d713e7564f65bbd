package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The guard makes COMMAND's process group end with keyward, however keyward ends.
//
// Should keyward die without a chance to act (SIGKILL, the OOM killer), nothing it does can stop COMMAND: the
// kernel's parent-death signal (Pdeathsig) reaches only keyward's own child, not what that child started, so a
// shell script's background jobs or a server's workers would run on without the lock, beside the next holder's.
// So keyward does not start COMMAND itself. It starts a copy of itself, the guard ("keyward __guard"), which:
//
//   - is in a process group of its own, so that a signal to keyward's group (kill -9 %1 in a shell) or to
//     COMMAND's group leaves it alone, and ignores the signals it can ignore;
//   - makes itself a child subreaper (PR_SET_CHILD_SUBREAPER): the processes of COMMAND whose parent ends become
//     its children, and it reaps them, so that COMMAND's group is empty once they are gone, not full of zombies;
//   - starts COMMAND in a new process group P, with Pdeathsig SIGTERM should the guard itself be killed, and tells
//     keyward P, then COMMAND's exit status, on the status pipe;
//   - watches the control pipe, whose other end only keyward holds: the kernel closes it when keyward ends, in
//     whatever way. Then, if COMMAND still runs, the guard sends SIGTERM to its group, SIGKILL after the grace;
//   - when COMMAND ends, gives any process COMMAND left in its group the same SIGTERM, then SIGKILL after the
//     grace, and exits once the group is empty: keyward waits for that before it releases the lock.
//
// keyward itself still sends COMMAND's group the signals it forwards, and SIGTERM then SIGKILL when the lock is
// lost. A process that leaves COMMAND's group (setsid, as daemons do) is outside all this, as it is outside a
// shell's job control.

// guardCommand is the hidden sub-command that runs the guard: keyward __guard GRACE fg|bg -- PATH ARGV...
const guardCommand = "__guard"

// Descriptors of the guard's pipes with keyward: ExtraFiles[0] and [1].
const (
	guardStatusFD  = 3 // the guard writes "started PID", then "exited WAITSTATUS" (or "failed MESSAGE")
	guardControlFD = 4 // the guard reads it to its end, which comes when keyward ends or closes it
)

// guardTick is how often the guard looks whether COMMAND's group is empty while it waits for it to end: the
// kernel tells a process when its own child ends, not when a process group has no member left.
const guardTick = 20 * time.Millisecond

// runGuard is the guard process; it returns its exit status.
func runGuard(args []string, stderr io.Writer) int {
	if len(args) < 4 || args[2] != "--" {
		fmt.Fprintln(stderr, "keyward: __guard is keyward's own helper process, not a command")
		return ExitUsage
	}
	grace, err := time.ParseDuration(args[0])
	foreground := args[1] == "fg"
	path, argv := args[3], args[4:]
	if err != nil || len(argv) == 0 {
		fmt.Fprintln(stderr, "keyward: __guard: bad arguments")
		return ExitUsage
	}
	// COMMAND must not inherit the pipes: keyward would not see the status pipe end with the guard.
	syscall.CloseOnExec(guardStatusFD)
	syscall.CloseOnExec(guardControlFD)
	status := os.NewFile(guardStatusFD, "status")
	control := os.NewFile(guardControlFD, "control")
	if status == nil || control == nil {
		fmt.Fprintln(stderr, "keyward: __guard: no pipes to keyward")
		return ExitUsage
	}
	// Caught, not ignored: an ignored signal would stay ignored in COMMAND. SIGPIPE: writing to keyward after it
	// ended must fail, not kill the guard.
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU)
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(stderr, "keyward: __guard: PR_SET_CHILD_SUBREAPER: %v\n", err)
	}
	// Pdeathsig fires when the thread that started the child ends, not the process: keep this one.
	runtime.LockOSThread()
	pid, err := syscall.ForkExec(path, argv, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM, Foreground: foreground, Ctty: 0},
	})
	if err != nil {
		fmt.Fprintf(status, "failed %v\n", err)
		return 0
	}
	fmt.Fprintf(status, "started %d\n", pid)

	g := &guard{pid: pid, grace: grace, status: status, stderr: stderr}
	keywardGone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, control)
		close(keywardGone)
	}()
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGCHLD {
				g.reap()
			}
		case <-keywardGone:
			keywardGone = nil
			if !g.exited {
				g.terminate("keyward ended while COMMAND ran")
			}
		case <-g.tick:
			g.reap()
		case <-g.kill:
			g.kill = nil
			fmt.Fprintf(stderr, "keyward: COMMAND's process group still running %v after SIGTERM: SIGKILL\n", grace)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			g.giveUp = time.After(max(grace, time.Second))
		case <-g.giveUp:
			// Only processes of another user survive SIGKILL (or ones stuck in the kernel): the guard cannot
			// end them, and must not keep keyward, or the lock, forever.
			fmt.Fprintln(stderr, "keyward: processes of COMMAND's group survive SIGKILL (another user's?): left running")
			return 0
		}
		if g.exited && !g.terminating && !g.empty() {
			g.terminate("COMMAND ended, leaving processes running in its process group")
		}
		if g.exited && g.empty() {
			return 0
		}
	}
}

// guard is the state of the guard process.
type guard struct {
	pid         int // COMMAND, and its process group
	grace       time.Duration
	status      io.Writer
	stderr      io.Writer
	exited      bool // COMMAND ended and was reaped
	terminating bool // SIGTERM was sent to the group
	tick        <-chan time.Time
	kill        <-chan time.Time // the grace after SIGTERM ends
	giveUp      <-chan time.Time // the wait after SIGKILL ends
}

// reap collects every child that ended: COMMAND, whose status goes to keyward, and the orphans of its group.
func (g *guard) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		if pid == g.pid {
			g.exited = true
			fmt.Fprintf(g.status, "exited %d\n", int(ws))
		}
	}
}

// empty reports whether COMMAND's process group has no process left, zombies included.
func (g *guard) empty() bool {
	return syscall.Kill(-g.pid, 0) == syscall.ESRCH
}

// terminate sends SIGTERM to COMMAND's group, and SIGKILL after the grace.
func (g *guard) terminate(why string) {
	g.terminating = true
	fmt.Fprintf(g.stderr, "keyward: %s: SIGTERM to its process group, then SIGKILL after %v\n", why, g.grace)
	_ = syscall.Kill(-g.pid, syscall.SIGTERM)
	g.kill = time.After(g.grace)
	g.tick = time.Tick(guardTick)
}

// readGuardStatus reads one line of the status pipe: its word and the rest.
func readGuardStatus(r *bufio.Reader) (string, string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", "", err
	}
	word, rest, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
	return word, rest, nil
}

// parseGuardInt parses the number of a status line.
func parseGuardInt(s string) (int, error) { return strconv.Atoi(strings.TrimSpace(s)) }
