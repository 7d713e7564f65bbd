package cli

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
)

const versionUsage = `Usage: keyward version   (or keyward --version)

Prints keyward's version: the one set at build time (-ldflags "-X main.version=…"), else the module version
that go install recorded, else the source revision of a build from a checkout.
`

func versionCommand(ctx context.Context, env Env, args []string) error {
	fs := newFlagSet("version")
	pos, err := parse(fs, args, -1)
	if done, err := help(env, versionUsage, err); done || err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("version takes no arguments")
	}
	fmt.Fprintf(env.Stdout, "keyward %s (%s %s/%s)\n", env.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

// Version returns the version to report: set when it is not empty, else the module version in the build
// information ("v1.2.3" after go install …@v1.2.3), else the VCS revision of a build from a checkout.
func Version(set string) string {
	if set != "" {
		return set
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev == "" {
		return "devel"
	}
	return "devel-" + rev + modified
}
