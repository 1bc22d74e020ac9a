package builder

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"golang.org/x/crypto/ssh"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/hostkey"
)

// stepSSHKey makes the temporary ed25519 key the build logs in with. The key
// stays in memory (written to disk only with -debug) and reaches the instance
// through the user data, not an EC2 key pair (see doc.go).
type stepSSHKey struct {
	debugKeyPath string
}

func (s *stepSSHKey) Run(_ context.Context, state multistep.StateBag) multistep.StepAction {
	clockOf(state).enter(phasePreflight)
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	comm := &e.cfg.Comm
	if comm.SSHAgentAuth {
		e.ui.Say("Using the SSH agent's keys (ssh_agent_auth); the AMI must already accept one of them")
		return multistep.ActionContinue
	}
	if comm.SSHPrivateKeyFile != "" {
		// Deliver the user's own key too when its public half can be derived
		// (an unencrypted private key), so ssh_private_key_file works with the
		// stock Debian AMI.
		if key, err := comm.ReadSSHPrivateKeyFile(); err == nil {
			if signer, err := ssh.ParsePrivateKey(key); err == nil {
				state.Put(statePublicKey, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))))
			}
		}
		e.ui.Say(fmt.Sprintf("Using the SSH key in %s", comm.SSHPrivateKeyFile))
		return multistep.ActionContinue
	}

	e.ui.Say("Creating a temporary ed25519 SSH key (kept in memory)...")
	pair, err := hostkey.Generate("packer-nixos-sd temporary key")
	if err != nil {
		return halt(state, fmt.Errorf("making the temporary SSH key: %w; run the build again", err))
	}
	privPEM := pair.PrivatePEM
	authorized := hostkey.AuthorizedLine(pair.Public) + " packer-nixos-sd"
	comm.SSHPrivateKey = privPEM
	comm.SSHPublicKey = []byte(authorized)
	state.Put(statePublicKey, authorized)

	if e.cfg.PackerDebug {
		path := debugFileName(e.cfg, ".pem")
		if err := os.WriteFile(path, privPEM, 0o600); err != nil {
			return halt(state, fmt.Errorf("debug mode: writing the temporary SSH key to %s: %w", path, err))
		}
		s.debugKeyPath = path
		e.ui.Message(fmt.Sprintf("Debug mode: the temporary SSH key is in %s (removed at the end of the build)", path))
	}
	return multistep.ActionContinue
}

func (s *stepSSHKey) Cleanup(state multistep.StateBag) {
	clockOf(state).enter(phaseCleanup)
	if s.debugKeyPath == "" {
		return
	}
	if err := os.Remove(s.debugKeyPath); err != nil && !os.IsNotExist(err) {
		if e, envErr := env(state); envErr == nil {
			e.ui.Error(fmt.Sprintf("Could not remove the debug SSH key %s: %v; delete it by hand", s.debugKeyPath, err))
		}
	}
	s.debugKeyPath = ""
}
