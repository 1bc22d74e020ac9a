package builder

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
)

func stubPayload(t *testing.T, fn func(ctx context.Context, cfg *payload.Config, opts payload.RunOptions) (*payload.Result, error)) {
	t.Helper()
	old := runPayload
	runPayload = func(ctx context.Context, ui packersdk.Ui, comm packersdk.Communicator, cfg *payload.Config, opts payload.RunOptions) (*payload.Result, error) {
		return fn(ctx, cfg, opts)
	}
	t.Cleanup(func() { runPayload = old })
}

func buildState(t *testing.T, f *fakeEC2) (*Config, *multistep.BasicStateBag) {
	cfg := testConfig(t, nil)
	state, _ := testState(cfg, f)
	state.Put("communicator", packersdk.Communicator(&packersdk.MockCommunicator{}))
	state.Put(stateInstanceID, "i-0123456789abcdef0")
	state.Put(stateInstanceType, "c7g.2xlarge")
	state.Put(stateZone, "us-east-2a")
	state.Put(stateSourceAMI, "ami-0123456789abcdef0")
	state.Put(stateSpotPrice, "0.0812")
	return cfg, state
}

func TestBuildRunsPayloadAndSetsGeneratedData(t *testing.T) {
	var gotCfg *payload.Config
	var gotOpts payload.RunOptions
	stubPayload(t, func(ctx context.Context, cfg *payload.Config, opts payload.RunOptions) (*payload.Result, error) {
		gotCfg, gotOpts = cfg, opts
		return &payload.Result{ImagePath: "out/nixos.img", SHA256: "ab12", Files: []string{"out/nixos.img", "out/nixos.img.sha256", "out/nixos.img.json"},
			Timings: map[string]time.Duration{"build": 3 * time.Second}}, nil
	})
	cfg, state := buildState(t, newFakeEC2())
	if (&stepBuild{}).Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateErr(state))
	}
	if gotCfg != &cfg.Config {
		t.Error("payload.Run did not get the builder's own payload configuration")
	}
	for k, want := range map[string]string{"instance_type": "c7g.2xlarge", "availability_zone": "us-east-2a", "source_ami": "ami-0123456789abcdef0", "spot_price": "0.0812", "region": "us-east-2", "instance_id": "i-0123456789abcdef0"} {
		if gotOpts.ManifestExtra[k] != want {
			t.Errorf("ManifestExtra[%s] = %q, want %q", k, gotOpts.ManifestExtra[k], want)
		}
	}
	gd, _ := state.Get("generated_data").(map[string]interface{})
	for _, k := range GeneratedDataKeys {
		if _, ok := gd[k]; !ok {
			t.Errorf("generated data lacks %s", k)
		}
	}
	if gd["ImagePath"] != "out/nixos.img" || gd["ImageSHA256"] != "ab12" || gd["InstanceType"] != "c7g.2xlarge" {
		t.Errorf("generated data = %v", gd)
	}
	if !strings.Contains(gd["Timings"].(string), "build=3s") {
		t.Errorf("timings = %v", gd["Timings"])
	}
}

func TestBuildInterrupted(t *testing.T) {
	f := newFakeEC2()
	f.spotLifecycle, f.stateReason = true, reasonSpotTermination
	f.instanceState = func(n int, id string) types.InstanceStateName {
		if n >= 2 {
			return types.InstanceStateNameTerminated
		}
		return types.InstanceStateNameRunning
	}
	stubPayload(t, func(ctx context.Context, cfg *payload.Config, opts payload.RunOptions) (*payload.Result, error) {
		<-ctx.Done() // a long build, stopped only by the watcher
		return nil, ctx.Err()
	})
	_, state := buildState(t, f)
	w := &stepInterruption{}
	w.Run(context.Background(), state)
	defer w.Cleanup(state)
	done := make(chan multistep.StepAction)
	go func() { done <- (&stepBuild{}).Run(context.Background(), state) }()
	select {
	case a := <-done:
		if a != multistep.ActionHalt {
			t.Fatal("build continued")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the build was not stopped by the interruption")
	}
	if msg := stateErr(state).Error(); !strings.Contains(msg, "the spot instance was interrupted by EC2") {
		t.Errorf("error = %q", msg)
	}
}

func TestBuildFailure(t *testing.T) {
	stubPayload(t, func(context.Context, *payload.Config, payload.RunOptions) (*payload.Result, error) {
		return nil, errors.New("nix build failed")
	})
	_, state := buildState(t, newFakeEC2())
	if (&stepBuild{}).Run(context.Background(), state) != multistep.ActionHalt {
		t.Fatal("passed")
	}
	if msg := stateErr(state).Error(); !strings.Contains(msg, "nix build failed") || !strings.Contains(msg, "i-0123456789abcdef0") {
		t.Errorf("error = %q", msg)
	}
}

// TestBuildConnectionLostToInterruption: EC2 reclaims the instance and the
// SSH connection drops before the watcher's next poll: the build still says
// the spot instance was interrupted, not that SSH failed.
func TestBuildConnectionLostToInterruption(t *testing.T) {
	f := newFakeEC2()
	f.spotLifecycle, f.stateReason = true, reasonSpotTermination
	f.instanceState = func(int, string) types.InstanceStateName { return types.InstanceStateNameTerminated }
	stubPayload(t, func(context.Context, *payload.Config, payload.RunOptions) (*payload.Result, error) {
		return nil, errors.New("the SSH connection dropped while the command ran")
	})
	_, state := buildState(t, f)
	// The watcher runs but has not polled yet (its first poll is seconds away).
	w := &stepInterruption{}
	w.Run(context.Background(), state)
	defer w.Cleanup(state)
	if (&stepBuild{}).Run(context.Background(), state) != multistep.ActionHalt {
		t.Fatal("build continued")
	}
	msg := stateErr(state).Error()
	if !strings.Contains(msg, "the spot instance was interrupted by EC2 (instance terminated") {
		t.Errorf("error = %q, want the interruption", msg)
	}
}

// TestBuildFailureOnHealthyInstance: a failed build on an instance that is
// still running reports the build's own error.
func TestBuildFailureOnHealthyInstance(t *testing.T) {
	f := newFakeEC2()
	stubPayload(t, func(context.Context, *payload.Config, payload.RunOptions) (*payload.Result, error) {
		return nil, errors.New("the SSH connection dropped while the command ran")
	})
	_, state := buildState(t, f)
	if (&stepBuild{}).Run(context.Background(), state) != multistep.ActionHalt {
		t.Fatal("build continued")
	}
	if msg := stateErr(state).Error(); !strings.Contains(msg, "the SSH connection dropped") || strings.Contains(msg, "interrupted") {
		t.Errorf("error = %q, want the build's own error", msg)
	}
	if f.count("DescribeInstances") == 0 {
		t.Error("the instance was not looked at after the failure")
	}
}

// TestBuildCleanupRemovesTheImageOfAFailedBuild: an image that came home
// before the build failed (a provisioner, Ctrl-C, an interruption) is
// removed with its sums; a successful build's stays.
func TestBuildCleanupRemovesTheImageOfAFailedBuild(t *testing.T) {
	for _, failed := range []bool{false, true} {
		dir := t.TempDir()
		res := &payload.Result{ImagePath: filepath.Join(dir, "nixos.img")}
		res.Files = []string{res.ImagePath, res.ImagePath + ".sha256", res.ImagePath + ".json"}
		for _, f := range res.Files {
			if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		state, _ := testState(testConfig(t, nil), newFakeEC2())
		state.Put(stateResult, res)
		if failed {
			state.Put("error", errors.New("provisioner failed"))
		}
		(&stepBuild{}).Cleanup(state)
		for _, f := range res.Files {
			_, err := os.Stat(f)
			if kept := err == nil; kept == failed {
				t.Errorf("failed build %v: %s kept %v", failed, f, kept)
			}
		}
	}
}
