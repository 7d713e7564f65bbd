package redistest

import (
	"syscall"
	"time"
	"unsafe"
)

// The two system calls of the rig that the syscall package has no function for, made directly, so that the
// library's module does not require golang.org/x/sys for its tests. Like the rest of the package (Pdeathsig),
// they are Linux's.

// WaitStopped blocks until child pid has stopped (after a SIGSTOP), consuming that report (waitid WSTOPPED, no
// poll). Exits are not reported to it, so it does not interfere with the Wait of os/exec.
func WaitStopped(pid int) error {
	const pPID = 1      // waitid(2)'s P_PID: wait for the child whose pid is given
	var info [16]uint64 // a siginfo_t (128 bytes), which waitid fills in and nobody reads
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pPID, uintptr(pid), uintptr(unsafe.Pointer(&info)),
			syscall.WSTOPPED, 0, 0)
		switch errno {
		case 0:
			return nil
		case syscall.EINTR:
			continue
		}
		return errno
	}
}

// Monotonic reads CLOCK_MONOTONIC: the time since the host booted, the same clock in every process on the host,
// so readings of different processes compare (time.Now's monotonic reading counts from its own process's start).
func Monotonic() (time.Duration, error) {
	const clockMonotonic = 1 // CLOCK_MONOTONIC
	var ts syscall.Timespec
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockMonotonic, uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		return 0, errno
	}
	return time.Duration(ts.Nano()), nil
}
