package builder

import (
	"errors"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
)

// stepEnv is what nearly every step needs from the state bag.
type stepEnv struct {
	cfg *Config
	ui  packersdk.Ui
	ec2 awscommon.EC2API
}

// env reads the config, the UI and the EC2 client, reporting a missing one
// (a programming error) instead of panicking.
func env(state multistep.StateBag) (stepEnv, error) {
	var e stepEnv
	var ok bool
	if e.cfg, ok = state.Get(stateConfig).(*Config); !ok {
		return e, errors.New("internal error: no configuration in the build state")
	}
	if e.ui, ok = state.Get(stateUI).(packersdk.Ui); !ok {
		return e, errors.New("internal error: no UI in the build state")
	}
	if e.ec2, ok = state.Get(stateEC2).(awscommon.EC2API); !ok {
		return e, errors.New("internal error: no EC2 client in the build state")
	}
	return e, nil
}

// halt records err for Packer, shows it, and halts the build. An
// interruption is kept apart (stateInterrupted), not as the build's error:
// stepAttempts may start the build again, and Packer's -on-error wrappers
// must not take it for a failure.
func halt(state multistep.StateBag, err error) multistep.StepAction {
	var ierr *ErrInterrupted
	if errors.As(err, &ierr) {
		state.Put(stateInterrupted, ierr)
		tellInterruption(state, ierr)
		return multistep.ActionHalt
	}
	if cfg, ok := state.Get(stateConfig).(*Config); ok {
		if advice := awscommon.RetriesAdvice(err, cfg.MaxRetries); advice != "" {
			err = fmt.Errorf("%w; %s", err, advice)
		}
	}
	state.Put("error", err)
	if ui, ok := state.Get(stateUI).(packersdk.Ui); ok {
		ui.Error(err.Error())
	}
	return multistep.ActionHalt
}
