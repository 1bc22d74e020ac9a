package builder

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
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

// TestStepsInPhases: every step of the pipeline belongs to a phase, and the
// phases come in the order the documentation gives.
func TestStepsInPhases(t *testing.T) {
	var order []string
	var all []multistep.Step
	for _, s := range (&Builder{}).steps() {
		if a, ok := s.(*stepAttempts); ok {
			all = append(all, a.newSteps()...)
			continue
		}
		all = append(all, s)
	}
	for _, s := range all {
		p, ok := s.(*phased)
		if !ok {
			t.Fatalf("step %T is in no phase", s)
		}
		if len(order) == 0 || order[len(order)-1] != p.phase {
			order = append(order, p.phase)
		}
		if p.InnerStepName() == "phased" || p.InnerStepName() == "" {
			t.Errorf("InnerStepName = %q", p.InnerStepName())
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

// TestPhasedCleanupEntersCleanup: a step's Cleanup counts as the cleanup phase.
func TestPhasedCleanupEntersCleanup(t *testing.T) {
	ui := newTestUI()
	state := new(multistep.BasicStateBag)
	c := newPhaseClock(ui)
	state.Put(statePhases, c)
	s := &phased{phaseLaunch, &stepWaitInstance{}}
	s.Run(context.Background(), state) // halts: no config, but the phase began
	s.Cleanup(state)
	c.finish()
	ps := c.phases()
	if len(ps) != 2 || ps[0].Name != phaseLaunch || ps[1].Name != phaseCleanup {
		t.Errorf("phases = %v", ps)
	}
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
	if launched && !regexp.MustCompile(`Cost \(estimate\):\n\s+instance\s+\S+ \S+ in \S+ \(i-[0-9a-f]+\)\n\s+price\s+\$[0-9.]+/hour \(.+\)\n\s+time\s+\S+ .*\n\s+volume\s+\d+ GiB gp3 .*\n\s+total\s+(\$[0-9]+\.[0-9]{4}|less than \$0\.0001)`).MatchString(out[cost:]) {
		t.Errorf("the cost report is incomplete:\n%s", out[cost:])
	}
}
