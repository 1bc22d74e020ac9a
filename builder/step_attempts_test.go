package builder

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/multistep/commonsteps"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
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

// A failure other than an interruption is not retried; the attempt's
// runner cleans it up when it ends (Packer's default, -on-error=cleanup).
func TestAttemptsOtherFailureNotRetried(t *testing.T) {
	var log []string
	cfg := testConfig(t, nil)
	state, _ := testState(cfg, newFakeEC2())
	s := failingAttempt(&log)
	if a := s.Run(context.Background(), state); a != multistep.ActionHalt {
		t.Fatal("passed")
	}
	if got := strings.Join(log, ", "); got != "run launch r1, run build r1, cleanup build r1, cleanup launch r1" {
		t.Errorf("steps: %s", got)
	}
	if stateErr(state).Error() != "nix failed" {
		t.Errorf("error = %v", stateErr(state))
	}
}

// failingAttempt is a stepAttempts of a "launch" step and a "build" step
// that fails.
func failingAttempt(log *[]string) *stepAttempts {
	return &stepAttempts{newSteps: func() []multistep.Step {
		return []multistep.Step{
			&recStep{name: "launch", log: log},
			&recStep{name: "build", log: log, run: func(state multistep.StateBag) multistep.StepAction {
				return halt(state, fmt.Errorf("nix failed"))
			}},
		}
	}}
}

// TestAttemptsUnderOnError: Packer's -on-error modes apply to the attempt's
// steps, and an interrupted attempt is cleaned up and retried under each.
func TestAttemptsUnderOnError(t *testing.T) {
	for _, tc := range []struct {
		name, onError, answers string
		attempt                func(log *[]string) *stepAttempts
		want                   multistep.StepAction
		steps                  string
	}{
		{"abort keeps a failed attempt", "abort", "", failingAttempt, multistep.ActionHalt,
			"run launch r1, run build r1"},
		{"abort still cleans up an interrupted attempt", "abort", "", func(log *[]string) *stepAttempts { return attempts(log, 1) }, multistep.ActionContinue,
			"run launch r1, run build r1, cleanup build r1, cleanup launch r1, run launch r2, run build r2, cleanup build r2, cleanup launch r2"},
		{"run-cleanup-provisioner keeps a failed attempt", "run-cleanup-provisioner", "", failingAttempt, multistep.ActionHalt,
			"run launch r1, run build r1"},
		{"run-cleanup-provisioner still cleans up an interrupted attempt", "run-cleanup-provisioner", "", func(log *[]string) *stepAttempts { return attempts(log, 1) }, multistep.ActionContinue,
			"run launch r1, run build r1, cleanup build r1, cleanup launch r1, run launch r2, run build r2, cleanup build r2, cleanup launch r2"},
		{"ask: clean up", "ask", "c\n", failingAttempt, multistep.ActionHalt,
			"run launch r1, run build r1, cleanup build r1, cleanup launch r1"},
		{"ask: abort", "ask", "a\n", failingAttempt, multistep.ActionHalt,
			"run launch r1, run build r1"},
		{"ask: retry the step", "ask", "r\nc\n", failingAttempt, multistep.ActionHalt,
			"run launch r1, run build r1, run build r1, cleanup build r1, cleanup launch r1"},
		{"ask: clean up an interrupted attempt, then retry it", "ask", "c\n", func(log *[]string) *stepAttempts { return attempts(log, 1) }, multistep.ActionContinue,
			"run launch r1, run build r1, cleanup build r1, cleanup launch r1, run launch r2, run build r2, cleanup build r2, cleanup launch r2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var log []string
			cfg := testConfig(t, map[string]interface{}{"packer_on_error": tc.onError})
			state, ui := testState(cfg, newFakeEC2())
			ui.answer(tc.answers)
			s := tc.attempt(&log)
			if a := s.Run(context.Background(), state); a != tc.want {
				t.Fatalf("action %v, want %v (error %v)\n%s", a, tc.want, stateErr(state), ui)
			}
			s.Cleanup(state)
			if got := strings.Join(log, ", "); got != tc.steps {
				t.Errorf("steps:\n got %s\nwant %s", got, tc.steps)
			}
			if tc.want == multistep.ActionContinue && stateErr(state) != nil {
				t.Errorf("the retried interruption stays as the build's error: %v", stateErr(state))
			}
		})
	}
}

// TestAttemptsRunTheCleanupProvisioner: with -on-error=run-cleanup-provisioner
// a failing provisioner is followed by the error-cleanup-provisioner, and the
// attempt's resources are kept.
func TestAttemptsRunTheCleanupProvisioner(t *testing.T) {
	var log []string
	cfg := testConfig(t, map[string]interface{}{"packer_on_error": "run-cleanup-provisioner"})
	state, _ := testState(cfg, newFakeEC2())
	state.Put(stateHook, hookErr(func(name string) error {
		log = append(log, "hook "+name)
		if name == packersdk.HookProvision {
			return fmt.Errorf("provisioner failed")
		}
		return nil
	}))
	s := &stepAttempts{newSteps: func() []multistep.Step {
		return []multistep.Step{&recStep{name: "launch", log: &log}, &commonsteps.StepProvision{}}
	}}
	if a := s.Run(context.Background(), state); a != multistep.ActionHalt {
		t.Fatal("passed")
	}
	s.Cleanup(state)
	want := "run launch r1, hook " + packersdk.HookProvision + ", hook " + packersdk.HookCleanupProvision
	if got := strings.Join(log, ", "); got != want {
		t.Errorf("steps:\n got %s\nwant %s", got, want)
	}
}

// hookErr is a packersdk.Hook calling f with the hook's name.
type hookErr func(name string) error

func (f hookErr) Run(_ context.Context, name string, _ packersdk.Ui, _ packersdk.Communicator, _ interface{}) error {
	return f(name)
}

// TestAttemptsPauseUnderDebug: with -debug the attempt's runner pauses
// after each of its steps and before each cleanup.
func TestAttemptsPauseUnderDebug(t *testing.T) {
	var log []string
	cfg := testConfig(t, map[string]interface{}{"packer_debug": true})
	state, ui := testState(cfg, newFakeEC2())
	ui.answer(strings.Repeat("\n", 8))
	s := attempts(&log)
	if a := s.Run(context.Background(), state); a != multistep.ActionContinue {
		t.Fatalf("halted: %v", stateErr(state))
	}
	out := ui.String()
	if n := strings.Count(out, "Pausing after run of step 'recStep'"); n != 2 {
		t.Errorf("%d pauses after the attempt's steps, want 2:\n%s", n, out)
	}
	if n := strings.Count(out, "Pausing before cleanup of step 'recStep'"); n != 2 {
		t.Errorf("%d pauses before the attempt's cleanups, want 2:\n%s", n, out)
	}
}
