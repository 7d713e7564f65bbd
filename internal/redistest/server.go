package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// readyTimeout bounds the wait for a freshly started server to answer PING.
	readyTimeout = 10 * time.Second
	// startAttempts is how often a start is retried when the port turned out
	// to be taken between picking it and redis-server binding it.
	startAttempts = 5
	// killTimeout bounds the wait for a SIGKILLed server to be reaped.
	killTimeout = 10 * time.Second
	// clusterBusOffset is how far above its port a cluster node listens for
	// the cluster bus (Redis' default, cluster-port 0).
	clusterBusOffset = 10000
	// defaultRedisPort is never handed to a test server, so that a test can
	// never talk to (or clobber) a developer's real Redis by accident.
	defaultRedisPort = 6379
	// logTailLines is how much of the server log a failure message shows.
	logTailLines = 30
)

// errPortBusy reports that redis-server could not bind its port.
var errPortBusy = errors.New("port already in use")

// Binary returns the path of redis-server found in $PATH (or "" if absent).
func Binary() string { return lookPath("redis-server") }

// lookPath returns the path of the program name found in $PATH (or "" if absent).
func lookPath(name string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}

// Require fails the test when redis-server is missing and the environment
// variable CI is "true"; otherwise it skips the test with a loud message. It
// does nothing when redis-server is in $PATH.
func Require(t testing.TB) {
	t.Helper()
	requireProgram(t, "redis-server")
}

// requireProgram is Require for the program name, which comes with Debian's
// redis-server package (redis-server itself, or redis-cli from redis-tools,
// which it depends on).
func requireProgram(t testing.TB, name string) {
	t.Helper()
	if lookPath(name) != "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("FAILED: %s not found in PATH and CI=true; install Debian's redis-server (make test does)", name)
	}
	t.Skipf("SKIPPED: %s not found in PATH; install Debian's redis-server (make test does) — integration test not run", name)
}

// config collects what the Options ask for.
type config struct {
	notify    string
	hasNotify bool
	cluster   bool
	args      []string
	// conf are lines for the server's config file (see Server.confFile),
	// written before its first start; the Sentinel and Cluster rigs use it.
	conf []string
	// sentinel starts the process in Sentinel mode (--sentinel).
	sentinel bool
}

// Option configures a server started by Start or StartN.
type Option func(*config)

// WithNotify starts the server with notify-keyspace-events set to flags
// (e.g. "Kgx"), so keyspace notifications are published.
func WithNotify(flags string) Option {
	return func(c *config) {
		c.notify = flags
		c.hasNotify = true
	}
}

// WithCluster starts the server with cluster-enabled yes, using a config file
// and a nodes.conf in the server's own directory (kept across Restart, so the
// node keeps its identity). No slots are assigned: this is enough for CLUSTER
// KEYSLOT and the like, not for storing keys; StartCluster makes a cluster
// that stores keys.
func WithCluster() Option {
	return func(c *config) { c.cluster = true }
}

// WithArgs appends raw redis-server arguments (e.g. "--maxmemory", "1mb").
// They come last, so they override the defaults Start sets.
func WithArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// Server is a redis-server process owned by a test. It is started by Start
// or StartN and killed when the test ends. Its methods are safe for
// concurrent use.
type Server struct {
	bin  string
	base string // directory holding one subdirectory per incarnation
	cfg  config

	mu   sync.Mutex
	port int
	runs int   // incarnations started so far, names their directories
	proc *proc // current incarnation; nil until the first start succeeded
}

// proc is one redis-server process.
type proc struct {
	cmd    *exec.Cmd
	dir    string
	done   chan struct{} // closed once the process has exited and been reaped
	paused bool
}

// Start starts one redis-server on a free loopback port (never 6379) in its
// own t.TempDir(), with no persistence (--save "" --appendonly no), bound to
// 127.0.0.1, protected mode off and its log in its directory. It returns once
// the server answers PING (and is verified to be this process, not another
// server that grabbed the port). If the port was taken in the meantime it
// retries with another port a few times. The server is killed (SIGCONT,
// SIGKILL, wait) in t.Cleanup; Pdeathsig makes the kernel kill it too should
// the test binary die. Start calls Require(t) first.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	Require(t)
	s := newServer(t, opts)
	ports, err := freePorts(1, s.cfg.cluster)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	if err := s.boot(ports[0]); err != nil {
		t.Fatalf("redistest: starting redis-server: %v", err)
	}
	return s
}

// StartN starts n independent servers in parallel with the same options. See
// Start.
func StartN(t testing.TB, n int, opts ...Option) []*Server {
	t.Helper()
	Require(t)
	servers := make([]*Server, n)
	for i := range servers {
		servers[i] = newServer(t, opts)
	}
	// Pick all ports while holding the listeners, so the n servers at least
	// do not collide with each other.
	ports, err := freePorts(n, len(servers) > 0 && servers[0].cfg.cluster)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.boot(ports[i])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("redistest: starting %d redis-servers: %v", n, err)
	}
	return servers
}

// newServer prepares a Server whose process, once started, is stopped in
// t.Cleanup. It must run on the test goroutine.
func newServer(t testing.TB, opts []Option) *Server {
	var cfg config
	for _, o := range opts {
		o(&cfg)
	}
	s := &Server{bin: Binary(), base: t.TempDir(), cfg: cfg}
	t.Cleanup(func() {
		if err := s.stop(); err != nil {
			t.Errorf("redistest: stopping redis-server: %v", err)
		}
	})
	return s
}

// boot starts the first incarnation, on port or, should that be taken, on
// other free ports.
func (s *Server) boot(port int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for range startAttempts {
		var p *proc
		p, err = s.launch(port)
		if err == nil {
			s.port, s.proc = port, p
			return nil
		}
		if !errors.Is(err, errPortBusy) {
			return err
		}
		ports, perr := freePorts(1, s.cfg.cluster)
		if perr != nil {
			return perr
		}
		port = ports[0]
	}
	return fmt.Errorf("gave up after %d attempts: %w", startAttempts, err)
}

// launch starts a new incarnation in a fresh directory and waits until it
// answers. On failure the process is gone when launch returns. Called with
// s.mu held.
func (s *Server) launch(port int) (*proc, error) {
	s.runs++
	dir := filepath.Join(s.base, strconv.Itoa(s.runs))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	var args []string
	if conf, err := s.confFile(); err != nil {
		return nil, err
	} else if conf != "" {
		// A config file has to be the first argument.
		args = append(args, conf)
	}
	if s.cfg.sentinel {
		args = append(args, "--sentinel")
	}
	args = append(args,
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--protected-mode", "no",
		"--save", "",
		"--appendonly", "no",
		"--dir", dir,
		"--daemonize", "no",
		"--logfile", filepath.Join(dir, "redis.log"),
	)
	if s.cfg.hasNotify {
		args = append(args, "--notify-keyspace-events", s.cfg.notify)
	}
	args = append(args, s.cfg.args...)

	// Errors before the log is opened (bad arguments) go to stdout/stderr.
	stdio, err := os.Create(filepath.Join(dir, "stdio.log"))
	if err != nil {
		return nil, err
	}
	defer stdio.Close() // the child has its own copy
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = stdio, stdio
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, dir: dir, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()

	if err := p.waitReady(port); err != nil {
		if kerr := p.kill(); kerr != nil {
			err = errors.Join(err, kerr)
		}
		if strings.Contains(p.log(), "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortBusy, err)
		}
		return nil, fmt.Errorf("redis-server %s on port %d: %w\n%s", strings.Join(args, " "), port, err, p.logTail())
	}
	return p, nil
}

// confFile returns the path of the server's config file, writing it before
// the first start, or "" when the server needs none. The file lives in the
// server's base directory, not in an incarnation's, so that Restart keeps
// what the server wrote to it: a Sentinel rewrites its file with what it
// learnt (replicas, other sentinels, the current master), CONFIG REWRITE (which
// a Sentinel sends after REPLICAOF) records whom a data node replicates, and
// a cluster node's nodes.conf holds its identity and view of the cluster.
// Command-line arguments come after the file and override it, so a restarted
// server still gets its own port, directory and log. Called with s.mu held.
func (s *Server) confFile() (string, error) {
	if !s.cfg.cluster && !s.cfg.sentinel && len(s.cfg.conf) == 0 {
		return "", nil
	}
	path := s.confPath()
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	var text strings.Builder
	if s.cfg.cluster {
		text.WriteString("cluster-enabled yes\ncluster-config-file " + filepath.Join(s.base, "nodes.conf") + "\n")
	}
	for _, l := range s.cfg.conf {
		text.WriteString(l + "\n")
	}
	return path, os.WriteFile(path, []byte(text.String()), 0o600)
}

// confPath is where confFile keeps the config file.
func (s *Server) confPath() string {
	return filepath.Join(s.base, "redis.conf")
}

// waitReady polls until the server on port answers PING and INFO says it is
// this process. This is the one poll loop in the package: redis-server has no
// way to tell its parent it is listening.
func (p *proc) waitReady(port int) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	deadline := time.Now().Add(readyTimeout)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var last error
	for {
		select {
		case <-p.done:
			return fmt.Errorf("exited before answering PING (%v)", p.cmd.ProcessState)
		case <-timer.C:
		}
		last = probe(addr, p.cmd.Process.Pid)
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not answering PING after %v: %w", readyTimeout, last)
		}
		timer.Reset(10 * time.Millisecond)
	}
}

// probe sends PING and INFO server to addr and checks the answer comes from
// process pid.
func probe(addr string, pid int) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := io.WriteString(c, "PING\r\nINFO server\r\n"); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	line, err = r.ReadString('\n')
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "$")))
	if !strings.HasPrefix(line, "$") || err != nil {
		return fmt.Errorf("INFO answered %q", strings.TrimSpace(line))
	}
	info := make([]byte, n+2)
	if _, err := io.ReadFull(r, info); err != nil {
		return err
	}
	want := "process_id:" + strconv.Itoa(pid) + "\r\n"
	if !strings.Contains(string(info), want) {
		return fmt.Errorf("another server answers on %s", addr)
	}
	return nil
}

// alive reports whether the process has not exited yet.
func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGCONT (in case it is paused) and SIGKILL and waits until the
// process has been reaped. Signals go through the os.Process (a pidfd), so a
// recycled PID can never be hit.
func (p *proc) kill() error {
	if p.alive() {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return err
		}
	}
	select {
	case <-p.done:
		p.paused = false
		return nil
	case <-time.After(killTimeout):
		return fmt.Errorf("pid %d still running %v after SIGKILL", p.cmd.Process.Pid, killTimeout)
	}
}

// log returns the server log and anything printed on stdout/stderr.
func (p *proc) log() string {
	var b strings.Builder
	for _, name := range []string{"stdio.log", "redis.log"} {
		data, err := os.ReadFile(filepath.Join(p.dir, name))
		if err == nil {
			b.Write(data)
		}
	}
	return b.String()
}

// logTail returns the last lines of log, for failure messages.
func (p *proc) logTail() string {
	lines := strings.Split(strings.TrimRight(p.log(), "\n"), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return "--- redis-server log (" + p.dir + ") ---\n" + strings.Join(lines, "\n")
}

// stop kills the current process, if any. It is the t.Cleanup of Start.
func (s *Server) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	return s.proc.kill()
}

// Addr returns the server address, "127.0.0.1:PORT".
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port()))
}

// Port returns the TCP port the server listens on. It never changes, not
// even across Restart.
func (s *Server) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.port
}

// PID returns the process id of the current redis-server process; it changes
// after Restart.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc.cmd.Process.Pid
}

// Alive reports whether the process is running (a paused process is
// running).
func (s *Server) Alive() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc.alive()
}

// Log returns the log of the current process (its redis.log, preceded by
// anything it printed on stdout/stderr), for diagnostics.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc.log()
}

// ClientOptions returns the go-redis options Client uses, so a test can
// adjust them and pass them to NewClient: DialTimeout 1s, ReadTimeout and
// WriteTimeout 2s, PoolSize ClientPoolSize, one dial attempt per connection
// (DialerRetries 1: a refused loopback dial will not succeed 100 ms later),
// ContextTimeoutEnabled (a context deadline shortens the socket deadline of
// a command), no CLIENT SETINFO, and maintenance notifications disabled
// (they start background goroutines and are for Redis Enterprise/Cloud
// only). MaxRetries keeps the go-redis default (3).
func (s *Server) ClientOptions() *redis.Options {
	return clientOptions(s.Addr())
}

// Client returns a new go-redis client for this server with ClientOptions,
// closed in t.Cleanup. It keeps working across Restart: dead pooled
// connections are dropped and new ones dialled.
func (s *Server) Client(t testing.TB) *redis.Client {
	return NewClient(t, s.ClientOptions())
}

// Kill sends SIGKILL (after SIGCONT, should it be paused) and waits for the
// process to exit. The data is gone: there is no persistence. Killing a dead
// server does nothing.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.proc.kill(); err != nil {
		t.Fatalf("redistest: Kill: %v", err)
	}
}

// Pause sends SIGSTOP and returns once the kernel reports the process as
// stopped: from then on it accepts TCP connections (the kernel does) but
// answers nothing until Resume. Pausing a paused server does nothing.
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	if !p.alive() {
		t.Fatalf("redistest: Pause: redis-server (pid %d) is not running", p.cmd.Process.Pid)
	}
	if p.paused {
		return
	}
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("redistest: Pause: %v", err)
	}
	if err := WaitStopped(p.cmd.Process.Pid); err != nil {
		t.Fatalf("redistest: Pause: waiting for pid %d to stop: %v", p.cmd.Process.Pid, err)
	}
	p.paused = true
}

// Resume sends SIGCONT to a paused server, which then answers what it
// received meanwhile.
func (s *Server) Resume(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.proc
	if !p.alive() {
		t.Fatalf("redistest: Resume: redis-server (pid %d) is not running", p.cmd.Process.Pid)
	}
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("redistest: Resume: %v", err)
	}
	p.paused = false
}

// Restart kills the server if it is running and starts a fresh, empty one on
// the same port with the same options, in a new directory; it returns when
// PING answers again. Existing go-redis clients reconnect by themselves. A
// server with a config file keeps it (see StartSentinel and StartCluster): a
// sentinel keeps what it learnt, a replica whom it replicates, a cluster
// node its nodes.conf, so each rejoins its deployment.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.proc.kill(); err != nil {
		t.Fatalf("redistest: Restart: %v", err)
	}
	var err error
	for range startAttempts {
		var p *proc
		if p, err = s.launch(s.port); err == nil {
			s.proc = p
			return
		}
		if !errors.Is(err, errPortBusy) {
			break
		}
		// Someone else holds the port: give them a moment, the port is
		// fixed.
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("redistest: Restart on port %d: %v", s.port, err)
}

// freePorts returns n distinct free loopback ports, none of them 6379; with
// bus, port+clusterBusOffset is free too for each, as a cluster node binds
// both. The listeners are held until all are picked, then closed: a port may
// still be taken by someone else before redis-server binds it, which Start
// handles.
func freePorts(n int, bus bool) ([]int, error) {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	var ports []int
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("picking a free port: %w", err)
		}
		held = append(held, l) // holding 6379 too keeps it from coming back
		if len(held) > 4*n+40 {
			return nil, errors.New("picking a free port: the OS keeps handing out 6379 or ports whose cluster bus port is taken")
		}
		port := l.Addr().(*net.TCPAddr).Port
		if port == defaultRedisPort {
			continue
		}
		if bus {
			// Ephemeral ports go up to 60999 on Linux, so about half of
			// them have no bus port below 65536.
			if port+clusterBusOffset > 65535 || port+clusterBusOffset == defaultRedisPort {
				continue
			}
			bl, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+clusterBusOffset)))
			if err != nil {
				continue
			}
			held = append(held, bl)
		}
		ports = append(ports, port)
	}
	return ports, nil
}

// reachable reports whether the process runs and is not paused, that is
// whether the rig should expect an answer from it.
func (s *Server) reachable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil && s.proc.alive() && !s.proc.paused
}

// withConf adds lines to the server's config file (see confFile).
func withConf(lines ...string) Option {
	return func(c *config) { c.conf = append(c.conf, lines...) }
}

// startOne prepares a server with opts and starts it on port (or another
// free port should that be taken), failing the test if it cannot.
func startOne(t testing.TB, port int, opts []Option) *Server {
	t.Helper()
	s := newServer(t, opts)
	if err := s.boot(port); err != nil {
		t.Fatalf("redistest: starting redis-server: %v", err)
	}
	return s
}

// appendConf appends a line to the server's config file; it takes effect at
// the next start (a later line overrides an earlier one).
func (s *Server) appendConf(line string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(s.confPath(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString("\n" + line + "\n"); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// String returns the server's address, for messages.
func (s *Server) String() string {
	return s.Addr()
}
