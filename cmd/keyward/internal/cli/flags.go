package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// errHelp is returned by parse when --help was asked for; the sub-command then prints its usage and exits 0.
var errHelp = flag.ErrHelp

// newFlagSet returns a FlagSet that reports errors to its caller instead of printing them.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parse parses fs's flags wherever they appear among args until "--", or until maxPos positional arguments were
// seen (maxPos < 0: no limit). It returns the positional arguments, then everything after "--" or after the
// maxPos-th positional argument verbatim: `run KEY --ttl 1m -- ls -l` and `run --ttl 1m KEY ls -l` both give
// [KEY ls -l], the -l left for ls.
func parse(fs *flag.FlagSet, args []string, maxPos int) ([]string, error) {
	var pos []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, usagef("%s", dashes(err.Error()))
		}
		consumed := len(rest) - len(fs.Args())
		terminated := consumed > 0 && rest[consumed-1] == "--"
		rest = fs.Args()
		switch {
		case terminated, maxPos >= 0 && len(pos) >= maxPos:
			return append(pos, rest...), nil
		case len(rest) == 0:
			return pos, nil
		}
		pos = append(pos, rest[0])
		rest = rest[1:]
	}
}

// dashes rewrites the flag package's "-name" in its messages as "--name", the spelling the help uses.
func dashes(msg string) string {
	for _, prefix := range []string{"flag provided but not defined: -", "for flag -", "flag needs an argument: -"} {
		msg = strings.Replace(msg, prefix, prefix+"-", 1)
	}
	return msg
}

// durationValue is a flag.Value for durations: Go's syntax (30s, 10m, 1h30m), or a bare number of seconds as
// flock(1) takes them.
type durationValue struct {
	d   *time.Duration
	set bool
}

func newDuration(fs *flag.FlagSet, d *time.Duration, name, usage string) *durationValue {
	v := &durationValue{d: d}
	fs.Var(v, name, usage)
	return v
}

func (v *durationValue) String() string {
	if v == nil || v.d == nil {
		return ""
	}
	return v.d.String()
}

func (v *durationValue) Set(s string) error {
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if secs < 0 || secs > (1<<62)/float64(time.Second) {
			return errors.New("want a duration such as 30s, 10m or 1h, not negative")
		}
		*v.d = time.Duration(secs * float64(time.Second))
		v.set = true
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return errors.New("want a duration such as 30s, 10m or 1h, not negative")
	}
	*v.d = d
	v.set = true
	return nil
}

// help returns nil after printing usage when err is errHelp, else err.
func help(env Env, usage string, err error) (bool, error) {
	if errors.Is(err, errHelp) {
		fmt.Fprint(env.Stdout, usage)
		return true, nil
	}
	return false, err
}
