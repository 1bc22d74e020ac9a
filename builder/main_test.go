package builder

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"
)

// testUserKey is the public key in the tests' home (~/.ssh/id_ed25519.pub),
// which the built-in configuration takes when ssh_authorized_keys is not set.
var testUserKey string

// TestMain runs the tests with a home of their own holding one public key,
// and no SSH agent: the machine's keys stay out of the tests.
func TestMain(m *testing.M) {
	home, err := os.MkdirTemp("", "nixos-sd-test-home")
	if err == nil {
		err = os.Mkdir(filepath.Join(home, ".ssh"), 0o700)
	}
	var pk ssh.PublicKey
	if err == nil {
		var pub ed25519.PublicKey
		pub, _, err = ed25519.GenerateKey(rand.Reader)
		if err == nil {
			pk, err = ssh.NewPublicKey(pub)
		}
	}
	if err == nil {
		testUserKey = string(ssh.MarshalAuthorizedKey(pk))
		err = os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519.pub"), []byte(testUserKey), 0o644)
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
