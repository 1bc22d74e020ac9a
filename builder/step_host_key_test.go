package builder

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"golang.org/x/crypto/ssh"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/hostkey"
)

func TestHostKeyPerBuild(t *testing.T) {
	t.Chdir(t.TempDir())
	cfg := testConfig(t, nil)
	var seen []string
	for range 2 {
		state, _ := testState(cfg, newFakeEC2())
		s := &stepHostKey{}
		if s.Run(context.Background(), state) != multistep.ActionContinue {
			t.Fatalf("halted: %v", stateErr(state))
		}
		pair := state.Get(stateHostKey).(*hostkey.Pair)
		if pair.Public.Type() != ssh.KeyAlgoED25519 {
			t.Errorf("host key type = %s", pair.Public.Type())
		}
		seen = append(seen, hostkey.AuthorizedLine(pair.Public))
		if getString(state, stateKnownHostsPath) != "" {
			t.Error("a known_hosts file is planned without -debug")
		}
		s.Cleanup(state)
	}
	if seen[0] == seen[1] {
		t.Error("two builds got the same host key")
	}
	if entries, _ := os.ReadDir("."); len(entries) != 0 {
		t.Errorf("files written without -debug: %v", entries)
	}
}

// With -debug, the connect step writes the pinned key as a known_hosts line
// for the address it connected to; the host key step's Cleanup removes it.
func TestHostKeyDebugKnownHosts(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	cfg := testConfig(t, map[string]interface{}{"packer_debug": true, "packer_build_name": "rpi", "ssh_port": 2222})
	state, ui := testState(cfg, newFakeEC2())
	s := &stepHostKey{}
	if s.Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatalf("halted: %v", stateErr(state))
	}
	state.Put(stateHost, "203.0.113.10")
	pair := state.Get(stateHostKey).(*hostkey.Pair)
	connectStep(cfg).writeKnownHosts(state, pair)
	path := filepath.Join(dir, "nixos-sd_rpi.known_hosts")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("known_hosts not written: %v", err)
	}
	if want := hostkey.KnownHostsLine("203.0.113.10", 2222, pair.Public) + "\n"; string(data) != want {
		t.Errorf("known_hosts = %q, want %q", data, want)
	}
	if !strings.HasPrefix(string(data), "[203.0.113.10]:2222 ssh-ed25519 ") {
		t.Errorf("known_hosts line %q", data)
	}
	if !strings.Contains(ui.String(), "UserKnownHostsFile=nixos-sd_rpi.known_hosts") {
		t.Errorf("the UI does not tell how to use it:\n%s", ui.String())
	}
	s.Cleanup(state)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("known_hosts left after Cleanup: %v", err)
	}
}
