package builder

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/multistep/commonsteps"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

func TestPhaseClock(t *testing.T) {
	ui := newTestUI()
	c := newPhaseClock(ui)
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	c.enter(phasePreflight)
	now = now.Add(1500 * time.Millisecond)
	c.enter(phaseLaunch)
	now = now.Add(2 * time.Second)
	c.enter(phaseLaunch) // already current: nothing ends
	now = now.Add(time.Second)
	c.enter(phaseCleanup)
	now = now.Add(90*time.Second + 400*time.Millisecond)
	c.finish()
	c.finish()

	out := ui.String()
	for _, want := range []string{"Phase preflight: 1.5s\n", "Phase launch: 3s\n", "Phase cleanup: 1m30s\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "Phase "); n != 3 {
		t.Errorf("%d phase lines, want one per phase:\n%s", n, out)
	}
	ps := c.phases()
	if len(ps) != 3 || ps[0].Name != phasePreflight || ps[1].Took != 3*time.Second || ps[2].Name != phaseCleanup {
		t.Errorf("phases = %v", ps)
	}
	table := phaseTable(ps)
	if !regexp.MustCompile(`(?m)^  preflight\s+1\.5s$`).MatchString(table) || !regexp.MustCompile(`(?m)^  total\s+1m35s$`).MatchString(table) {
		t.Errorf("table:\n%s", table)
	}
	if got, want := formatPhases(ps), "preflight=1.5s launch=3s cleanup=1m30s"; got != want {
		t.Errorf("formatPhases = %q, want %q", got, want)
	}
	var nilClock *phaseClock
	nilClock.enter(phaseBuild) // steps run without a clock in unit tests
	nilClock.finish()
}

// TestStepsInPhases: every step of the pipeline enters its phase when it
// runs and the cleanup phase when it cleans up, the phases come in the order
// the documentation gives, and no step is wrapped (Packer's runner must see
// the steps' own types).
func TestStepsInPhases(t *testing.T) {
	b := &Builder{}
	var all []multistep.Step
	for _, s := range b.steps() {
		if a, ok := s.(*stepAttempts); ok {
			all = append(all, a.newSteps()...)
			continue
		}
		all = append(all, s)
	}
	var order []string
	for _, s := range all {
		if _, ok := s.(*commonsteps.StepProvision); ok {
			// It runs the provisioners through the hook, which phaseHook
			// marks (TestPhaseHook).
			order = append(order, phaseProvision)
			continue
		}
		if _, ok := s.(multistep.StepWrapper); ok {
			t.Errorf("step %T wraps another: Packer's runner would not see its type", s)
		}
		state := new(multistep.BasicStateBag) // no config: the step halts after entering its phase
		c := newPhaseClock(nil)
		state.Put(statePhases, c)
		s.Run(context.Background(), state)
		if c.current == "" {
			t.Fatalf("step %T enters no phase", s)
		}
		if len(order) == 0 || order[len(order)-1] != c.current {
			order = append(order, c.current)
		}
		s.Cleanup(state)
		if c.current != phaseCleanup {
			t.Errorf("step %T's Cleanup runs in phase %q, want %q", s, c.current, phaseCleanup)
		}
	}
	want := []string{phasePreflight, phaseLaunch, phaseBoot, phaseNixSetup, phaseProvision}
	if strings.Join(order, ",") != strings.Join(want, ",") {
		t.Errorf("phases = %v, want %v", order, want)
	}
	for p, want := range map[string]string{"upload": phaseNixSetup, "install nix": phaseNixSetup, "build": phaseBuild, "nixpkgs revision": phaseBuild, "download": phaseDownload, "checksum": phaseDownload, "decompress": phaseDownload} {
		if got := payloadPhase(p); got != want {
			t.Errorf("payloadPhase(%q) = %q, want %q", p, got, want)
		}
	}
}

// TestPhaseHook: the provisioners run in the provision phase, the
// error-cleanup-provisioner in the cleanup phase.
func TestPhaseHook(t *testing.T) {
	c := newPhaseClock(nil)
	var seen []string
	h := &phaseHook{Hook: hookFunc(func(name string) { seen = append(seen, name+"@"+c.current) }), clock: c}
	for _, name := range []string{packersdk.HookProvision, packersdk.HookCleanupProvision} {
		if err := h.Run(context.Background(), name, nil, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := strings.Join(seen, ","), packersdk.HookProvision+"@"+phaseProvision+","+packersdk.HookCleanupProvision+"@"+phaseCleanup; got != want {
		t.Errorf("hooks ran as %s, want %s", got, want)
	}
}

// hookFunc is a packersdk.Hook calling f with the hook's name.
type hookFunc func(name string)

func (f hookFunc) Run(_ context.Context, name string, _ packersdk.Ui, _ packersdk.Communicator, _ interface{}) error {
	f(name)
	return nil
}

// checkPhaseReport checks a build's output ends with the phase table and the
// cost report, and shows one line per phase as it ends.
func checkPhaseReport(t *testing.T, out string, launched bool) {
	t.Helper()
	for _, p := range []string{phasePreflight, phaseCleanup} {
		if !strings.Contains(out, "Phase "+p+": ") {
			t.Errorf("the output has no line for phase %s:\n%s", p, out)
		}
	}
	table := strings.Index(out, "Phases:\n")
	cost := strings.Index(out, "Cost")
	if table < 0 || cost < table {
		t.Fatalf("the output does not end with the phase table and the cost report:\n%s", out)
	}
	if launched && !regexp.MustCompile(`Cost \(estimate\):\n\s+instance\s+\S+ \S+ in \S+ \(i-[0-9a-f]+\)\n\s+price\s+\$[0-9.]+/hour \(.+\)\n\s+time\s+\S+ .*\n\s+volume\s+\d+ GiB gp3 .*(\n\s+address\s+public IPv4 .*)?\n\s+total\s+(\$[0-9]+\.[0-9]{4}|less than \$0\.0001)`).MatchString(out[cost:]) {
		t.Errorf("the cost report is incomplete:\n%s", out[cost:])
	}
}
