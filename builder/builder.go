package builder

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/hashicorp/hcl/v2/hcldec"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/multistep/commonsteps"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/uuid"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
)

// BuilderID identifies this builder's artifacts. It must never change.
const BuilderID = "nixos-sd.builder"

// Builder is the nixos-sd builder.
type Builder struct {
	config Config

	// newEC2 builds the EC2 client; nil means config.NewEC2Client. Tests
	// set it to a fake.
	newEC2 func(context.Context) (awscommon.EC2API, error)
}

// ConfigSpec returns the HCL2 spec of the builder's configuration.
func (b *Builder) ConfigSpec() hcldec.ObjectSpec { return b.config.FlatMapstructure().HCL2Spec() }

// Prepare decodes and validates the configuration.
func (b *Builder) Prepare(raws ...interface{}) ([]string, []string, error) {
	warnings, err := b.config.Prepare(raws...)
	if err != nil {
		return nil, warnings, err
	}
	return GeneratedDataKeys, warnings, nil
}

// GeneratedDataKeys are the build variables the builder sets (build.<Key>).
var GeneratedDataKeys = []string{"InstanceType", "AvailabilityZone", "SourceAMI", "SpotPrice", "InstanceID", "ImagePath", "ImageSHA256", "NixpkgsRevision", "Timings",
	"Phases", "Lifecycle", "PricePerHour", "InstanceSeconds", "VolumeSize", "EstimatedCost"}

// steps is the build pipeline, in order, by the phases the output shows
// (each step enters its own); each comment says what the step creates /
// removes. Cleanup runs in reverse for every step that ran (see doc.go), as
// the cleanup phase.
func (b *Builder) steps() []multistep.Step {
	return []multistep.Step{
		// preflight
		&stepPreflight{}, // Describe* checks of the configuration; creates nothing
		&stepLeftovers{}, // lists (cleanup_leftovers: removes) expired resources of earlier builds
		&stepSourceAMI{}, // finds the AMI; creates nothing
		&stepSSHKey{},    // temporary SSH key in memory; removes the -debug key file
		&stepHostKey{},   // the instance's host key in memory; removes the -debug known_hosts file
		&stepNetwork{},   // VPC, subnets and zone offerings; creates nothing
		// launch
		&stepSecurityGroup{},  // creates / deletes the security group
		&stepLaunchTemplate{}, // creates / deletes the launch template
		// One attempt of the launch, under Packer's runner: run again on a
		// new instance when EC2 interrupts the spot instance (spot_retries).
		&stepAttempts{newSteps: b.attemptSteps},
	}
}

// attemptSteps are the steps of one launch attempt, made afresh for each.
func (b *Builder) attemptSteps() []multistep.Step {
	return []multistep.Step{
		// launch
		&stepFleet{},        // creates the fleet and instance / terminates it, deletes the fleet
		&stepInterruption{}, // starts / stops the spot interruption watcher
		// boot
		&stepWaitInstance{},    // waits for the instance to run; picks the SSH address
		connectStep(&b.config), // Packer's communicator.StepConnect: opens / closes SSH
		&stepWatchdog{},        // arms the instance's watchdog / stops the heartbeat
		// nix setup, build, download
		&stepBuild{}, // builds and downloads the image
		// provision: the build block's provisioners, on the instance, once
		// the image is home (build.ImagePath is set); unwrapped, so that
		// -on-error=run-cleanup-provisioner finds it.
		&commonsteps.StepProvision{},
	}
}

// Run runs the build pipeline.
func (b *Builder) Run(ctx context.Context, ui packersdk.Ui, hook packersdk.Hook) (packersdk.Artifact, error) {
	newEC2 := b.newEC2
	if newEC2 == nil {
		newEC2 = func(ctx context.Context) (awscommon.EC2API, error) { return b.config.AccessConfig.NewEC2Client(ctx) }
	}
	client, err := newEC2(ctx)
	if err != nil {
		return nil, fmt.Errorf("creating the EC2 client: %w; check region, profile and credentials", err)
	}

	buildID := uuid.TimeOrderedUUID()
	state := new(multistep.BasicStateBag)
	state.Put(stateConfig, &b.config)
	state.Put(stateUI, ui)
	clock := newPhaseClock(ui)
	state.Put(stateHook, &phaseHook{Hook: hook, clock: clock})
	state.Put(stateEC2, client)
	state.Put(stateCallerAccount, b.config.AccessConfig.CallerAccount)
	state.Put(stateBuildID, buildID)
	state.Put(stateExpires, expiry(&b.config, time.Now()))
	state.Put(statePhases, clock)

	runner := commonsteps.NewRunnerWithPauseFn(b.steps(), b.config.PackerConfig, ui, state)
	runner.Run(ctx, state)
	clock.finish()
	b.reportKept(ui, state)
	cost := b.report(ui, state, clock)

	if raw, ok := state.GetOk("error"); ok {
		if err, ok := raw.(error); ok {
			return nil, err
		}
		return nil, fmt.Errorf("%v", raw)
	}
	if _, ok := state.GetOk(multistep.StateCancelled); ok {
		return nil, errors.New("build was cancelled")
	}
	if _, ok := state.GetOk(multistep.StateHalted); ok {
		return nil, errors.New("build was halted")
	}
	res, ok := state.Get(stateResult).(*payload.Result)
	if !ok || res == nil {
		return nil, errors.New("internal error: the build finished without an image")
	}
	files := append([]string(nil), res.Files...)
	if !slices.Contains(files, res.ImagePath) {
		files = append([]string{res.ImagePath}, files...)
	}
	// A fresh map with the builder's own keys only: the state's copy also
	// holds what StepProvision adds for provisioners (the SSH connection,
	// the temporary private key included), which post-processors need not
	// see. Its Timings cover the provisioners too.
	gd := generatedData(state, res)
	addReport(gd, clock.phases(), cost)
	if err := payload.UpdateManifest(res.ImagePath+".json", manifestReport(clock.phases(), cost)); err != nil {
		ui.Error(fmt.Sprintf("The image is fine, but its manifest lacks the phases and the cost: %v", err))
	}
	return &Artifact{
		ImagePath:     res.ImagePath,
		SHA256:        res.SHA256,
		Paths:         files,
		Generated:     gd,
		Region:        b.config.Region,
		SourceAMI:     getString(state, stateSourceAMI),
		Configuration: configurationLabel(&b.config.Config),
	}, nil
}

// configurationLabel names what was built, for HCP Packer: the flake
// reference, the nixos_config file or folder's name, or "built-in".
func configurationLabel(c *payload.Config) string {
	switch {
	case c.Flake != "":
		return c.Flake
	case c.NixOSConfig != "":
		return filepath.Base(c.NixOSConfig)
	}
	return "built-in"
}

// reportKept lists, after a failed build whose cleanup -on-error=abort (or
// run-cleanup-provisioner) skipped, every resource left with the command
// that removes it.
func (b *Builder) reportKept(ui packersdk.Ui, state multistep.StateBag) {
	switch b.config.PackerOnError {
	case "abort", "run-cleanup-provisioner":
	default:
		return
	}
	_, failed := state.GetOk("error")
	_, halted := state.GetOk(multistep.StateHalted)
	_, cancelled := state.GetOk(multistep.StateCancelled)
	if !failed && !halted && !cancelled {
		return
	}
	kept := heldResources(state)
	if len(kept) == 0 {
		return
	}
	ui.Error(fmt.Sprintf("-on-error=%s: the build left %d resource(s) in %s for you to inspect; they cost money until removed. Remove them, in this order, with:%s\nList anything else tagged with this build's id with: %s",
		b.config.PackerOnError, len(kept), b.config.Region, describeLeftovers(b.config.Region, kept), describeByTagCommand(b.config.Region, getString(state, stateBuildID))))
}
