package builder

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/packerbuilderdata"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
)

// runPayload is payload.Run, the provisioner's own code; a variable only so
// tests can stand in for the remote build.
var runPayload = payload.Run

// stepBuild builds the image on the instance and downloads it, with the same
// code the nixos-sd provisioner runs, under the interruption watcher's
// context.
type stepBuild struct{}

func (s *stepBuild) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	comm, ok := state.Get("communicator").(packersdk.Communicator)
	if !ok || comm == nil {
		return halt(state, errors.New("internal error: no communicator in the build state"))
	}
	buildCtx, release := watchContext(ctx, state)
	defer release()

	cfg := e.cfg
	extra := map[string]string{
		"builder":           "nixos-sd",
		"region":            cfg.Region,
		"instance_id":       getString(state, stateInstanceID),
		"instance_type":     getString(state, stateInstanceType),
		"availability_zone": getString(state, stateZone),
		"source_ami":        getString(state, stateSourceAMI),
		"spot_price":        getString(state, stateSpotPrice),
		"lifecycle":         getString(state, stateLifecycle),
		"build_id":          getString(state, stateBuildID),
	}
	started := time.Now()
	res, err := runPayload(buildCtx, e.ui, comm, &cfg.Config, payload.RunOptions{
		ManifestExtra: extra,
		Phase:         func(p string) { clockOf(state).enter(payloadPhase(p)) },
		SSH:           downloadTarget(cfg, state),
	})
	if ierr := interruption(state); ierr != nil {
		return halt(state, ierr)
	}
	if err != nil {
		if ierr := interruptionAfterFailure(ctx, e, state); ierr != nil {
			return halt(state, ierr)
		}
		return halt(state, fmt.Errorf("building the NixOS SD image on instance %s: %w", extra["instance_id"], err))
	}
	if res == nil || res.ImagePath == "" {
		return halt(state, errors.New("internal error: the build returned no image"))
	}
	recordTiming(state, "build_and_download", time.Since(started))
	for k, d := range res.Timings {
		recordTiming(state, k, d)
	}
	state.Put(stateResult, res)
	gd := &packerbuilderdata.GeneratedData{State: state}
	for k, v := range generatedData(state, res) {
		gd.Put(k, v)
	}
	return multistep.ActionContinue
}

func (s *stepBuild) Cleanup(multistep.StateBag) {}

// generatedData is what the build tells Packer (build.<Key>) and
// post-processors (the artifact's "generated_data").
func generatedData(state multistep.StateBag, res *payload.Result) map[string]interface{} {
	d := map[string]interface{}{
		"InstanceType":     getString(state, stateInstanceType),
		"AvailabilityZone": getString(state, stateZone),
		"SourceAMI":        getString(state, stateSourceAMI),
		"SpotPrice":        getString(state, stateSpotPrice),
		"InstanceID":       getString(state, stateInstanceID),
		"Timings":          formatTimings(state),
	}
	// The cost so far: Builder.Run replaces it with the final figures once
	// the instance is gone.
	if cfg, ok := state.Get(stateConfig).(*Config); ok {
		addReport(d, clockOf(state).phases(), estimateCost(state, cfg, time.Now()))
	}
	if res != nil {
		d["ImagePath"] = res.ImagePath
		d["ImageSHA256"] = res.SHA256
		d["NixpkgsRevision"] = res.Nixpkgs.Revision
	}
	return d
}
