//go:build !unix

package main

import "os/exec"

// ownGroup leaves cmd as it is: without process groups, stopping go test may leave its test binaries running
// until their own timeout.
func ownGroup(cmd *exec.Cmd) {}

// killGroup stops cmd.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		_ = cmd.Process.Kill()
	}
}
