package builder

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// poolErr is a CreateFleet Errors entry for the pool of type t in subnet.
func poolErr(t, subnet, code, msg string) types.CreateFleetError {
	return types.CreateFleetError{
		ErrorCode: aws.String(code), ErrorMessage: aws.String(msg),
		LaunchTemplateAndOverrides: &types.LaunchTemplateAndOverridesResponse{Overrides: &types.FleetLaunchTemplateOverrides{
			InstanceType: types.InstanceType(t), SubnetId: aws.String(subnet),
		}},
	}
}

// overridesOf lists "type/subnet" of a request's overrides.
func overridesOf(in *ec2.CreateFleetInput) []string {
	var out []string
	for _, o := range in.LaunchTemplateConfigs[0].Overrides {
		out = append(out, string(o.InstanceType)+"/"+aws.ToString(o.SubnetId))
	}
	return out
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		code, msg string
		perPool   bool
		want      errKind
	}{
		{"InsufficientInstanceCapacity", "", true, kindCapacity},
		{"InsufficientInstanceCapacity", "", false, kindCapacity},
		{"MaxSpotInstanceCountExceeded", "", true, kindQuota},
		{"VcpuLimitExceeded", "", false, kindQuota},
		{"Unsupported", "", true, kindUnsupported},
		{"Unsupported", "", false, kindOther},
		{"InvalidParameterValue", "", true, kindUnsupported},
		{"InvalidParameterValue", "", false, kindOther},
		{"UnauthorizedOperation", "", false, kindOther},
		{"InternalError", "", true, kindOther},
		{"Whatever", "Your requested instance type (c7g.2xlarge) is not supported in your requested Availability Zone", true, kindUnsupported},
	} {
		if got := classify(tc.code, tc.msg, tc.perPool); got != tc.want {
			t.Errorf("classify(%s, perPool=%v) = %v, want %v", tc.code, tc.perPool, got, tc.want)
		}
	}
}

// An unsupported pool is left out and the request repeated at once; capacity
// errors in the other pools are waited for; the instance comes from a pool
// left.
func TestLaunchDropsUnsupportedPoolKeepsOthers(t *testing.T) {
	f := newFakeEC2()
	f.createFleet = func(n int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		var errs []types.CreateFleetError
		for _, o := range in.LaunchTemplateConfigs[0].Overrides {
			switch {
			case o.InstanceType == "m7g.2xlarge" && aws.ToString(o.SubnetId) == "subnet-aaaaaaaa":
				errs = append(errs, poolErr("m7g.2xlarge", "subnet-aaaaaaaa", "Unsupported", "Your requested instance type (m7g.2xlarge) is not supported in your requested Availability Zone (us-east-2a)."))
			case n < 3:
				errs = append(errs, poolErr(string(o.InstanceType), aws.ToString(o.SubnetId), "InsufficientInstanceCapacity", "no capacity"))
			}
		}
		if n < 3 {
			return &ec2.CreateFleetOutput{FleetId: aws.String("fleet-empty"), Errors: errs}, nil
		}
		out := launched(in, "i-0123456789abcdef0")
		out.Errors = errs
		return out, nil
	}
	_, state, ui := launchState(t, f, map[string]interface{}{"instance_types": []string{"c7g.2xlarge", "m7g.2xlarge"}})
	if action := launch(state); action != multistep.ActionContinue {
		t.Fatalf("launch halted: %v\n%s", stateErr(state), ui)
	}
	ins := inputsOf[*ec2.CreateFleetInput](f, "CreateFleet")
	if len(ins) != 3 {
		t.Fatalf("CreateFleet calls = %d, want 3", len(ins))
	}
	if !slices.Contains(overridesOf(ins[0]), "m7g.2xlarge/subnet-aaaaaaaa") {
		t.Errorf("the first request lacks the m7g pool in us-east-2a: %v", overridesOf(ins[0]))
	}
	for _, in := range ins[1:] {
		if slices.Contains(overridesOf(in), "m7g.2xlarge/subnet-aaaaaaaa") {
			t.Errorf("a later request still asks the unsupported pool: %v", overridesOf(in))
		}
		if len(overridesOf(in)) != len(overridesOf(ins[0]))-1 {
			t.Errorf("a later request dropped more than the unsupported pool: %v", overridesOf(in))
		}
	}
	if !strings.Contains(ui.String(), "Leaving out 1 pool(s)") || !strings.Contains(ui.String(), "No spot capacity") {
		t.Errorf("the user is not told about the pool left out and the capacity wait:\n%s", ui)
	}
}

// An odd error in one pool does not hide that the others lack capacity: the
// request is retried rather than failed.
func TestLaunchOddPoolErrorDoesNotHideCapacity(t *testing.T) {
	f := newFakeEC2()
	f.createFleet = func(n int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		if n == 1 {
			return &ec2.CreateFleetOutput{FleetId: aws.String("fleet-1"), Errors: []types.CreateFleetError{
				poolErr("c7g.2xlarge", "subnet-aaaaaaaa", "InternalError", "An internal error has occurred"),
				poolErr("c7g.2xlarge", "subnet-bbbbbbbb", "InsufficientInstanceCapacity", "no capacity"),
			}}, nil
		}
		return launched(in, "i-0123456789abcdef0"), nil
	}
	_, state, ui := launchState(t, f, map[string]interface{}{"instance_types": []string{"c7g.2xlarge"}})
	if action := launch(state); action != multistep.ActionContinue {
		t.Fatalf("launch halted: %v\n%s", stateErr(state), ui)
	}
	if n := f.count("CreateFleet"); n != 2 {
		t.Errorf("CreateFleet calls = %d, want 2", n)
	}
}

// Only odd errors: the build fails at once.
func TestLaunchOddPoolErrorsOnlyFail(t *testing.T) {
	f := newFakeEC2()
	f.createFleet = func(n int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		return &ec2.CreateFleetOutput{FleetId: aws.String("fleet-1"), Errors: []types.CreateFleetError{
			poolErr("c7g.2xlarge", "subnet-aaaaaaaa", "InvalidLaunchTemplate.Malformed", "bad"),
		}}, nil
	}
	_, state, _ := launchState(t, f, map[string]interface{}{"instance_types": []string{"c7g.2xlarge"}})
	if action := launch(state); action != multistep.ActionHalt {
		t.Fatal("launch passed")
	}
	if n := f.count("CreateFleet"); n != 1 {
		t.Errorf("CreateFleet calls = %d, want 1", n)
	}
	if msg := stateErr(state).Error(); !strings.Contains(msg, "InvalidLaunchTemplate.Malformed") {
		t.Errorf("error = %s", msg)
	}
}

// A quota is not retried: the error names the quota, where to raise it, and
// on_demand_fallback.
func TestLaunchQuotaSaysWhichQuota(t *testing.T) {
	f := newFakeEC2()
	f.createFleet = func(n int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		var errs []types.CreateFleetError
		for _, o := range in.LaunchTemplateConfigs[0].Overrides {
			errs = append(errs, poolErr(string(o.InstanceType), aws.ToString(o.SubnetId), "VcpuLimitExceeded", "You have requested more vCPU capacity than your current vCPU limit of 0 allows"))
		}
		return &ec2.CreateFleetOutput{FleetId: aws.String("fleet-1"), Errors: errs}, nil
	}
	_, state, _ := launchState(t, f, map[string]interface{}{"instance_types": []string{"c7g.2xlarge"}})
	state.Put(stateVCPUs, map[string]int32{"c7g.2xlarge": 8})
	if action := launch(state); action != multistep.ActionHalt {
		t.Fatal("launch passed")
	}
	if n := f.count("CreateFleet"); n != 1 {
		t.Errorf("CreateFleet calls = %d; a quota must not be retried", n)
	}
	msg := stateErr(state).Error()
	for _, want := range []string{"quota", `"All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"`, "Service Quotas", "us-east-2", "L-34B43A08", "--desired-value 8", "on_demand_fallback = true"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q\nlacks %q", msg, want)
		}
	}
}

// A spot quota with on_demand_fallback goes straight to on-demand.
func TestLaunchSpotQuotaFallsBack(t *testing.T) {
	f := newFakeEC2()
	f.createFleet = func(n int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		if in.TargetCapacitySpecification.DefaultTargetCapacityType == types.DefaultTargetCapacityTypeOnDemand {
			return launched(in, "i-00000000000000ond"), nil
		}
		return nil, apiErr("MaxSpotInstanceCountExceeded", "Max spot instance count exceeded")
	}
	_, state, ui := launchState(t, f, map[string]interface{}{"instance_types": []string{"c7g.2xlarge"}, "on_demand_fallback": true})
	if action := launch(state); action != multistep.ActionContinue {
		t.Fatalf("launch halted: %v", stateErr(state))
	}
	if n := f.count("CreateFleet"); n != 2 {
		t.Errorf("CreateFleet calls = %d, want one spot and one on-demand", n)
	}
	if !strings.Contains(ui.String(), "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests") {
		t.Errorf("the user is not told which quota stopped spot:\n%s", ui)
	}
}

// Every pool unsupported: the build fails saying so.
func TestLaunchNoSupportedPool(t *testing.T) {
	f := newFakeEC2()
	f.createFleet = func(n int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		var errs []types.CreateFleetError
		for _, o := range in.LaunchTemplateConfigs[0].Overrides {
			errs = append(errs, poolErr(string(o.InstanceType), aws.ToString(o.SubnetId), "Unsupported", "not supported in your requested Availability Zone"))
		}
		return &ec2.CreateFleetOutput{FleetId: aws.String("fleet-1"), Errors: errs}, nil
	}
	_, state, _ := launchState(t, f, map[string]interface{}{"instance_types": []string{"c7g.2xlarge"}})
	if action := launch(state); action != multistep.ActionHalt {
		t.Fatal("launch passed")
	}
	if n := f.count("CreateFleet"); n != 1 {
		t.Errorf("CreateFleet calls = %d", n)
	}
	if msg := stateErr(state).Error(); !strings.Contains(msg, "cannot launch the instance in any pool") || !strings.Contains(msg, "instance_types") {
		t.Errorf("error = %s", msg)
	}
}

// A CreateFleet whose answer never arrived may have launched an instance:
// Cleanup finds it by the build id tag (asking again while EC2 does not show
// it yet) and terminates it. It does not look for the fleet: DescribeFleets
// leaves out instant fleets unless their ids are named.
func TestCleanupFindsInstanceOfLostAnswer(t *testing.T) {
	f := newFakeEC2()
	f.createFleet = func(n int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		return nil, errors.New("read tcp 127.0.0.1:4242: connection reset by peer")
	}
	f.tagged = []string{"i-0lost00000000000"}
	f.taggedFrom = 3
	f.fleets = []types.FleetData{
		{FleetId: aws.String("fleet-lost"), FleetState: types.FleetStateCodeActive, Tags: []types.Tag{{Key: aws.String(BuildIDTag), Value: aws.String("0190b1a2-test-build-id")}}},
		{FleetId: aws.String("fleet-other"), FleetState: types.FleetStateCodeActive, Tags: []types.Tag{{Key: aws.String(BuildIDTag), Value: aws.String("another-build")}}},
	}
	f.instanceState = func(n int, id string) types.InstanceStateName { return types.InstanceStateNameTerminated }
	_, state, ui := launchState(t, f, nil)
	if action := launch(state); action != multistep.ActionHalt {
		t.Fatal("launch passed")
	}
	cleanupLaunch(state)
	term := inputsOf[*ec2.TerminateInstancesInput](f, "TerminateInstances")
	if len(term) != 1 || !slices.Equal(term[0].InstanceIds, []string{"i-0lost00000000000"}) {
		t.Fatalf("terminated %v, want the untracked instance\n%s", term, ui)
	}
	if n := f.count("DescribeFleets") + f.count("DeleteFleets"); n != 0 {
		t.Errorf("%d DescribeFleets/DeleteFleets calls; an instant fleet cannot be listed and its id never arrived", n)
	}
	if f.taggedCalls < 3 {
		t.Errorf("searched by tag %d times; an instance not visible yet needs another look", f.taggedCalls)
	}
	in := inputsOf[*ec2.DescribeInstancesInput](f, "DescribeInstances")[0]
	if got := filterValues(in.Filters, "tag:"+BuildIDTag); !slices.Equal(got, []string{"0190b1a2-test-build-id"}) {
		t.Errorf("tag filter = %v", got)
	}
	if !strings.Contains(ui.String(), "answer never arrived") {
		t.Errorf("the user is not told about the untracked instance:\n%s", ui)
	}
}

// Each request of a build has its own client token, across launch rounds.
func TestClientTokensUnique(t *testing.T) {
	seen := map[string]bool{}
	for round := 1; round <= 3; round++ {
		for attempt := 1; attempt <= 6; attempt++ {
			tok := clientToken("0190b1a2-aaaa-bbbb-cccc-0123456789ab", round, attempt)
			if seen[tok] || len(tok) > 64 {
				t.Errorf("token %q reused or longer than EC2's 64", tok)
			}
			seen[tok] = true
		}
	}
}

// TestRequestWideError: every pool failing with the same InvalidParameterValue
// naming no pool is the request's fault: one message, one request, no
// "unsupported" pools left out.
func TestRequestWideError(t *testing.T) {
	const msg = "Volume of size 4GB is smaller than snapshot 'snap-0123', expect size >= 8GB"
	f := newFakeEC2()
	f.createFleet = func(n int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		var errs []types.CreateFleetError
		for _, o := range in.LaunchTemplateConfigs[0].Overrides {
			errs = append(errs, poolErr(string(o.InstanceType), aws.ToString(o.SubnetId), "InvalidParameterValue", msg))
		}
		return &ec2.CreateFleetOutput{FleetId: aws.String("fleet-1"), Errors: errs}, nil
	}
	_, state, ui := launchState(t, f, map[string]interface{}{"instance_types": []string{"c7g.2xlarge", "m7g.2xlarge"}})
	if launch(state) != multistep.ActionHalt {
		t.Fatal("launch passed")
	}
	if n := f.count("CreateFleet"); n != 1 {
		t.Errorf("CreateFleet calls = %d, want 1: leaving pools out cannot mend the request", n)
	}
	err := stateErr(state).Error()
	for _, want := range []string{"EC2 refused the launch request itself, alike in every pool", msg, "volume_size"} {
		if !strings.Contains(err, want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err+ui.String(), "Leaving out") || strings.Contains(err, "any pool") {
		t.Errorf("the request's error was blamed on the pools:\n%s\n%s", err, ui)
	}
	// Messages naming their pool's type stay per pool.
	r := refusal(types.DefaultTargetCapacityTypeSpot, []types.CreateFleetError{
		poolErr("c7g.2xlarge", "subnet-a", "InvalidParameterValue", "The instance type c7g.2xlarge is not valid for this request."),
		poolErr("m7g.2xlarge", "subnet-a", "InvalidParameterValue", "The instance type m7g.2xlarge is not valid for this request."),
	}, []pool{{instanceType: "c7g.2xlarge", subnetID: "subnet-a"}, {instanceType: "m7g.2xlarge", subnetID: "subnet-a"}})
	if r.requestWide || r.kind() != kindUnsupported {
		t.Errorf("per-pool messages taken as request-wide: %+v", r)
	}
}
