package builder

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/communicator"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"golang.org/x/crypto/ssh"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/hostkey"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// stepConnect is Packer's own SSH connect step, run under the interruption
// watcher's context: a spot interruption ends the wait for SSH at once, and
// a failure says why. The instance must present the host key stepHostKey
// made: a host presenting another key ends the wait at once. Its Cleanup
// closes the connection.
type stepConnect struct {
	*communicator.StepConnect
	cfg *Config
	pin *hostkey.Pin
}

// connectStep connects to ssh_host, or to the address stepWaitInstance
// picked.
func connectStep(cfg *Config) *stepConnect {
	s := &stepConnect{cfg: cfg}
	s.StepConnect = &communicator.StepConnect{
		Config:    &cfg.Comm,
		Host:      hostFunc(cfg),
		SSHConfig: s.sshConfig(cfg.Comm.SSHConfigFunc()),
	}
	return s
}

// sshConfig is Packer's SSH client configuration with the host key pinned.
// The bastion's host key is not checked (it is the user's machine).
func (s *stepConnect) sshConfig(base func(multistep.StateBag) (*ssh.ClientConfig, error)) func(multistep.StateBag) (*ssh.ClientConfig, error) {
	return func(state multistep.StateBag) (*ssh.ClientConfig, error) {
		c, err := base(state)
		if err != nil {
			return nil, err
		}
		pin := s.pin
		if pin == nil {
			// A configuration for another connection to the instance (the
			// download's own) pins the same key.
			pair, ok := state.Get(stateHostKey).(*hostkey.Pair)
			if !ok || pair == nil {
				return nil, errors.New("internal error: no host key to check the instance against")
			}
			pin = hostkey.New(pair.Public, nil)
		}
		pin.Apply(c)
		return c, nil
	}
}

// Cleanup closes the SSH connection.
func (s *stepConnect) Cleanup(state multistep.StateBag) {
	clockOf(state).enter(phaseCleanup)
	s.StepConnect.Cleanup(state)
}

func (s *stepConnect) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	clockOf(state).enter(phaseBoot)
	pair, ok := state.Get(stateHostKey).(*hostkey.Pair)
	if !ok || pair == nil {
		return halt(state, errors.New("internal error: no host key in the build state"))
	}
	ctx, release := watchContext(ctx, state)
	defer release()
	ctx, refuse := context.WithCancelCause(ctx)
	defer refuse(nil)
	// Packer retries failed handshakes until ssh_timeout; a wrong host key
	// does not heal, so it ends the wait.
	s.pin = hostkey.New(pair.Public, refuse)
	started := time.Now()
	action := s.StepConnect.Run(ctx, state)
	if ierr := interruption(state); ierr != nil {
		return halt(state, ierr)
	}
	if rerr := s.pin.Refused(); rerr != nil {
		return halt(state, rerr)
	}
	if action != multistep.ActionHalt {
		recordTiming(state, "connect", time.Since(started))
		s.writeKnownHosts(state, pair)
		// The heartbeat, the build's commands and the provisioners share
		// the connection: sessions must open one at a time (see
		// remotecmd.Serialized).
		if comm, ok := state.Get("communicator").(packersdk.Communicator); ok && comm != nil {
			state.Put("communicator", remotecmd.Serialized(comm))
		}
		return action
	}
	prev, _ := state.Get("error").(error)
	switch {
	case ctx.Err() != nil:
		// Packer's step may have put its own "SSH wait cancelled" first.
		state.Put("error", fmt.Errorf("cancelled while connecting with SSH: %w", context.Cause(ctx)))
	case prev == nil:
		state.Put("error", s.unreachable(state, "connecting with SSH failed"))
	case strings.Contains(prev.Error(), "Timeout waiting for SSH"):
		// A security group drops what it does not admit: the user sees only
		// a timeout, so say where the group admits SSH from.
		state.Put("error", s.unreachable(state, strings.TrimSuffix(prev.Error(), ".")))
	}
	return action
}

// unreachable is what failed, with whom the security group admits and what
// to check.
func (s *stepConnect) unreachable(state multistep.StateBag, what string) error {
	host := getString(state, stateHost)
	if s.Config != nil && s.Config.SSHHost != "" {
		host = s.Config.SSHHost
	}
	if cidrs := getStrings(state, stateSSHCIDRs); len(cidrs) > 0 {
		return fmt.Errorf("%s; the security group admits SSH to %s only from %s: check that this machine connects from there (ssh_source_cidrs, ssh_interface) and can reach that address", what, host, strings.Join(cidrs, ", "))
	}
	return fmt.Errorf("%s; check ssh_source_cidrs and that this machine can reach the instance", what)
}

// writeKnownHosts writes, with -debug, the instance's known_hosts line to
// the file stepHostKey named, so that `ssh -o UserKnownHostsFile=...` checks
// the pinned key too.
func (s *stepConnect) writeKnownHosts(state multistep.StateBag, pair *hostkey.Pair) {
	path := getString(state, stateKnownHostsPath)
	e, err := env(state)
	if path == "" || err != nil {
		return
	}
	host, err := hostFunc(s.cfg)(state)
	if err != nil {
		return
	}
	line := hostkey.KnownHostsLine(host, s.cfg.Comm.SSHPort, pair.Public) + "\n"
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		e.ui.Error(fmt.Sprintf("Debug mode: writing %s: %v", path, err))
		return
	}
	e.ui.Message(fmt.Sprintf("Debug mode: the instance's host key is in %s (removed at the end of the build): "+
		"ssh -o UserKnownHostsFile=%s -p %d %s@%s", path, path, s.cfg.Comm.SSHPort, s.cfg.Comm.SSHUsername, host))
}

// hostFunc is where SSH connects: ssh_host when the user set it, else the
// address ssh_interface picked.
func hostFunc(cfg *Config) func(multistep.StateBag) (string, error) {
	return func(state multistep.StateBag) (string, error) {
		if h := cfg.UserSSHHost(); h != "" {
			return h, nil
		}
		if h := getString(state, stateHost); h != "" {
			return h, nil
		}
		return "", errors.New("no address to connect to yet")
	}
}
