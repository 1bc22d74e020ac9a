package payload

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

func newKey(t *testing.T) (ssh.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pk, priv
}

// serveAgent runs an SSH agent holding keys on a socket SSH_AUTH_SOCK names.
func serveAgent(t *testing.T, keys map[string]ed25519.PrivateKey) {
	t.Helper()
	ring := agent.NewKeyring()
	for comment, k := range keys {
		if err := ring.Add(agent.AddedKey{PrivateKey: k, Comment: comment}); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); agent.ServeAgent(ring, c) }()
		}
	}()
	t.Setenv("SSH_AUTH_SOCK", sock)
}

func TestLocalSSHKeys(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	filePK, filePriv := newKey(t)
	agentPK, agentPriv := newKey(t)
	line := func(pk ssh.PublicKey) string { return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))) }
	os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519.pub"), []byte(line(filePK)+" me@laptop\n"), 0o644)
	os.WriteFile(filepath.Join(home, ".ssh", "broken.pub"), []byte("not a key\n"), 0o644)
	// The agent holds the file's key too: it is listed once.
	serveAgent(t, map[string]ed25519.PrivateKey{"me@laptop": filePriv, "yubikey": agentPriv})

	c := prepared(t, nil)
	keys := c.SSHAuthorizedKeys
	if len(keys) != 2 || keys[0] != line(filePK)+" me@laptop" || keys[1] != line(agentPK)+" yubikey" {
		t.Fatalf("ssh_authorized_keys = %q", keys)
	}
	src := c.LocalSSHKeySources()
	if len(src) != 2 || src[0] != filepath.Join(home, ".ssh", "id_ed25519.pub") || !strings.Contains(src[1], "SSH agent") {
		t.Errorf("sources = %q", src)
	}
	if len(c.Warnings()) != 0 {
		t.Errorf("warnings = %q with keys added", c.Warnings())
	}
	js, _ := settingsJSON(c)
	if !strings.Contains(string(js), "yubikey") {
		t.Errorf("settings.json lacks the agent's key:\n%s", js)
	}

	// Keys of the configuration's own are kept as they are.
	mine := line(agentPK) + " set-by-me"
	c = prepared(t, func(c *Config) { c.SSHAuthorizedKeys = []string{mine} })
	if len(c.SSHAuthorizedKeys) != 1 || c.SSHAuthorizedKeys[0] != mine || len(c.LocalSSHKeySources()) != 0 {
		t.Errorf("explicit keys became %q (%q)", c.SSHAuthorizedKeys, c.LocalSSHKeySources())
	}

	// Turned off: no key, and a warning that names the option.
	f := false
	c = prepared(t, func(c *Config) { c.UseLocalSSHKeys = &f })
	if len(c.SSHAuthorizedKeys) != 0 || len(c.Warnings()) != 1 || !strings.Contains(c.Warnings()[0], "nobody will be able to log in") ||
		!strings.Contains(c.Warnings()[0], "ssh_authorized_keys") {
		t.Errorf("use_local_ssh_keys = false: keys %q, warnings %q", c.SSHAuthorizedKeys, c.Warnings())
	}

	// A configuration of the user's own decides who logs in: nothing added.
	conf := filepath.Join(t.TempDir(), "configuration.nix")
	os.WriteFile(conf, []byte("{ }\n"), 0o644)
	c = prepared(t, func(c *Config) { c.NixOSConfig = conf })
	if len(c.SSHAuthorizedKeys) != 0 || len(c.Warnings()) != 0 {
		t.Errorf("nixos_config: keys %q, warnings %q", c.SSHAuthorizedKeys, c.Warnings())
	}
}

func TestNoLocalSSHKeysWarns(t *testing.T) {
	t.Setenv("HOME", t.TempDir())
	t.Setenv("SSH_AUTH_SOCK", "")
	c := prepared(t, nil)
	if len(c.SSHAuthorizedKeys) != 0 || len(c.Warnings()) != 1 || !strings.Contains(c.Warnings()[0], "none in ~/.ssh/*.pub or the SSH agent") {
		t.Errorf("keys %q, warnings %q", c.SSHAuthorizedKeys, c.Warnings())
	}
}
