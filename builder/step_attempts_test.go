package builder

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// recStep records its runs and cleanups in log; run decides its action.
type recStep struct {
	name string
	log  *[]string
	run  func(state multistep.StateBag) multistep.StepAction
}

func (s *recStep) Run(_ context.Context, state multistep.StateBag) multistep.StepAction {
	*s.log = append(*s.log, fmt.Sprintf("run %s r%d", s.name, launchRound(state)))
	if s.run != nil {
		return s.run(state)
	}
	return multistep.ActionContinue
}

func (s *recStep) Cleanup(state multistep.StateBag) {
	*s.log = append(*s.log, fmt.Sprintf("cleanup %s r%d", s.name, launchRound(state)))
}

// attempts is a stepAttempts of a "launch" step and a "build" step
// interrupted in the rounds listed.
func attempts(log *[]string, interruptedIn ...int) *stepAttempts {
	return &stepAttempts{newSteps: func() []multistep.Step {
		return []multistep.Step{
			&recStep{name: "launch", log: log, run: func(state multistep.StateBag) multistep.StepAction {
				state.Put(stateInstanceID, fmt.Sprintf("i-%d", launchRound(state)))
				return multistep.ActionContinue
			}},
			&recStep{name: "build", log: log, run: func(state multistep.StateBag) multistep.StepAction {
				for _, r := range interruptedIn {
					if r == launchRound(state) {
						return halt(state, &ErrInterrupted{Reason: "instance terminated", InstanceID: getString(state, stateInstanceID)})
					}
				}
				return multistep.ActionContinue
			}},
		}
	}}
}

func TestAttemptsRetryAnInterruption(t *testing.T) {
	var log []string
	cfg := testConfig(t, nil)
	state, ui := testState(cfg, newFakeEC2())
	s := attempts(&log, 1)
	if a := s.Run(context.Background(), state); a != multistep.ActionContinue {
		t.Fatalf("halted: %v", stateErr(state))
	}
	s.Cleanup(state)
	want := "run launch r1, run build r1, cleanup build r1, cleanup launch r1, run launch r2, run build r2, cleanup build r2, cleanup launch r2"
	if got := strings.Join(log, ", "); got != want {
		t.Errorf("steps:\n got %s\nwant %s", got, want)
	}
	if stateErr(state) != nil {
		t.Errorf("the retried interruption stays as the build's error: %v", stateErr(state))
	}
	out := ui.String()
	for _, w := range []string{"Spot instance i-1 was interrupted by EC2 (instance terminated)", "Starting the build again on a new instance (retry 1 of 1, spot_retries = 1)"} {
		if !strings.Contains(out, w) {
			t.Errorf("the user is not told %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "run the build again") {
		t.Errorf("a retried interruption is reported as the build's failure:\n%s", out)
	}
}

func TestAttemptsGiveUpAfterSpotRetries(t *testing.T) {
	for _, retries := range []int{0, 2} {
		t.Run(fmt.Sprint(retries), func(t *testing.T) {
			var log []string
			cfg := testConfig(t, map[string]interface{}{"spot_retries": retries})
			state, ui := testState(cfg, newFakeEC2())
			s := attempts(&log, 1, 2, 3)
			if a := s.Run(context.Background(), state); a != multistep.ActionHalt {
				t.Fatal("passed although every attempt was interrupted")
			}
			s.Cleanup(state)
			if runs := strings.Count(strings.Join(log, ","), "run launch"); runs != retries+1 {
				t.Errorf("%d attempts, want %d", runs, retries+1)
			}
			if cleanups := strings.Count(strings.Join(log, ","), "cleanup launch"); cleanups != retries+1 {
				t.Errorf("%d attempts cleaned up, want %d", cleanups, retries+1)
			}
			msg := stateErr(state).Error()
			if !strings.Contains(msg, "the spot instance was interrupted by EC2") || !strings.Contains(msg, "spot_retries") {
				t.Errorf("error = %s", msg)
			}
			if retries > 0 && !strings.Contains(msg, fmt.Sprintf("also after %d retries", retries)) {
				t.Errorf("error does not say how often it retried: %s", msg)
			}
			if !strings.Contains(ui.String(), "the spot instance was interrupted by EC2") {
				t.Errorf("the final interruption is not shown:\n%s", ui)
			}
		})
	}
}

// A failure other than an interruption is not retried, and the attempt's
// resources stay for the outer runner's cleanup (and -on-error=abort).
func TestAttemptsOtherFailureNotRetried(t *testing.T) {
	var log []string
	cfg := testConfig(t, nil)
	state, _ := testState(cfg, newFakeEC2())
	s := &stepAttempts{newSteps: func() []multistep.Step {
		return []multistep.Step{
			&recStep{name: "launch", log: &log},
			&recStep{name: "build", log: &log, run: func(state multistep.StateBag) multistep.StepAction {
				return halt(state, fmt.Errorf("nix failed"))
			}},
		}
	}}
	if a := s.Run(context.Background(), state); a != multistep.ActionHalt {
		t.Fatal("passed")
	}
	if got := strings.Join(log, ", "); got != "run launch r1, run build r1" {
		t.Errorf("steps before Cleanup: %s", got)
	}
	if stateErr(state).Error() != "nix failed" {
		t.Errorf("error = %v", stateErr(state))
	}
	s.Cleanup(state)
	if got := strings.Join(log, ", "); !strings.HasSuffix(got, "cleanup build r1, cleanup launch r1") {
		t.Errorf("steps: %s", got)
	}
}
