package builder

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/communicator"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// stepConnect is Packer's own SSH connect step, run under the interruption
// watcher's context: a spot interruption ends the wait for SSH at once, and
// a failure says why. Its Cleanup closes the connection.
type stepConnect struct {
	*communicator.StepConnect
}

// connectStep connects to ssh_host, or to the address stepWaitInstance
// picked.
func connectStep(cfg *Config) *stepConnect {
	return &stepConnect{&communicator.StepConnect{
		Config:    &cfg.Comm,
		Host:      hostFunc(cfg),
		SSHConfig: cfg.Comm.SSHConfigFunc(),
	}}
}

func (s *stepConnect) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	ctx, release := watchContext(ctx, state)
	defer release()
	started := time.Now()
	action := s.StepConnect.Run(ctx, state)
	if ierr := interruption(state); ierr != nil {
		return halt(state, ierr)
	}
	if action != multistep.ActionHalt {
		recordTiming(state, "connect", time.Since(started))
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
		if prev == nil {
			state.Put("error", fmt.Errorf("cancelled while connecting with SSH: %w", context.Cause(ctx)))
		}
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
