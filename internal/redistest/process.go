package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
)

// StartProcesses starts n independent redis-servers for a program that is not a test (the benchmark program),
// with the same settings as StartN: free loopback ports (never 6379), no persistence, each verified to be the
// process answering its port, and each killed by the kernel should the caller die. Their directories are made
// under dir. The caller must Stop every server; on error, the servers already started are stopped.
func StartProcesses(dir string, n int, opts ...Option) ([]*Server, error) {
	if Binary() == "" {
		return nil, errors.New("redistest: redis-server not found in PATH (Debian package redis-server)")
	}
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	servers := make([]*Server, n)
	for i := range servers {
		base, err := os.MkdirTemp(dir, "redis-")
		if err != nil {
			return nil, err
		}
		servers[i] = &Server{bin: Binary(), base: base, cfg: cfg}
	}
	ports, err := freePorts(n, cfg.cluster)
	if err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() { errs[i] = s.boot(ports[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, s := range servers {
			err = errors.Join(err, s.stop())
		}
		return nil, fmt.Errorf("redistest: starting %d redis-servers: %w", n, err)
	}
	return servers, nil
}

// Stop kills a server started by StartProcesses (SIGCONT, SIGKILL) and waits until it has exited. Stopping a
// stopped server does nothing.
func (s *Server) Stop() error {
	return s.stop()
}

// Child starts the running test binary again as a child process that runs only TestHelperProcess, with env
// (KEY=VALUE) added to its environment, and returns it with its stdout, read line by line, and its stderr. The
// child is killed by the kernel should the test binary die, and at the end of the test.
func Child(t testing.TB, env ...string) (*exec.Cmd, *bufio.Scanner, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.v=false")
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("redistest: Child: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("redistest: Child: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd, bufio.NewScanner(stdout), &stderr
}
