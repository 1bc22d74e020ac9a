package builder

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/multistep/commonsteps"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/retry"
)

// stepAttempts runs the launch sub-pipeline (fleet, interruption watcher,
// wait, SSH, watchdog, build, provisioners) as one attempt, under the runner
// Packer's SDK gives the outer pipeline (commonsteps.NewRunnerWithPauseFn):
// -debug pauses after each sub-step, -on-error applies to them, and
// commonsteps.StepProvision is one of them, unwrapped, so
// -on-error=run-cleanup-provisioner finds it. The runner runs the attempt's
// cleanups when it ends. When EC2 interrupts the spot instance, the
// attempt's cleanups run whatever -on-error says (the instance is gone; the
// attempt is no failure of the build yet) and the sub-pipeline runs again on
// a new instance, up to spot_retries times.
type stepAttempts struct {
	// newSteps makes the sub-steps afresh for each attempt: steps keep
	// per-run fields (the watcher, the heartbeat, the SSH connection).
	newSteps func() []multistep.Step
}

// attemptKeys are the state entries one attempt leaves that the next must
// not see.
var attemptKeys = []string{stateInstanceID, stateInstanceType, stateZone, stateSpotPrice, stateLifecycle, stateHost, stateWatcher, stateInterrupted, "communicator", "error"}

func (s *stepAttempts) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	retries := e.cfg.SpotRetriesCount()
	round := 0
	err = retry.Config{
		Tries:       retries + 1,
		RetryDelay:  func() time.Duration { return 0 },
		ShouldRetry: func(err error) bool { var ierr *ErrInterrupted; return errors.As(err, &ierr) },
	}.Run(ctx, func(ctx context.Context) error {
		round++
		if round > 1 {
			endAttemptCost(state)
			for _, k := range attemptKeys {
				state.Remove(k)
			}
			e.ui.Say(fmt.Sprintf("Starting the build again on a new instance (retry %d of %d, spot_retries = %d)...", round-1, retries, retries))
		}
		state.Put(stateLaunchRound, round)
		err := s.runAttempt(ctx, state)
		var ierr *ErrInterrupted
		if errors.As(err, &ierr) {
			ierr.Retries = round - 1
		}
		return err
	})
	if err == nil {
		return multistep.ActionContinue
	}
	var exhausted *retry.RetryExhaustedError
	if errors.As(err, &exhausted) {
		err = exhausted.Err
	}
	if errors.Is(err, errHalted) {
		// A sub-step halted with its own error (already in the state).
		return multistep.ActionHalt
	}
	state.Put("error", err)
	e.ui.Error(err.Error())
	return multistep.ActionHalt
}

// errHalted is an attempt that ended other than by an interruption: a
// sub-step failed (its error is in the state), the build was cancelled, or
// the user aborted it (-on-error=ask).
var errHalted = errors.New("halted")

// runAttempt runs the sub-steps under Packer's runner and returns nil, the
// *ErrInterrupted that stopped them, or errHalted.
func (s *stepAttempts) runAttempt(ctx context.Context, state multistep.StateBag) error {
	cfg, ok := state.Get(stateConfig).(*Config)
	if !ok {
		return errHalted
	}
	ui, ok := state.Get(stateUI).(packersdk.Ui)
	if !ok {
		return errHalted
	}
	as := &attemptState{StateBag: state}
	runner := commonsteps.NewRunnerWithPauseFn(s.newSteps(), cfg.PackerConfig, ui, as)
	runner.Run(ctx, as)
	if ierr := as.interrupted(); ierr != nil {
		if _, told := state.GetOk(stateInterrupted); !told {
			// Seen by the watcher only: a provisioner failed on the
			// dead connection with an error of its own.
			tellInterruption(state, ierr)
		}
		return ierr
	}
	if as.halted || ctx.Err() != nil {
		return errHalted
	}
	if _, ok := state.GetOk(multistep.StateCancelled); ok {
		return errHalted
	}
	return nil
}

func (s *stepAttempts) Cleanup(state multistep.StateBag) {
	// The runner ran the attempt's cleanups when the attempt ended.
	clockOf(state).enter(phaseCleanup)
}

// attemptState is the build's state as one attempt's runner sees it: the
// runner's mark that a sub-step halted stays with the attempt, and while
// the attempt is interrupted (and the user did not abort it), it is hidden,
// so that Packer's -on-error wrappers run the cleanups of an instance EC2
// took away: the next attempt does not inherit its fleet.
type attemptState struct {
	multistep.StateBag
	halted bool
}

func (a *attemptState) Put(k string, v interface{}) {
	if k == multistep.StateHalted {
		a.halted = true
		return
	}
	a.StateBag.Put(k, v)
}

func (a *attemptState) GetOk(k string) (interface{}, bool) {
	if k == multistep.StateHalted {
		if !a.halted {
			return nil, false
		}
		if a.interrupted() != nil {
			return nil, false
		}
		return true, true
	}
	return a.StateBag.GetOk(k)
}

func (a *attemptState) Get(k string) interface{} {
	v, _ := a.GetOk(k)
	return v
}

// interrupted is the attempt's interruption: the one a sub-step halted
// with, or the watcher's (a provisioner fails on the dead connection with
// its own error); nil when there was none or the user aborted the build
// (-on-error=ask: abort).
func (a *attemptState) interrupted() *ErrInterrupted {
	if _, aborted := a.StateBag.GetOk("aborted"); aborted {
		return nil
	}
	if ierr, ok := a.StateBag.Get(stateInterrupted).(*ErrInterrupted); ok {
		return ierr
	}
	var ierr *ErrInterrupted
	if errors.As(interruption(a.StateBag), &ierr) {
		return ierr
	}
	return nil
}

// tellInterruption says that EC2 took the instance away and whether the
// build starts again (the final interruption is the build's error, shown
// by stepAttempts).
func tellInterruption(state multistep.StateBag, ierr *ErrInterrupted) {
	cfg, ok := state.Get(stateConfig).(*Config)
	ui, uok := state.Get(stateUI).(packersdk.Ui)
	if !ok || !uok || launchRound(state) > cfg.SpotRetriesCount() {
		return
	}
	ui.Error(fmt.Sprintf("Spot instance %s was interrupted by EC2 (%s); cleaning it up and running the build again on a new instance (set spot_retries to change how often)", ierr.InstanceID, ierr.Reason))
}
