package builder

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testhome"
)

// testUserKey is the public key in the tests' home (~/.ssh/id_ed25519.pub),
// which the built-in configuration takes when ssh_authorized_keys is not set.
var testUserKey string

// TestMain runs the tests with a home of their own holding one public key,
// and no SSH agent: the machine's keys stay out of the tests.
func TestMain(m *testing.M) { testhome.Main(m, writeTestUserKey) }

func writeTestUserKey(home string) error {
	if err := os.Mkdir(filepath.Join(home, ".ssh"), 0o700); err != nil {
		return err
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		return err
	}
	testUserKey = string(ssh.MarshalAuthorizedKey(pk))
	return os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519.pub"), []byte(testUserKey), 0o644)
}
