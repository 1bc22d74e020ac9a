package provisioner

import (
	"fmt"
	"os"
	"testing"
)

// TestMain runs the tests with an empty home and no SSH agent: the built-in
// configuration would otherwise take the user's own public keys
// (use_local_ssh_keys).
func TestMain(m *testing.M) {
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
