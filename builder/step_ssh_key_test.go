package builder

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"golang.org/x/crypto/ssh"
)

func TestSSHKeyInMemory(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	cfg := testConfig(t, nil)
	state, _ := testState(cfg, newFakeEC2())
	s := &stepSSHKey{}
	if s.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatalf("halted: %v", stateErr(state))
	}
	signer, err := ssh.ParsePrivateKey(cfg.Comm.SSHPrivateKey)
	if err != nil {
		t.Fatalf("private key does not parse: %v", err)
	}
	if signer.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Errorf("key type = %s", signer.PublicKey().Type())
	}
	pub := getString(state, statePublicKey)
	parsed, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub))
	if err != nil || string(parsed.Marshal()) != string(signer.PublicKey().Marshal()) {
		t.Errorf("public key %q does not match the private key (%v)", pub, err)
	}
	if string(cfg.Comm.SSHPublicKey) != pub {
		t.Error("Comm.SSHPublicKey not set")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the key was written to disk without -debug: %v", entries)
	}
}

func TestSSHKeyDebugFile(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	cfg := testConfig(t, map[string]interface{}{"packer_debug": true, "packer_build_name": "rpi"})
	state, ui := testState(cfg, newFakeEC2())
	s := &stepSSHKey{}
	if s.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatalf("halted: %v", stateErr(state))
	}
	path := filepath.Join(dir, "nixos-sd_rpi.pem")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("debug key not written: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, want 0600", st.Mode().Perm())
	}
	if !strings.Contains(ui.String(), "nixos-sd_rpi.pem") {
		t.Error("the user is not told where the key is")
	}
	s.Cleanup(state)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("debug key not removed at cleanup: %v", err)
	}
}

func TestSSHKeySkippedForUserKeys(t *testing.T) {
	t.Run("agent", func(t *testing.T) {
		cfg := testConfig(t, map[string]interface{}{"ssh_agent_auth": true})
		state, _ := testState(cfg, newFakeEC2())
		if (&stepSSHKey{}).Run(context.Background(), state) != multistep.ActionContinue {
			t.Fatal(stateErr(state))
		}
		if len(cfg.Comm.SSHPrivateKey) != 0 || getString(state, statePublicKey) != "" {
			t.Error("generated a key although ssh_agent_auth is set")
		}
	})
	t.Run("key file", func(t *testing.T) {
		// Make a key file with the step itself, then use it as the user's.
		gen := testConfig(t, nil)
		gstate, _ := testState(gen, newFakeEC2())
		(&stepSSHKey{}).Run(context.Background(), gstate)
		keyFile := filepath.Join(t.TempDir(), "id_ed25519")
		if err := os.WriteFile(keyFile, gen.Comm.SSHPrivateKey, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(t, map[string]interface{}{"ssh_private_key_file": keyFile})
		state, _ := testState(cfg, newFakeEC2())
		if (&stepSSHKey{}).Run(context.Background(), state) != multistep.ActionContinue {
			t.Fatal(stateErr(state))
		}
		if len(cfg.Comm.SSHPrivateKey) != 0 {
			t.Error("generated a key although ssh_private_key_file is set")
		}
		if got, want := getString(state, statePublicKey), getString(gstate, statePublicKey); !strings.HasPrefix(want, got) || got == "" {
			t.Errorf("delivered public key %q, want the key file's %q", got, want)
		}
	})
}
