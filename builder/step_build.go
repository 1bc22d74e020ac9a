package builder

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"slices"
	"strings"
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
	clockOf(state).enter(phaseNixSetup)
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
	opts := payload.RunOptions{
		ManifestExtra: extra,
		Phase:         func(p string) { clockOf(state).enter(payloadPhase(p)) },
		SSH:           downloadTarget(cfg, state),
	}
	if cfg.Cache != nil {
		// The cache uses the build's credentials and region.
		if ac, err := cfg.AccessConfig.AWSConfig(buildCtx); err == nil {
			opts.AWS = &ac
		}
	}
	res, err := runPayload(buildCtx, e.ui, comm, &cfg.Config, opts)
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

// Cleanup removes the image when the build failed after it came home (a
// provisioner failed, the build was cancelled, or EC2 interrupted the
// instance): a failed build leaves no image that looks like a good one.
// -on-error=abort skips it, and keeps the image with the rest.
func (s *stepBuild) Cleanup(state multistep.StateBag) {
	clockOf(state).enter(phaseCleanup)
	res, ok := state.Get(stateResult).(*payload.Result)
	if !ok || res == nil || !buildFailed(state) {
		return
	}
	files := res.Files
	if !slices.Contains(files, res.ImagePath) {
		files = append([]string{res.ImagePath}, files...)
	}
	if ui, ok := state.Get(stateUI).(packersdk.Ui); ok {
		ui.Say(fmt.Sprintf("Removing the image of the failed build: %s", strings.Join(files, ", ")))
	}
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log.Printf("[WARN] nixos-sd: removing %s: %v", f, err)
		}
	}
	state.Remove(stateResult)
}

// buildFailed says whether the build (or the current attempt) failed, was
// cancelled or was interrupted.
func buildFailed(state multistep.StateBag) bool {
	for _, k := range []string{"error", multistep.StateHalted, multistep.StateCancelled, stateInterrupted} {
		if _, ok := state.GetOk(k); ok {
			return true
		}
	}
	return interruption(state) != nil
}

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
