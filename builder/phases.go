package builder

import (
	"context"
	"fmt"
	"log"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
)

// The phases a build goes through, in order. The output shows one line as
// each ends and a table of all of them at the end (see phaseClock).
const (
	phasePreflight = "preflight"
	phaseLaunch    = "launch"
	phaseBoot      = "boot"
	phaseNixSetup  = "nix setup"
	phaseBuild     = "build"
	phaseDownload  = "download"
	phaseCachePull = "cache pull"
	phaseCachePush = "cache push"
	phaseProvision = "provision"
	phaseCleanup   = "cleanup"
)

// payloadPhase maps a phase of payload.Run onto the builder's phases.
func payloadPhase(p string) string {
	switch p {
	case payload.PhaseUpload, payload.PhaseInstallNix:
		return phaseNixSetup
	case payload.PhaseBuild, payload.PhaseNixpkgs:
		return phaseBuild
	case payload.PhaseCachePull:
		return phaseCachePull
	case payload.PhaseCachePush:
		return phaseCachePush
	default:
		return phaseDownload
	}
}

// phaseClock times the build's phases: entering a phase ends the current one,
// which says how long it took (ui.Say) and logs the detail (PACKER_LOG=1).
// A nil *phaseClock does nothing, so steps run in tests without one.
type phaseClock struct {
	mu      sync.Mutex
	ui      packersdk.Ui
	now     func() time.Time
	current string
	since   time.Time
	order   []string
	took    map[string]time.Duration
}

func newPhaseClock(ui packersdk.Ui) *phaseClock {
	return &phaseClock{ui: ui, now: time.Now, took: map[string]time.Duration{}}
}

// clockOf is the build's phase clock, or nil.
func clockOf(state multistep.StateBag) *phaseClock {
	c, _ := state.Get(statePhases).(*phaseClock)
	return c
}

// enter starts phase unless it is the current one, ending the current one.
func (c *phaseClock) enter(phase string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current == phase {
		return
	}
	c.endLocked()
	c.current, c.since = phase, c.now()
	log.Printf("[INFO] nixos-sd: phase %s started", phase)
}

// finish ends the current phase.
func (c *phaseClock) finish() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.endLocked()
	c.current = ""
}

func (c *phaseClock) endLocked() {
	if c.current == "" {
		return
	}
	d := c.now().Sub(c.since)
	if _, seen := c.took[c.current]; !seen {
		c.order = append(c.order, c.current)
	}
	c.took[c.current] += d
	log.Printf("[INFO] nixos-sd: phase %s ended after %s", c.current, d)
	if c.ui != nil {
		c.ui.Say(fmt.Sprintf("Phase %s: %s", c.current, roundDuration(d)))
	}
}

// phases are the ended phases and their durations, in the order they began.
func (c *phaseClock) phases() []phaseTime {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]phaseTime, 0, len(c.order))
	for _, p := range c.order {
		out = append(out, phaseTime{p, c.took[p]})
	}
	return out
}

// phaseTime is how long one phase took.
type phaseTime struct {
	Name string
	Took time.Duration
}

// phaseTable renders the phases as a table with a total line.
func phaseTable(ps []phaseTime) string {
	var b strings.Builder
	b.WriteString("Phases:\n")
	var total time.Duration
	for _, p := range ps {
		fmt.Fprintf(&b, "  %-10s %10s\n", p.Name, roundDuration(p.Took))
		total += p.Took
	}
	fmt.Fprintf(&b, "  %-10s %10s", "total", roundDuration(total))
	return b.String()
}

// formatPhases renders the phases as "name=seconds" pairs, in order.
func formatPhases(ps []phaseTime) string {
	parts := make([]string, 0, len(ps))
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("%s=%s", strings.ReplaceAll(p.Name, " ", "_"), roundDuration(p.Took)))
	}
	return strings.Join(parts, " ")
}

// roundDuration rounds to 0.1s under a minute and to 1s above.
func roundDuration(d time.Duration) time.Duration {
	if d < time.Minute {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

// Each step enters its phase first thing in Run and the cleanup phase first
// thing in Cleanup (clockOf(state).enter): steps run unwrapped, so that
// Packer's runner sees their own types (-debug, -on-error).

// phaseHook is the build's hook with the provision phase marked:
// commonsteps.StepProvision runs the build block's provisioners through the
// hook, and the error-cleanup-provisioner as part of the cleanup.
type phaseHook struct {
	packersdk.Hook
	clock *phaseClock
}

func (h *phaseHook) Run(ctx context.Context, name string, ui packersdk.Ui, comm packersdk.Communicator, data interface{}) error {
	switch name {
	case packersdk.HookProvision:
		h.clock.enter(phaseProvision)
	case packersdk.HookCleanupProvision:
		h.clock.enter(phaseCleanup)
	}
	if h.Hook == nil {
		return nil
	}
	return h.Hook.Run(ctx, name, ui, comm, data)
}
