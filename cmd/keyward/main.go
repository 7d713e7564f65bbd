// Command keyward runs a command under a distributed lock on Redis, shows and releases locks, watches them
// change hands, and runs keyward's demo. Run 'keyward --help' for the sub-commands; the logic lives in
// internal/cli.
//
//	go install github.com/keyward/keyward/cmd/keyward@latest
//	keyward run --no-wait --ttl 10m nightly-report -- ./report.sh
package main

import (
	"context"
	"os"

	"github.com/keyward/keyward/cmd/keyward/internal/cli"
)

// version is keyward's version, set at build time with -ldflags "-X main.version=v1.2.3"; when empty, the
// version go install recorded (or the source revision) is reported.
var version = ""

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], cli.OSEnv(cli.Version(version))))
}
