package main_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// bin is the keyward binary the tests run, built once in TestMain.
var bin string

// childMode is the environment variable that makes the test binary act as a COMMAND for keyward run.
const childMode = "KEYWARD_TEST_CHILD"

// waitFor bounds every wait of these tests: a failure bound on a slow machine, never a synchronisation.
const waitFor = 60 * time.Second

func TestMain(m *testing.M) {
	if mode := os.Getenv(childMode); mode != "" {
		os.Exit(child(mode))
	}
	dir, err := os.MkdirTemp("", "keyward-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := 2
	if bin, err = build(dir); err != nil {
		fmt.Fprintln(os.Stderr, "building keyward:", err)
	} else {
		code = m.Run()
		if code == 0 {
			// goleak.VerifyTestMain, with the temporary directory removed before exiting.
			if err := goleak.Find(); err != nil {
				fmt.Fprintln(os.Stderr, "goleak:", err)
				code = 1
			}
		}
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// build builds this package's binary into dir, as a user's go build would (no race detector: the demo then
// runs at its real speed).
func build(dir string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out := filepath.Join(dir, "keyward")
	cmd := exec.Command(goTool, "build", "-o", out, ".")
	cmd.Stderr = os.Stderr
	return out, cmd.Run()
}

// child is the test binary run by keyward as COMMAND. Modes:
//
//	env        print the KEYWARD_* variables
//	exit N     exit with status N
//	killself   kill itself with SIGKILL
//	hold       print "ready" (and $KEYWARD_TERM), then exit 0 at the end of stdin, or print "got SIGNAL" and exit 3 on SIGTERM/SIGINT
//	stubborn   ignore SIGTERM, print "ready", then wait for stdin to end
func child(mode string) int {
	f := strings.Fields(mode)
	switch f[0] {
	case "env":
		for _, v := range []string{"KEYWARD_KEY", "KEYWARD_FENCE", "KEYWARD_TOKEN"} {
			fmt.Printf("%s=%s\n", v, os.Getenv(v))
		}
		return 0
	case "exit":
		n, _ := strconv.Atoi(f[1])
		return n
	case "killself":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	case "hold":
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		eof := make(chan struct{})
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(eof)
		}()
		fmt.Println("ready", os.Getenv("KEYWARD_TERM"))
		select {
		case s := <-sigs:
			fmt.Printf("got %v\n", s)
			return 3
		case <-eof:
			return 0
		}
	case "stubborn":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown child mode", mode)
	return 2
}

// childCommand returns the argv and environment variable that make keyward run the test binary in mode.
func childCommand(t *testing.T, mode string) ([]string, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{self}, childMode + "=" + mode
}

// proc is a running keyward.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *lines
	errOut *lines
	done   chan struct{}
}

// start runs keyward with args and the extra environment variables env.
func start(t *testing.T, args []string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, stdin: stdin, out: newLines(), errOut: newLines(), done: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	readers.Go(func() { p.out.read(stdout) })
	readers.Go(func() { p.errOut.read(stderr) })
	go func() {
		readers.Wait() // Wait closes the pipes: read them to the end first
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// run runs keyward to the end and returns its exit status, stdout and stderr.
func run(t *testing.T, args []string, env ...string) (int, string, string) {
	t.Helper()
	p := start(t, args, env...)
	_ = p.stdin.Close()
	code := p.wait()
	return code, p.out.String(), p.errOut.String()
}

// wait waits for keyward to exit and returns its exit status.
func (p *proc) wait() int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(waitFor):
		p.t.Fatalf("keyward %s still running after %v\nstdout:\n%s\nstderr:\n%s",
			strings.Join(p.cmd.Args[1:], " "), waitFor, p.out, p.errOut)
	}
	return p.cmd.ProcessState.ExitCode()
}

// signal sends sig to keyward.
func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// lines collects what a process writes, line by line, and lets a test wait for a line.
type lines struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every new line, and at the end
	closed  bool
}

func newLines() *lines { return &lines{changed: make(chan struct{})} }

func (l *lines) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l.mu.Lock()
		l.buf.WriteString(sc.Text() + "\n")
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}
	l.mu.Lock()
	l.closed = true
	close(l.changed)
	l.mu.Unlock()
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

var errEnded = errors.New("output ended")

// await waits until a line contains s, and returns that line.
func (l *lines) await(t *testing.T, s string) string {
	t.Helper()
	return l.awaitN(t, s, 1)
}

// awaitN waits until n lines contain s, and returns the nth.
func (l *lines) awaitN(t *testing.T, s string, n int) string {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		line, found, changed, closed := l.find(s, n)
		if found {
			return line
		}
		if closed {
			t.Fatalf("waiting for %d lines with %q: %v; got:\n%s", n, s, errEnded, l)
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("waiting for %d lines with %q: not after %v; got:\n%s", n, s, waitFor, l)
		}
	}
}

// appeared returns a channel that is closed once a line contains s (never, if the output ends without one).
func (l *lines) appeared(s string) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		for {
			_, found, changed, closed := l.find(s, 1)
			switch {
			case found:
				close(ch)
				return
			case closed:
				return
			}
			<-changed
		}
	}()
	return ch
}

// find returns the nth line that contains s, if there is one, and what to wait on for more.
func (l *lines) find(s string, n int) (line string, found bool, changed <-chan struct{}, closed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range strings.Split(l.buf.String(), "\n") {
		if strings.Contains(line, s) {
			if n--; n == 0 {
				return line, true, nil, false
			}
		}
	}
	return "", false, l.changed, l.closed
}
