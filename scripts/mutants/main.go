// Command mutants is the project's mutation check: it injects small, realistic bugs into a copy of the project,
// one at a time, and reports which test catches each, and how fast.
//
// For each mutation of the list (mutations.go) it copies the project's files (tracked, and untracked ones that
// are not ignored) into a fresh temporary directory, replaces one piece of text in one file (the text must occur
// exactly once there, or the mutation is reported broken), checks that the copy still compiles (go build ./...,
// and the test binaries of the packages that should catch it), and runs those packages' tests. The first test
// that fails ends the run: it caught the mutation. A run that passes MISSED it; one that reaches the timeout
// HUNG (a test waited for something that never happened, instead of failing). The working tree is never
// touched, and the temporary directories are removed.
//
// It prints a markdown table (mutation, caught by, the catching test's own time, the whole run's time) and the
// score. Run it from anywhere in the repository:
//
//	make mutants
//	go run ./scripts/mutants -run 'release|fence' -j 2 -timeout 3m
//
// Flags: -run selects mutations by a regexp on their names; -timeout bounds each mutation's go test run; -j runs
// that many mutations at once; -race runs the tests with the race detector; -all lets every package finish and
// lists every failing test instead of stopping at the first; -v prints the output of the test that caught a
// mutation, or the end of the go test output when none did; -list lists the mutations and checks that each one's text occurs exactly once, without running.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// A mutation is one injected bug: Old, which must occur exactly once in File, is replaced by New.
type mutation struct {
	Name string   // short identifier, matched by -run
	Bug  string   // the bug, in words
	File string   // path relative to the repository root
	Old  string   // text replaced; must occur exactly once in File
	New  string   // its replacement
	Pkgs []string // the packages whose tests should catch it
}

// verdict kinds
const (
	caught  = "caught"
	missed  = "MISSED"
	hung    = "HUNG"
	broken  = "BROKEN"
	failure = "ERROR" // the runner itself failed (copying, go not found)
)

// result is what running one mutation found.
type result struct {
	m       mutation
	kind    string
	by      []string      // failing tests (package-qualified), first one first; for HUNG: the tests running
	elapsed time.Duration // the first failing test's own time
	wall    time.Duration // from the start of go test to the catch (or to the end)
	detail  string        // why broken, or the tail of the output
}

func main() {
	runRe := flag.String("run", "", "run only the mutations whose names match this regexp")
	timeout := flag.Duration("timeout", 4*time.Minute, "go test -timeout for each mutation")
	jobs := flag.Int("j", 1, "mutations run at once")
	race := flag.Bool("race", false, "run the tests with the race detector")
	all := flag.Bool("all", false, "let the tests run to the end and list every failing test")
	verbose := flag.Bool("v", false, "print the catching test's output, or the end of go test's when no test caught it")
	list := flag.Bool("list", false, "list the mutations, check that each one's text occurs once, and exit")
	flag.Parse()

	sel, err := regexp.Compile(*runRe)
	if err != nil {
		fatalf("-run: %v", err)
	}
	var todo []mutation
	for _, m := range mutations {
		if sel.MatchString(m.Name) {
			todo = append(todo, m)
		}
	}
	if len(todo) == 0 {
		fatalf("no mutation matches -run %q", *runRe)
	}
	root, err := output("", "git", "rev-parse", "--show-toplevel")
	if err != nil {
		fatalf("not in a git repository: %v", err)
	}
	if *list {
		bad := 0
		for _, m := range todo {
			b, err := os.ReadFile(filepath.Join(root, m.File))
			state := "ok"
			if n := strings.Count(string(b), m.Old); err != nil || n != 1 {
				state, bad = fmt.Sprintf("BROKEN: found %d times", n), bad+1
			}
			fmt.Printf("%-36s %-28s %s\n", m.Name, m.File, state)
		}
		if bad > 0 {
			os.Exit(1)
		}
		return
	}
	files, err := projectFiles(root)
	if err != nil {
		fatalf("listing the project's files: %v", err)
	}

	start := time.Now()
	results := make([]result, len(todo))
	next := make(chan int, len(todo)) // the mutations are started in the list's order
	for i := range todo {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for range min(max(*jobs, 1), len(todo)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				m := todo[i]
				r := run(root, files, m, runConfig{timeout: *timeout, race: *race, all: *all})
				results[i] = r
				mu.Lock()
				fmt.Fprintf(os.Stderr, "%-36s %s\n", m.Name, summary(r))
				if *verbose && r.detail != "" {
					fmt.Fprintf(os.Stderr, "%s\n", indent(r.detail))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()

	fmt.Println()
	fmt.Println("| mutation | bug | caught by | test time | run time |")
	fmt.Println("|---|---|---|--:|--:|")
	n := 0
	for _, r := range results {
		if r.kind == caught {
			n++
		}
		fmt.Printf("| `%s` | %s | %s | %s | %s |\n", r.m.Name, r.m.Bug, cell(r), testTime(r), r.wall.Round(100*time.Millisecond))
	}
	fmt.Printf("\ncaught %d/%d in %s (-j %d, -timeout %s, race %v)\n", n, len(results),
		time.Since(start).Round(time.Second), max(*jobs, 1), *timeout, *race)
	if n != len(results) {
		os.Exit(1)
	}
}

func summary(r result) string {
	switch r.kind {
	case caught:
		return fmt.Sprintf("caught by %s after %s (run %s)", strings.Join(r.by, ", "), r.elapsed, r.wall.Round(100*time.Millisecond))
	case hung:
		return fmt.Sprintf("HUNG (running: %s)", strings.Join(r.by, ", "))
	case broken, failure:
		return fmt.Sprintf("%s: %s", r.kind, firstLine(r.detail))
	}
	return r.kind
}

func cell(r result) string {
	switch r.kind {
	case caught:
		names := make([]string, len(r.by))
		for i, b := range r.by {
			names[i] = "`" + b + "`"
		}
		return strings.Join(names, ", ")
	case hung:
		return "**HUNG** in " + strings.Join(r.by, ", ")
	case broken, failure:
		return "**" + r.kind + "**: " + strings.ReplaceAll(firstLine(r.detail), "|", "\\|")
	}
	return "**" + r.kind + "**"
}

func testTime(r result) string {
	if r.kind != caught {
		return "–"
	}
	return r.elapsed.String()
}

type runConfig struct {
	timeout time.Duration
	race    bool
	all     bool
}

// run applies m to a fresh copy of the project and runs its packages' tests.
func run(root string, files []string, m mutation, cfg runConfig) result {
	r := result{m: m}
	dir, err := os.MkdirTemp("", "keyward-mutant-")
	if err != nil {
		return fail(r, err)
	}
	defer os.RemoveAll(dir)
	if err := copyFiles(root, dir, files); err != nil {
		return fail(r, err)
	}
	if err := apply(filepath.Join(dir, m.File), m.Old, m.New); err != nil {
		r.kind, r.detail = broken, err.Error()
		return r
	}
	if out, err := output(dir, "go", "build", "./..."); err != nil {
		r.kind, r.detail = broken, "does not compile: "+out
		return r
	}
	if out, err := output(dir, "go", append([]string{"test", "-count=1", "-run", "XXX_none"}, m.Pkgs...)...); err != nil {
		r.kind, r.detail = broken, "tests do not compile: "+out
		return r
	}
	args := []string{"test", "-json", "-count=1", "-timeout", cfg.timeout.String()}
	if cfg.race {
		args = append(args, "-race")
	}
	args = append(args, m.Pkgs...)
	return test(r, dir, args, cfg)
}

func fail(r result, err error) result {
	r.kind, r.detail = failure, err.Error()
	return r
}

// apply replaces old by new in file, which must hold old exactly once.
func apply(file, old, new string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if n := strings.Count(string(b), old); n != 1 {
		return fmt.Errorf("the text to replace occurs %d times in %s, not once", n, filepath.Base(file))
	}
	return os.WriteFile(file, []byte(strings.Replace(string(b), old, new, 1)), 0o644)
}

// testEvent is one line of go test -json.
type testEvent struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

// test runs go test with args in dir and reads its events: the first test that fails catches the mutation.
func test(r result, dir string, args []string, cfg runConfig) result {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout+time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	ownGroup(cmd)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fail(r, err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fail(r, err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			killGroup(cmd)
		}
	}
	defer stop()

	var (
		tail      []string                // the last lines of output, for -v
		outputs   = map[string][]string{} // each running test's output, for -v
		failed    []string                // the first failing test's output
		timedOut  bool
		running   []string // tests named after "panic: test timed out"
		inRunning bool
		pkgFailed string
	)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e testEvent
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		switch e.Action {
		case "output":
			line := strings.TrimRight(e.Output, "\n")
			tail = append(tail, line)
			if len(tail) > 60 {
				tail = tail[1:]
			}
			if e.Test != "" {
				k := e.Package + " " + e.Test
				if o := outputs[k]; len(o) < 40 {
					outputs[k] = append(o, line)
				}
			}
			switch {
			case strings.HasPrefix(line, "panic: test timed out"):
				timedOut, inRunning = true, false
			case timedOut && strings.TrimSpace(line) == "running tests:":
				inRunning = true
			case inRunning && strings.HasPrefix(line, "\t"):
				running = append(running, short(e.Package)+"."+strings.Fields(line)[0])
			default:
				inRunning = false
			}
		case "fail":
			if e.Test == "" {
				if pkgFailed == "" {
					pkgFailed = short(e.Package)
				}
				continue
			}
			if timedOut {
				continue
			}
			// A parent test fails after its subtest: keep the leaf, the first to fail.
			name := short(e.Package) + "." + e.Test
			if len(r.by) > 0 && strings.HasPrefix(r.by[len(r.by)-1], name+"/") {
				continue
			}
			if len(r.by) == 0 {
				r.elapsed = time.Duration(e.Elapsed * float64(time.Second))
				r.wall = time.Since(start)
				failed = outputs[e.Package+" "+e.Test]
			}
			r.by = append(r.by, name)
			if !cfg.all {
				stop()
			}
		}
	}
	waitErr := cmd.Wait()
	if r.wall == 0 {
		r.wall = time.Since(start)
	}
	r.detail = strings.Join(tail, "\n")
	switch {
	case timedOut:
		r.kind, r.by = hung, running
	case len(r.by) > 0:
		r.kind, r.detail = caught, strings.Join(failed, "\n")
	case pkgFailed != "":
		// A package failed outside any test (TestMain, a panic in init, a leak check): that catches it too.
		r.kind, r.by = caught, []string{pkgFailed + " (package)"}
		r.elapsed = r.wall
	case ctx.Err() != nil:
		r.kind = hung
	case waitErr != nil && !stopped:
		r.kind, r.detail = failure, fmt.Sprintf("go test: %v\n%s\n%s", waitErr, stderr.String(), r.detail)
	default:
		r.kind = missed
	}
	return r
}

// short drops the module path from a package path.
func short(pkg string) string {
	return strings.TrimPrefix(pkg, "github.com/keyward/keyward/")
}

// projectFiles lists the project's files: tracked ones and untracked ones that are not ignored, that exist.
func projectFiles(root string) ([]string, error) {
	out, err := output(root, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var files []string
	for _, f := range strings.Split(out, "\x00") {
		if f == "" || seen[f] {
			continue
		}
		seen[f] = true
		if fi, err := os.Lstat(filepath.Join(root, f)); err != nil || !fi.Mode().IsRegular() {
			continue // deleted in the work tree, a submodule, or a symlink
		}
		files = append(files, f)
	}
	sort.Strings(files)
	return files, nil
}

func copyFiles(from, to string, files []string) error {
	for _, f := range files {
		if err := copyFile(filepath.Join(from, f), filepath.Join(to, f)); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(from, to string) error {
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// output runs a command in dir and returns its trimmed output (stdout and stderr).
func output(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off") // the library's module alone, as its users build it
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	out := strings.TrimSpace(buf.String())
	var exit *exec.ExitError
	if errors.As(err, &exit) && out != "" {
		err = fmt.Errorf("%s: %s", name, firstLine(out))
	}
	return out, err
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	for _, l := range strings.Split(s, "\n") {
		// go's "# package" headers say nothing about the error
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			return l
		}
	}
	return s
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mutants: "+format+"\n", args...)
	os.Exit(2)
}
