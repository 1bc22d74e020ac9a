// Package testhome runs a package's tests with an empty home and no SSH
// agent, so that nothing reads the developer's own keys (use_local_ssh_keys).
package testhome

import (
	"fmt"
	"os"
	"testing"
)

// Main runs m with HOME set to a new folder and SSH_AUTH_SOCK unset, then
// exits with the tests' code. Each prepare function may fill the folder
// first. Call it from TestMain.
func Main(m *testing.M, prepare ...func(home string) error) {
	home, err := os.MkdirTemp("", "nixos-sd-test-home")
	for _, f := range prepare {
		if err == nil {
			err = f(home)
		}
	}
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
