package builder

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/retry"
)

// stepAttempts runs the launch sub-pipeline (fleet, interruption watcher,
// wait, SSH, watchdog, build, provisioners) as one attempt. When EC2
// interrupts the spot instance, it cleans up that attempt (its steps'
// cleanups, in reverse, as Packer would) and runs the sub-pipeline again on
// a new instance, up to spot_retries times. Each sub-step still owns its
// resource; stepAttempts owns only "the current attempt", which its Cleanup
// ends.
type stepAttempts struct {
	// newSteps makes the sub-steps afresh for each attempt: steps keep
	// per-run fields (the watcher, the heartbeat, the SSH connection).
	newSteps func() []multistep.Step
	// ran are the current attempt's steps that ran, in order.
	ran []multistep.Step
}

// attemptKeys are the state entries one attempt leaves that the next must
// not see.
var attemptKeys = []string{stateInstanceID, stateInstanceType, stateZone, stateSpotPrice, stateLifecycle, stateHost, stateWatcher, "communicator", "error"}

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
			s.cleanupAttempt(state)
			e.ui.Say(fmt.Sprintf("Starting the build again on a new instance (retry %d of %d, spot_retries = %d)...", round-1, retries, retries))
		}
		state.Put(stateLaunchRound, round)
		err := s.runAttempt(ctx, state)
		var ierr *ErrInterrupted
		if errors.As(err, &ierr) {
			ierr.Retries = round - 1
			if round <= retries {
				e.ui.Error(fmt.Sprintf("Spot instance %s was interrupted by EC2 (%s); cleaning it up and running the build again on a new instance (set spot_retries to change how often)", ierr.InstanceID, ierr.Reason))
			}
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

// errHalted is a sub-step that halted with an error other than an
// interruption; the error is in the state.
var errHalted = errors.New("halted")

// runAttempt runs the sub-steps in order, as Packer's runner does, and
// returns nil, the *ErrInterrupted that stopped them, or errHalted.
func (s *stepAttempts) runAttempt(ctx context.Context, state multistep.StateBag) error {
	for _, step := range s.newSteps() {
		if ctx.Err() != nil {
			return errHalted
		}
		s.ran = append(s.ran, step)
		if step.Run(ctx, state) == multistep.ActionHalt {
			var ierr *ErrInterrupted
			if raw, ok := state.GetOk("error"); ok {
				if err, ok := raw.(error); ok && errors.As(err, &ierr) {
					return ierr
				}
			}
			return errHalted
		}
	}
	return nil
}

// cleanupAttempt runs the current attempt's cleanups in reverse and forgets
// what the attempt left in the state.
func (s *stepAttempts) cleanupAttempt(state multistep.StateBag) {
	for i := len(s.ran) - 1; i >= 0; i-- {
		s.ran[i].Cleanup(state)
	}
	s.ran = nil
	endAttemptCost(state)
	for _, k := range attemptKeys {
		state.Remove(k)
	}
}

func (s *stepAttempts) Cleanup(state multistep.StateBag) {
	for i := len(s.ran) - 1; i >= 0; i-- {
		s.ran[i].Cleanup(state)
	}
	s.ran = nil
}
