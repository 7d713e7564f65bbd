package main_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// groupCommand is a COMMAND that starts a grandchild, a background sleep, writes "SHELLPID SLEEPPID" to
// pidfile, says ready and waits for the sleep; with exit, it exits at once instead, leaving the sleep behind.
func groupCommand(pidfile string, exit bool) []string {
	// The sleep's output goes elsewhere: keyward's pipes end with keyward, whatever the sleep does.
	script := `sleep 1000 >/dev/null 2>&1 & echo $$ $! > "$1"; echo ready; wait`
	if exit {
		script = `sleep 1000 >/dev/null 2>&1 & echo $$ $! > "$1"; echo ready`
	}
	return []string{"sh", "-c", script, "sh", pidfile}
}

// readPIDs reads the shell's and the sleep's pids from pidfile.
func readPIDs(t *testing.T, pidfile string) (int, int) {
	t.Helper()
	b, err := os.ReadFile(pidfile)
	require.NoError(t, err)
	f := strings.Fields(string(b))
	require.Len(t, f, 2, "%q", b)
	shell, err := strconv.Atoi(f[0])
	require.NoError(t, err)
	sleep, err := strconv.Atoi(f[1])
	require.NoError(t, err)
	return shell, sleep
}

// pidfd opens a pidfd of pid, which becomes readable when the process ends.
func pidfd(t *testing.T, pid int) int {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	require.NoError(t, err, "pid %d", pid)
	t.Cleanup(func() { _ = unix.Close(fd) })
	return fd
}

// awaitEnd waits until the process of fd (a pidfd) has ended, for at most waitFor.
func awaitEnd(t *testing.T, fd int, what string) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(waitFor.Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		require.NoError(t, err)
		require.Equal(t, 1, n, "%s still running %v after keyward was killed: two holders of the lock", what, waitFor)
		return
	}
}

// gone reports whether no process has pid any more (not even a zombie).
func gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// kill -9 of keyward ends COMMAND's whole process group, not only COMMAND: the next holder of the lock must not
// run beside what the last one started.
func TestKilledKeywardTakesCommandsGroupAlong(t *testing.T) {
	_, _, url := server(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{name: "run", args: []string{"run", "--grace", "1s", "job", "--"}},
		{name: "elect", args: []string{"elect", "--ttl", "2s", "--grace", "1s", "leader", "--"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pidfile := filepath.Join(t.TempDir(), "pids")
			p := start(t, append(tc.args, groupCommand(pidfile, false)...), url)
			p.out.await(t, "ready")
			shell, sleep := readPIDs(t, pidfile)
			shellFD, sleepFD := pidfd(t, shell), pidfd(t, sleep)
			t.Cleanup(func() { _ = syscall.Kill(sleep, syscall.SIGKILL) })

			p.signal(syscall.SIGKILL)
			awaitEnd(t, sleepFD, "COMMAND's background child")
			awaitEnd(t, shellFD, "COMMAND")
			p.wait()
			assert.Contains(t, p.errOut.String(), "keyward ended while COMMAND ran: SIGTERM to its process group")
		})
	}
}

// What COMMAND leaves running in its process group when it ends is stopped before the lock is released.
func TestCommandsLeftoversEndBeforeTheRelease(t *testing.T) {
	_, rdb, url := server(t)
	pidfile := filepath.Join(t.TempDir(), "pids")
	code, stdout, stderr := run(t, append([]string{"run", "job", "--"}, groupCommand(pidfile, true)...), url)
	assert.Equal(t, 0, code, "COMMAND's status; stderr: %s", stderr)
	assert.Contains(t, stdout, "ready")
	assert.Contains(t, stderr, "COMMAND ended, leaving processes running in its process group: SIGTERM")
	_, sleep := readPIDs(t, pidfile)
	t.Cleanup(func() { _ = syscall.Kill(sleep, syscall.SIGKILL) })
	assert.True(t, gone(sleep), "the background sleep %d ended, and was reaped, before keyward exited", sleep)
	assert.Zero(t, rdb.Exists(context.Background(), "job").Val())
}
