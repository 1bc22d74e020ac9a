package builder

import (
	"context"
	"errors"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/hostkey"
)

func TestDownloadTargetIsTheConnectTarget(t *testing.T) {
	t.Chdir(t.TempDir())
	cfg := testConfig(t, map[string]interface{}{"ssh_port": 2222})
	state, _ := testState(cfg, newFakeEC2())
	for _, s := range []multistep.Step{&stepSSHKey{}, &stepHostKey{}} {
		if s.Run(context.Background(), state) != multistep.ActionContinue {
			t.Fatal(stateErr(state))
		}
	}
	state.Put(stateHost, "203.0.113.10")
	target := downloadTarget(cfg, state)
	if target == nil {
		t.Fatal("no download target for a direct SSH connection")
	}
	if target.Address != "203.0.113.10:2222" {
		t.Errorf("address = %q, want the instance's at ssh_port", target.Address)
	}
	if target.Config == nil || target.Config.User != cfg.Comm.SSHUsername || len(target.Config.Auth) == 0 || target.Config.HostKeyCallback == nil {
		t.Errorf("the target does not log in as the communicator does: %+v", target.Config)
	}
	// The download's own connections accept the instance's host key only.
	pinned := state.Get(stateHostKey).(*hostkey.Pair).Public
	if err := target.Config.HostKeyCallback("203.0.113.10:2222", nil, pinned); err != nil {
		t.Errorf("the pinned host key is refused: %v", err)
	}
	other, _ := hostkey.Generate("other")
	var mm *hostkey.MismatchError
	if err := target.Config.HostKeyCallback("203.0.113.10:2222", nil, other.Public); !errors.As(err, &mm) {
		t.Errorf("another host key: err = %v, want a refusal", err)
	}

	cfg.Comm.SSHBastionHost = "bastion.example.org"
	if downloadTarget(cfg, state) != nil {
		t.Error("a download target behind a bastion: the extra connections would bypass it")
	}
}
