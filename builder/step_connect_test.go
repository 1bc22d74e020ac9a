package builder

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/hostkey"
)

func TestConnectHost(t *testing.T) {
	cfg := testConfig(t, nil)
	state := new(multistep.BasicStateBag)
	state.Put(stateHost, "203.0.113.10")
	if h, _ := hostFunc(cfg)(state); h != "203.0.113.10" {
		t.Errorf("host = %q", h)
	}
	cfg.Comm.SSHHost, cfg.sshHost = "127.0.0.1", "127.0.0.1"
	if h, _ := hostFunc(cfg)(state); h != "127.0.0.1" {
		t.Errorf("ssh_host must win: host = %q", h)
	}
}

// connectState is a state whose SSH target never answers.
func connectState(t *testing.T) (*Config, *multistep.BasicStateBag) {
	t.Helper()
	cfg := testConfig(t, map[string]interface{}{"ssh_host": "127.0.0.1", "ssh_port": 1, "ssh_timeout": "1m"})
	state, _ := testState(cfg, newFakeEC2())
	pair, err := hostkey.Generate("test")
	if err != nil {
		t.Fatal(err)
	}
	state.Put(stateHostKey, pair)
	return cfg, state
}

func TestConnectCancelled(t *testing.T) {
	cfg, state := connectState(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := connectStep(cfg)
	defer s.Cleanup(state)
	if s.Run(ctx, state) != multistep.ActionHalt {
		t.Fatal("connected although cancelled")
	}
	if err := stateErr(state); err == nil || !strings.Contains(err.Error(), "cancelled while connecting with SSH") {
		t.Errorf("error = %v", err)
	}
}

func TestConnectInterrupted(t *testing.T) {
	cfg, state := connectState(t)
	wctx, cancel := context.WithCancelCause(context.Background())
	w := &interruptionWatcher{ctx: wctx, cancel: cancel, err: &ErrInterrupted{Reason: "spot request marked-for-termination"}}
	cancel(w.err)
	state.Put(stateWatcher, w)
	s := connectStep(cfg)
	defer s.Cleanup(state)
	if s.Run(context.Background(), state) != multistep.ActionHalt {
		t.Fatal("connected to an interrupted instance")
	}
	var ierr *ErrInterrupted
	if !errors.As(stateErr(state), &ierr) {
		t.Errorf("error = %v, want the interruption", stateErr(state))
	}
}

// Packer's SSH step writes the address it connected to into Comm.SSHHost; a
// retry on a new instance must connect to the new address, not that one.
func TestHostFuncFollowsTheNewInstance(t *testing.T) {
	cfg := testConfig(t, nil)
	state, _ := testState(cfg, newFakeEC2())
	host := hostFunc(cfg)
	state.Put(stateHost, "198.18.0.1")
	if h, _ := host(state); h != "198.18.0.1" {
		t.Fatalf("host = %q", h)
	}
	cfg.Comm.SSHHost = "198.18.0.1" // as communicator.StepConnectSSH does
	state.Put(stateHost, "198.18.0.2")
	if h, _ := host(state); h != "198.18.0.2" {
		t.Errorf("the second attempt connects to %q, want the new instance's 198.18.0.2", h)
	}
	user := testConfig(t, map[string]interface{}{"ssh_host": "bastion.example.com"})
	if h, _ := hostFunc(user)(state); h != "bastion.example.com" {
		t.Errorf("with ssh_host set, host = %q", h)
	}
}
