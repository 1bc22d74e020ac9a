package builder

import (
	"context"
	"fmt"

	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/debianami"
)

// lookupDebianAMI is debianami.Lookup, the data source's own code; a variable
// only so tests can count its calls.
var lookupDebianAMI = debianami.Lookup

// stepSourceAMI settles which AMI to boot: source_ami, or the newest official
// Debian arm64 AMI of debian_release, found exactly as the
// nixos-sd-debian-ami data source finds it.
type stepSourceAMI struct{}

func (s *stepSourceAMI) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	clockOf(state).enter(phasePreflight)
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	cfg := e.cfg
	if cfg.SourceAMI != "" {
		state.Put(stateSourceAMI, cfg.SourceAMI)
		e.ui.Say(fmt.Sprintf("Using source AMI %s", cfg.SourceAMI))
		return multistep.ActionContinue
	}
	rel := cfg.Release()
	img, err := lookupDebianAMI(ctx, e.ec2, debianami.Query{
		Release:      rel,
		Architecture: "arm64",
		Owners:       []string{debianami.DebianOwner},
		Region:       cfg.Region,
	})
	if err != nil {
		return halt(state, fmt.Errorf("finding the newest Debian %d (%s) arm64 AMI in %s: %w; set source_ami to an arm64 AMI id, or debian_release to another release", rel.Number, rel.Codename, cfg.Region, err))
	}
	if img == nil || img.ID == "" {
		return halt(state, fmt.Errorf("no official Debian %d (%s) arm64 AMI found in %s; set source_ami to an arm64 AMI id, or debian_release to another release", rel.Number, rel.Codename, cfg.Region))
	}
	state.Put(stateSourceAMI, img.ID)
	if img.RootDeviceName != "" {
		state.Put(stateRootDevice, img.RootDeviceName)
	}
	e.ui.Say(fmt.Sprintf("Using Debian %d (%s) arm64 AMI %s (%s)", rel.Number, rel.Codename, img.ID, img.Name))
	return multistep.ActionContinue
}

func (s *stepSourceAMI) Cleanup(state multistep.StateBag) { clockOf(state).enter(phaseCleanup) }
