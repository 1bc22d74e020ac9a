package builder

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/hostkey"
)

// launchState is the state stepNetwork finds after the earlier steps.
func launchState(t *testing.T, f *fakeEC2, extra map[string]interface{}) (*Config, *multistep.BasicStateBag, *testUI) {
	t.Helper()
	cfg := testConfig(t, extra)
	state, ui := testState(cfg, f)
	state.Put(stateSourceAMI, "ami-0123456789abcdef0")
	state.Put(stateSecurityGroupID, "sg-0123456789abcdef0")
	state.Put(stateVpcID, "vpc-0123456789abcdef0")
	state.Put(statePublicKey, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBuildKey packer-nixos-sd")
	state.Put(stateInstanceTypes, cfg.InstanceTypes)
	pair, err := hostkey.Generate("test")
	if err != nil {
		t.Fatal(err)
	}
	state.Put(stateHostKey, pair)
	return cfg, state, ui
}

// launch runs stepNetwork, stepLaunchTemplate and stepFleet as the pipeline
// does.
func launch(state multistep.StateBag) multistep.StepAction {
	for _, s := range []multistep.Step{&stepNetwork{}, &stepLaunchTemplate{}, &stepFleet{}} {
		if a := s.Run(context.Background(), state); a != multistep.ActionContinue {
			return a
		}
	}
	return multistep.ActionContinue
}

// cleanupLaunch runs their cleanups in the pipeline's order.
func cleanupLaunch(state multistep.StateBag) {
	for _, s := range []multistep.Step{&stepFleet{}, &stepLaunchTemplate{}, &stepNetwork{}} {
		s.Cleanup(state)
	}
}

func TestLaunchRequestShape(t *testing.T) {
	f := newFakeEC2()
	_, state, _ := launchState(t, f, map[string]interface{}{
		"instance_types": []string{"c7g.2xlarge", "m7g.2xlarge"},
		"run_tags":       map[string]string{"Owner": "me"},
		"tags":           map[string]string{"Project": "pi"},
	})
	if action := launch(state); action != multistep.ActionContinue {
		t.Fatalf("launch halted: %v", stateErr(state))
	}

	fleets := inputsOf[*ec2.CreateFleetInput](f, "CreateFleet")
	if len(fleets) != 1 {
		t.Fatalf("CreateFleet calls = %d", len(fleets))
	}
	in := fleets[0]
	if in.Type != types.FleetTypeInstant {
		t.Errorf("fleet type = %q", in.Type)
	}
	if in.TargetCapacitySpecification.DefaultTargetCapacityType != types.DefaultTargetCapacityTypeSpot || aws.ToInt32(in.TargetCapacitySpecification.TotalTargetCapacity) != 1 {
		t.Errorf("capacity = %+v", in.TargetCapacitySpecification)
	}
	if in.SpotOptions == nil || in.SpotOptions.AllocationStrategy != types.SpotAllocationStrategyPriceCapacityOptimized || in.SpotOptions.MaxTotalPrice != nil {
		t.Errorf("spot options = %+v, want price-capacity-optimized with no max price (auto)", in.SpotOptions)
	}
	var pairs []string
	for _, o := range in.LaunchTemplateConfigs[0].Overrides {
		if o.MaxPrice != nil {
			t.Errorf("override has MaxPrice %q with spot_price auto", aws.ToString(o.MaxPrice))
		}
		pairs = append(pairs, string(o.InstanceType)+"@"+aws.ToString(o.SubnetId))
	}
	// m7g.2xlarge is not offered in us-east-2c: that pair is left out.
	want := "c7g.2xlarge@subnet-aaaaaaaa c7g.2xlarge@subnet-bbbbbbbb c7g.2xlarge@subnet-cccccccc m7g.2xlarge@subnet-aaaaaaaa m7g.2xlarge@subnet-bbbbbbbb"
	if got := strings.Join(pairs, " "); got != want {
		t.Errorf("overrides = %s\nwant        %s", got, want)
	}

	if getString(state, stateInstanceID) != "i-0123456789abcdef0" || getString(state, stateInstanceType) != "c7g.2xlarge" ||
		getString(state, stateZone) != "us-east-2a" || getString(state, stateSpotPrice) != "0.0812" ||
		getString(state, stateLaunchTemplate) != "lt-0123456789abcdef0" || strings.Join(getStrings(state, stateFleetIDs), ",") != "fleet-i-0123456789abcdef0" {
		t.Errorf("state: id=%s type=%s zone=%s price=%s lt=%s fleets=%v", getString(state, stateInstanceID), getString(state, stateInstanceType),
			getString(state, stateZone), getString(state, stateSpotPrice), getString(state, stateLaunchTemplate), getStrings(state, stateFleetIDs))
	}
}

func TestLaunchSpotPriceAndSubnet(t *testing.T) {
	f := newFakeEC2()
	_, state, _ := launchState(t, f, map[string]interface{}{
		"spot_price":               "0.12",
		"subnet_id":                "subnet-bbbbbbbb",
		"spot_allocation_strategy": "capacity-optimized",
		"instance_types":           []string{"c7g.2xlarge"},
		"instance_max_lifetime":    "2h30m",
		"build_timeout":            "1h",
		"availability_zone":        "us-east-2b",
		"ssh_source_cidrs":         []string{"198.51.100.0/24"},
		"volume_size":              64,
		"on_demand_fallback":       true,
		"ssh_interface":            "public_ip",
		"public_ip_url":            "http://127.0.0.1:1/",
	})
	if action := launch(state); action != multistep.ActionContinue {
		t.Fatalf("launch halted: %v", stateErr(state))
	}
	in := inputsOf[*ec2.CreateFleetInput](f, "CreateFleet")[0]
	if in.SpotOptions.AllocationStrategy != types.SpotAllocationStrategyCapacityOptimized || aws.ToString(in.SpotOptions.MaxTotalPrice) != "0.12" {
		t.Errorf("spot options = %+v", in.SpotOptions)
	}
	ov := in.LaunchTemplateConfigs[0].Overrides
	if len(ov) != 1 || ov[0].SubnetId != nil || aws.ToString(ov[0].MaxPrice) != "0.12" {
		t.Errorf("overrides = %+v; with subnet_id the network interface names the subnet, not the override", ov)
	}
	if getString(state, stateZone) != "us-east-2b" {
		t.Errorf("zone = %q", getString(state, stateZone))
	}
}

func TestLaunchCapacityRetryThenFallback(t *testing.T) {
	f := newFakeEC2()
	f.createFleet = func(n int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		if in.TargetCapacitySpecification.DefaultTargetCapacityType == types.DefaultTargetCapacityTypeOnDemand {
			return launched(in, "i-00000000000000ond"), nil
		}
		if n%2 == 1 {
			// Call-level error: the output must not be read, even when the
			// transport hands one back.
			return launched(in, "i-0bad0000000000000"), apiErr("InsufficientInstanceCapacity", "no capacity")
		}
		return &ec2.CreateFleetOutput{
			FleetId: aws.String("fleet-empty"),
			Errors: []types.CreateFleetError{{
				ErrorCode:    aws.String("UnfulfillableCapacity"),
				ErrorMessage: aws.String("Unable to fulfill capacity due to your request configuration."),
			}},
		}, nil
	}
	_, state, ui := launchState(t, f, map[string]interface{}{"on_demand_fallback": true, "instance_types": []string{"c7g.2xlarge"}})
	if action := launch(state); action != multistep.ActionContinue {
		t.Fatalf("launch halted: %v", stateErr(state))
	}
	if n := f.count("CreateFleet"); n != launchAttempts+1 {
		t.Errorf("CreateFleet calls = %d, want %d spot attempts and one on-demand", n, launchAttempts)
	}
	if got := getString(state, stateInstanceID); got != "i-00000000000000ond" {
		t.Errorf("instance = %q; the output of a failed call must never be used", got)
	}
	for _, id := range getStrings(state, stateInstanceIDs) {
		if id == "i-0bad0000000000000" {
			t.Error("an instance from a failed call's output was recorded")
		}
	}
	if getString(state, stateSpotPrice) != "on-demand" || getString(state, stateLifecycle) != "on-demand" {
		t.Errorf("price/lifecycle = %s/%s", getString(state, stateSpotPrice), getString(state, stateLifecycle))
	}
	if !strings.Contains(ui.String(), "falling back to on-demand") {
		t.Errorf("the user is not told about the fallback:\n%s", ui.String())
	}
	// Empty fleets are recorded so cleanup deletes them.
	if fl := getStrings(state, stateFleetIDs); len(fl) < 2 || fl[0] != "fleet-empty" {
		t.Errorf("fleets = %v", fl)
	}
	od := inputsOf[*ec2.CreateFleetInput](f, "CreateFleet")[launchAttempts]
	if od.SpotOptions != nil || od.LaunchTemplateConfigs[0].Overrides[0].MaxPrice != nil {
		t.Errorf("on-demand request carries spot options: %+v", od.SpotOptions)
	}
}

func TestLaunchCapacityFailureMessage(t *testing.T) {
	f := newFakeEC2()
	f.createFleet = func(n int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		return nil, apiErr("InsufficientInstanceCapacity", "There is no Spot capacity available that matches your request.")
	}
	_, state, _ := launchState(t, f, map[string]interface{}{"instance_types": []string{"c7g.2xlarge", "m6g.2xlarge"}})
	if action := launch(state); action != multistep.ActionHalt {
		t.Fatal("launch passed without capacity")
	}
	if n := f.count("CreateFleet"); n != launchAttempts {
		t.Errorf("CreateFleet calls = %d, want %d", n, launchAttempts)
	}
	msg := stateErr(state).Error()
	for _, want := range []string{"no spot capacity for c7g.2xlarge, m6g.2xlarge in us-east-2a, us-east-2b, us-east-2c after 3 attempts", "add more instance_types", "another availability_zone or region", "on_demand_fallback = true"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q\nlacks %q", msg, want)
		}
	}
	// The launch template was recorded for cleanup even though no instance came.
	if getString(state, stateLaunchTemplate) == "" {
		t.Error("launch template id not recorded")
	}
}

func TestLaunchNonCapacityErrorFailsAtOnce(t *testing.T) {
	f := newFakeEC2()
	f.createFleet = func(n int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		return nil, apiErr("UnauthorizedOperation", "You are not authorized to perform this operation.")
	}
	_, state, _ := launchState(t, f, nil)
	if action := launch(state); action != multistep.ActionHalt {
		t.Fatal("launch passed")
	}
	if n := f.count("CreateFleet"); n != 1 {
		t.Errorf("CreateFleet calls = %d; a permission error must not be retried", n)
	}
	if !strings.Contains(stateErr(state).Error(), "UnauthorizedOperation") {
		t.Errorf("error = %v", stateErr(state))
	}
}

func TestCleanupOnHaltedStateDoesNotPanic(t *testing.T) {
	f := newFakeEC2()
	cfg := testConfig(t, nil)
	state, _ := testState(cfg, f)
	// Nothing was created: every cleanup must cope with an empty state.
	for _, s := range []multistep.Step{&stepBuild{}, &stepWatchdog{}, connectStep(cfg), &stepWaitInstance{}, &stepInterruption{}, &stepFleet{}, &stepLaunchTemplate{}, &stepSecurityGroup{}, &stepNetwork{}, &stepSSHKey{}, &stepSourceAMI{}, &stepPreflight{}} {
		s.Cleanup(state)
	}
	if c := f.Calls(); len(c) != 0 {
		t.Errorf("cleanup of nothing made calls %v", c)
	}
	// Not even a config in the state.
	empty := new(multistep.BasicStateBag)
	for _, s := range []multistep.Step{&stepBuild{}, &stepWatchdog{}, connectStep(cfg), &stepWaitInstance{}, &stepInterruption{}, &stepFleet{}, &stepLaunchTemplate{}, &stepSecurityGroup{}, &stepNetwork{}, &stepSSHKey{}} {
		s.Cleanup(empty)
	}
}

func TestCleanupOrder(t *testing.T) {
	f := newFakeEC2()
	terminated := false
	f.instanceState = func(n int, id string) types.InstanceStateName {
		if !terminated {
			return types.InstanceStateNameRunning
		}
		if n < 3 {
			return types.InstanceStateNameShuttingDown
		}
		return types.InstanceStateNameTerminated
	}
	f.spotRequests = []types.SpotInstanceRequest{
		{SpotInstanceRequestId: aws.String("sir-12345678"), InstanceId: aws.String("i-0123456789abcdef0"), State: types.SpotInstanceStateActive},
		{SpotInstanceRequestId: aws.String("sir-otherbuild"), InstanceId: aws.String("i-0ffffffffffffffff"), State: types.SpotInstanceStateActive},
	}
	f.deleteSGErrs = []error{
		apiErr("DependencyViolation", "resource sg-0123456789abcdef0 has a dependent object"),
		apiErr("DependencyViolation", "resource sg-0123456789abcdef0 has a dependent object"),
	}
	cfg, state, _ := launchState(t, f, nil)
	if action := launch(state); action != multistep.ActionContinue {
		t.Fatalf("launch halted: %v", stateErr(state))
	}
	f.mu.Lock()
	f.calls, f.inputs, f.describeN = nil, nil, 0
	f.mu.Unlock()
	terminated = true
	// Packer cancelled (Ctrl-C): cleanup must not use the build context.
	state.Put(multistep.StateCancelled, true)
	cleanupLaunch(state)
	(&stepSecurityGroup{}).Cleanup(state)
	_ = cfg

	var order []string
	for _, c := range f.Calls() {
		if len(order) == 0 || order[len(order)-1] != c {
			order = append(order, c)
		}
	}
	want := "DescribeInstances TerminateInstances DescribeInstances DeleteFleets DeleteLaunchTemplate DeleteSecurityGroup"
	if got := strings.Join(order, " "); got != want {
		t.Errorf("cleanup calls = %s\nwant            %s", got, want)
	}
	if n := f.count("DescribeInstances"); n < 3 {
		t.Errorf("waited with %d DescribeInstances calls; it must wait until terminated", n)
	}
	if n := f.count("DeleteSecurityGroup"); n != 3 {
		t.Errorf("DeleteSecurityGroup calls = %d, want 2 DependencyViolation retries then success", n)
	}
	df := inputsOf[*ec2.DeleteFleetsInput](f, "DeleteFleets")[0]
	if !aws.ToBool(df.TerminateInstances) || len(df.FleetIds) != 1 {
		t.Errorf("DeleteFleets = %+v", df)
	}
	// A second cleanup finds nothing left to do.
	before := len(f.Calls())
	cleanupLaunch(state)
	(&stepSecurityGroup{}).Cleanup(state)
	if after := len(f.Calls()); after != before {
		t.Errorf("a second cleanup made %d more calls", after-before)
	}
}
