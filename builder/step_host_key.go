package builder

import (
	"context"
	"fmt"
	"os"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"golang.org/x/crypto/ssh"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/hostkey"
)

// stepHostKey makes the instance's SSH host key pair, in memory. The user
// data hands it to cloud-init (ssh_keys) and every SSH connection to the
// instance accepts that key only (see doc.go). With -debug, stepConnect
// writes a known_hosts line for it; this step's Cleanup removes that file.
type stepHostKey struct {
	knownHostsPath string
}

func (s *stepHostKey) Run(_ context.Context, state multistep.StateBag) multistep.StepAction {
	clockOf(state).enter(phasePreflight)
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	pair, err := hostkey.Generate("packer-nixos-sd host key " + getString(state, stateBuildID))
	if err != nil {
		return halt(state, fmt.Errorf("making the instance's SSH host key: %w; run the build again", err))
	}
	state.Put(stateHostKey, pair)
	e.ui.Message("The instance's SSH host key will be " + fingerprint(pair))
	if e.cfg.PackerDebug {
		s.knownHostsPath = debugFileName(e.cfg, ".known_hosts")
		state.Put(stateKnownHostsPath, s.knownHostsPath)
	}
	return multistep.ActionContinue
}

func (s *stepHostKey) Cleanup(state multistep.StateBag) {
	clockOf(state).enter(phaseCleanup)
	if s.knownHostsPath == "" {
		return
	}
	if err := os.Remove(s.knownHostsPath); err != nil && !os.IsNotExist(err) {
		if e, envErr := env(state); envErr == nil {
			e.ui.Error(fmt.Sprintf("Could not remove %s: %v; delete it by hand", s.knownHostsPath, err))
		}
	}
	s.knownHostsPath = ""
}

func fingerprint(p *hostkey.Pair) string {
	return p.Public.Type() + " " + ssh.FingerprintSHA256(p.Public)
}

// debugFileName is the -debug file of this build with the given suffix,
// in the current directory.
func debugFileName(cfg *Config, suffix string) string {
	name := cfg.PackerBuildName
	if name == "" {
		name = "build"
	}
	return "nixos-sd_" + name + suffix
}
