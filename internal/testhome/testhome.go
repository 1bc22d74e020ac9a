// Package testhome runs a package's tests with an empty home and no SSH
// agent, so that nothing reads the developer's own keys (use_local_ssh_keys).
package testhome

import (
	"fmt"
	"os"
	"testing"
)

// Main runs m with HOME set to a new empty folder and SSH_AUTH_SOCK unset, then
// exits with the tests' code. Call it from TestMain.
func Main(m *testing.M) {
	home, err := os.MkdirTemp("", "nixos-sd-test-home")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("HOME", home)
	os.Unsetenv("SSH_AUTH_SOCK")
	code := m.Run()
	os.RemoveAll(home)
	os.Exit(code)
}
