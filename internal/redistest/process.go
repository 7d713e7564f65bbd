package redistest

import (
	"errors"
	"fmt"
	"os"
	"sync"
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
