package builder

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
)

// fakeEC2 is a small recording fake of the EC2 API. The embedded interface is
// nil: a call no test expects panics, which the test then reports.
type fakeEC2 struct {
	awscommon.EC2API

	mu     sync.Mutex
	calls  []string
	inputs []interface{}

	regions       []string
	regionsErr    error
	zones         []string
	typeArch      map[string]string   // instance type -> architecture
	offerings     map[string][]string // zone -> offered types
	images        map[string]types.Image
	defaultVpc    string
	subnets       []types.Subnet
	createFleet   func(n int, in *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error)
	fleetCalls    int
	instanceState func(n int, id string) types.InstanceStateName
	describeN     int
	spotRequests  []types.SpotInstanceRequest
	deleteSGErrs  []error // returned in turn by DeleteSecurityGroup
	createSGErr   error   // returned by CreateSecurityGroup
	spotStatus    string
	publicIP      string
	instanceSpotR string
	spotLifecycle bool // instances say they are spot
	// stateReason is the StateReason code of an instance that stopped or
	// terminated.
	stateReason string
	// tagged answers a DescribeInstances by tag filter (no ids): the live
	// instances carrying the build id, from the n-th such call on.
	tagged      []string
	taggedFrom  int
	taggedCalls int
	fleets      []types.FleetData
	// Answers of a search by tag-key (stepLeftovers).
	leftInstances []types.Instance
	groups        []types.SecurityGroup
	templates     []types.LaunchTemplate
	// spotPrices, when set, are the current spot prices: type -> zone -> price.
	spotPrices map[string]map[string]string
	// vpcCIDR is the default VPC's CIDR block; empty means 172.31.0.0/16.
	vpcCIDR string
}

func newFakeEC2() *fakeEC2 {
	return &fakeEC2{
		regions: []string{"us-east-1", "us-east-2", "eu-west-1"},
		zones:   []string{"us-east-2a", "us-east-2b", "us-east-2c"},
		typeArch: map[string]string{
			"c7g.2xlarge": "arm64", "m7g.2xlarge": "arm64", "c6g.2xlarge": "arm64",
			"m6g.2xlarge": "arm64", "c8g.2xlarge": "arm64", "m8g.2xlarge": "arm64",
			"m5.large": "x86_64", "t4g.small": "arm64",
		},
		offerings: map[string][]string{
			"us-east-2a": {"c7g.2xlarge", "m7g.2xlarge", "c6g.2xlarge", "m6g.2xlarge", "t4g.small"},
			"us-east-2b": {"c7g.2xlarge", "m7g.2xlarge", "c6g.2xlarge", "m6g.2xlarge", "t4g.small"},
			"us-east-2c": {"c7g.2xlarge", "m6g.2xlarge"},
		},
		images: map[string]types.Image{
			"ami-0123456789abcdef0": {ImageId: aws.String("ami-0123456789abcdef0"), Architecture: types.ArchitectureValuesArm64, RootDeviceName: aws.String("/dev/xvda"), State: types.ImageStateAvailable},
			"ami-00000000000000086": {ImageId: aws.String("ami-00000000000000086"), Architecture: types.ArchitectureValuesX8664, RootDeviceName: aws.String("/dev/xvda"), State: types.ImageStateAvailable},
		},
		defaultVpc: "vpc-0123456789abcdef0",
		subnets: []types.Subnet{
			{SubnetId: aws.String("subnet-aaaaaaaa"), VpcId: aws.String("vpc-0123456789abcdef0"), AvailabilityZone: aws.String("us-east-2a"), DefaultForAz: aws.Bool(true), State: types.SubnetStateAvailable},
			{SubnetId: aws.String("subnet-bbbbbbbb"), VpcId: aws.String("vpc-0123456789abcdef0"), AvailabilityZone: aws.String("us-east-2b"), DefaultForAz: aws.Bool(true), State: types.SubnetStateAvailable},
			{SubnetId: aws.String("subnet-cccccccc"), VpcId: aws.String("vpc-0123456789abcdef0"), AvailabilityZone: aws.String("us-east-2c"), DefaultForAz: aws.Bool(true), State: types.SubnetStateAvailable},
		},
		publicIP: "198.51.100.7",
	}
}

func apiErr(code, msg string) error {
	return &smithy.GenericAPIError{Code: code, Message: msg}
}

func (f *fakeEC2) record(name string, in interface{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name)
	f.inputs = append(f.inputs, in)
}

func (f *fakeEC2) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// inputsOf returns the recorded inputs of one action.
func inputsOf[T any](f *fakeEC2, name string) []T {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []T
	for i, c := range f.calls {
		if c == name {
			out = append(out, f.inputs[i].(T))
		}
	}
	return out
}

func (f *fakeEC2) count(name string) int {
	n := 0
	for _, c := range f.Calls() {
		if c == name {
			n++
		}
	}
	return n
}

func filterValues(filters []types.Filter, name string) []string {
	for _, fl := range filters {
		if aws.ToString(fl.Name) == name {
			return fl.Values
		}
	}
	return nil
}

func (f *fakeEC2) DescribeRegions(_ context.Context, in *ec2.DescribeRegionsInput, _ ...func(*ec2.Options)) (*ec2.DescribeRegionsOutput, error) {
	f.record("DescribeRegions", in)
	if f.regionsErr != nil {
		return nil, f.regionsErr
	}
	out := &ec2.DescribeRegionsOutput{}
	for _, r := range f.regions {
		out.Regions = append(out.Regions, types.Region{RegionName: aws.String(r), OptInStatus: aws.String("opt-in-not-required")})
	}
	return out, nil
}

func (f *fakeEC2) DescribeAvailabilityZones(_ context.Context, in *ec2.DescribeAvailabilityZonesInput, _ ...func(*ec2.Options)) (*ec2.DescribeAvailabilityZonesOutput, error) {
	f.record("DescribeAvailabilityZones", in)
	out := &ec2.DescribeAvailabilityZonesOutput{}
	for _, z := range f.zones {
		out.AvailabilityZones = append(out.AvailabilityZones, types.AvailabilityZone{ZoneName: aws.String(z), State: types.AvailabilityZoneStateAvailable})
	}
	return out, nil
}

func (f *fakeEC2) DescribeInstanceTypes(_ context.Context, in *ec2.DescribeInstanceTypesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstanceTypesOutput, error) {
	f.record("DescribeInstanceTypes", in)
	out := &ec2.DescribeInstanceTypesOutput{}
	var unknown []string
	for _, t := range in.InstanceTypes {
		arch, ok := f.typeArch[string(t)]
		if !ok {
			unknown = append(unknown, string(t))
			continue
		}
		out.InstanceTypes = append(out.InstanceTypes, types.InstanceTypeInfo{
			InstanceType:  t,
			ProcessorInfo: &types.ProcessorInfo{SupportedArchitectures: []types.ArchitectureType{types.ArchitectureType(arch)}},
		})
	}
	if len(unknown) > 0 {
		return nil, apiErr("InvalidInstanceType", fmt.Sprintf("The following supplied instance types do not exist: [%s]", strings.Join(unknown, ", ")))
	}
	return out, nil
}

func (f *fakeEC2) DescribeInstanceTypeOfferings(_ context.Context, in *ec2.DescribeInstanceTypeOfferingsInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstanceTypeOfferingsOutput, error) {
	f.record("DescribeInstanceTypeOfferings", in)
	want := map[string]bool{}
	for _, t := range filterValues(in.Filters, "instance-type") {
		want[t] = true
	}
	locs := filterValues(in.Filters, "location")
	out := &ec2.DescribeInstanceTypeOfferingsOutput{}
	add := func(loc string, ts []string) {
		for _, t := range ts {
			if want[t] {
				out.InstanceTypeOfferings = append(out.InstanceTypeOfferings, types.InstanceTypeOffering{InstanceType: types.InstanceType(t), Location: aws.String(loc), LocationType: in.LocationType})
			}
		}
	}
	if in.LocationType == types.LocationTypeRegion {
		union := map[string]bool{}
		for _, ts := range f.offerings {
			for _, t := range ts {
				union[t] = true
			}
		}
		var ts []string
		for t := range union {
			ts = append(ts, t)
		}
		for _, l := range locs {
			if l == "us-east-2" {
				add(l, ts)
			}
		}
		return out, nil
	}
	for z, ts := range f.offerings {
		if len(locs) == 0 || slices.Contains(locs, z) {
			add(z, ts)
		}
	}
	return out, nil
}

func (f *fakeEC2) DescribeImages(_ context.Context, in *ec2.DescribeImagesInput, _ ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	f.record("DescribeImages", in)
	out := &ec2.DescribeImagesOutput{}
	for _, id := range in.ImageIds {
		img, ok := f.images[id]
		if !ok {
			return nil, apiErr("InvalidAMIID.NotFound", fmt.Sprintf("The image id '[%s]' does not exist", id))
		}
		out.Images = append(out.Images, img)
	}
	return out, nil
}

func (f *fakeEC2) DescribeVpcs(_ context.Context, in *ec2.DescribeVpcsInput, _ ...func(*ec2.Options)) (*ec2.DescribeVpcsOutput, error) {
	f.record("DescribeVpcs", in)
	out := &ec2.DescribeVpcsOutput{}
	if len(in.VpcIds) > 0 {
		for _, id := range in.VpcIds {
			if id != f.defaultVpc {
				return nil, apiErr("InvalidVpcID.NotFound", "The vpc ID '"+id+"' does not exist")
			}
			cidr := f.vpcCIDR
			if cidr == "" {
				cidr = "172.31.0.0/16"
			}
			out.Vpcs = append(out.Vpcs, types.Vpc{VpcId: aws.String(id), IsDefault: aws.Bool(true), CidrBlock: aws.String(cidr)})
		}
		return out, nil
	}
	if f.defaultVpc != "" {
		out.Vpcs = append(out.Vpcs, types.Vpc{VpcId: aws.String(f.defaultVpc), IsDefault: aws.Bool(true)})
	}
	return out, nil
}

func (f *fakeEC2) DescribeSubnets(_ context.Context, in *ec2.DescribeSubnetsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error) {
	f.record("DescribeSubnets", in)
	out := &ec2.DescribeSubnetsOutput{}
	for _, s := range f.subnets {
		if len(in.SubnetIds) > 0 && !slices.Contains(in.SubnetIds, aws.ToString(s.SubnetId)) {
			continue
		}
		if v := filterValues(in.Filters, "vpc-id"); v != nil && !slices.Contains(v, aws.ToString(s.VpcId)) {
			continue
		}
		if v := filterValues(in.Filters, "availability-zone"); v != nil && !slices.Contains(v, aws.ToString(s.AvailabilityZone)) {
			continue
		}
		if v := filterValues(in.Filters, "default-for-az"); v != nil && !aws.ToBool(s.DefaultForAz) {
			continue
		}
		out.Subnets = append(out.Subnets, s)
	}
	if len(in.SubnetIds) > 0 && len(out.Subnets) == 0 {
		return nil, apiErr("InvalidSubnetID.NotFound", "The subnet ID does not exist")
	}
	return out, nil
}

func (f *fakeEC2) DescribeSpotPriceHistory(_ context.Context, in *ec2.DescribeSpotPriceHistoryInput, _ ...func(*ec2.Options)) (*ec2.DescribeSpotPriceHistoryOutput, error) {
	f.record("DescribeSpotPriceHistory", in)
	if f.spotPrices != nil {
		var out []types.SpotPrice
		for _, t := range in.InstanceTypes {
			for zone, price := range f.spotPrices[string(t)] {
				if in.AvailabilityZone == nil || *in.AvailabilityZone == zone {
					out = append(out, types.SpotPrice{SpotPrice: aws.String(price), InstanceType: t, AvailabilityZone: aws.String(zone)})
				}
			}
		}
		return &ec2.DescribeSpotPriceHistoryOutput{SpotPriceHistory: out}, nil
	}
	return &ec2.DescribeSpotPriceHistoryOutput{SpotPriceHistory: []types.SpotPrice{{SpotPrice: aws.String("0.0812"), InstanceType: in.InstanceTypes[0], AvailabilityZone: in.AvailabilityZone}}}, nil
}

func (f *fakeEC2) CreateSecurityGroup(_ context.Context, in *ec2.CreateSecurityGroupInput, _ ...func(*ec2.Options)) (*ec2.CreateSecurityGroupOutput, error) {
	f.record("CreateSecurityGroup", in)
	if f.createSGErr != nil {
		return nil, f.createSGErr
	}
	return &ec2.CreateSecurityGroupOutput{GroupId: aws.String("sg-0123456789abcdef0")}, nil
}

func (f *fakeEC2) AuthorizeSecurityGroupIngress(_ context.Context, in *ec2.AuthorizeSecurityGroupIngressInput, _ ...func(*ec2.Options)) (*ec2.AuthorizeSecurityGroupIngressOutput, error) {
	f.record("AuthorizeSecurityGroupIngress", in)
	return &ec2.AuthorizeSecurityGroupIngressOutput{}, nil
}

func (f *fakeEC2) DeleteSecurityGroup(_ context.Context, in *ec2.DeleteSecurityGroupInput, _ ...func(*ec2.Options)) (*ec2.DeleteSecurityGroupOutput, error) {
	f.record("DeleteSecurityGroup", in)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.deleteSGErrs) > 0 {
		err := f.deleteSGErrs[0]
		f.deleteSGErrs = f.deleteSGErrs[1:]
		return nil, err
	}
	return &ec2.DeleteSecurityGroupOutput{}, nil
}

func (f *fakeEC2) CreateLaunchTemplate(_ context.Context, in *ec2.CreateLaunchTemplateInput, _ ...func(*ec2.Options)) (*ec2.CreateLaunchTemplateOutput, error) {
	f.record("CreateLaunchTemplate", in)
	return &ec2.CreateLaunchTemplateOutput{LaunchTemplate: &types.LaunchTemplate{LaunchTemplateId: aws.String("lt-0123456789abcdef0")}}, nil
}

func (f *fakeEC2) DeleteLaunchTemplate(_ context.Context, in *ec2.DeleteLaunchTemplateInput, _ ...func(*ec2.Options)) (*ec2.DeleteLaunchTemplateOutput, error) {
	f.record("DeleteLaunchTemplate", in)
	return &ec2.DeleteLaunchTemplateOutput{}, nil
}

// launched answers a CreateFleet with one instance in the first override.
func launched(in *ec2.CreateFleetInput, id string) *ec2.CreateFleetOutput {
	o := in.LaunchTemplateConfigs[0].Overrides[0]
	lc := types.InstanceLifecycleSpot
	if in.TargetCapacitySpecification.DefaultTargetCapacityType == types.DefaultTargetCapacityTypeOnDemand {
		lc = types.InstanceLifecycleOnDemand
	}
	return &ec2.CreateFleetOutput{
		FleetId: aws.String("fleet-" + id),
		Instances: []types.CreateFleetInstance{{
			InstanceIds:  []string{id},
			InstanceType: o.InstanceType,
			Lifecycle:    lc,
			LaunchTemplateAndOverrides: &types.LaunchTemplateAndOverridesResponse{Overrides: &types.FleetLaunchTemplateOverrides{
				InstanceType: o.InstanceType, SubnetId: o.SubnetId,
			}},
		}},
	}
}

func (f *fakeEC2) CreateFleet(_ context.Context, in *ec2.CreateFleetInput, _ ...func(*ec2.Options)) (*ec2.CreateFleetOutput, error) {
	f.record("CreateFleet", in)
	f.mu.Lock()
	f.fleetCalls++
	n := f.fleetCalls
	f.mu.Unlock()
	if f.createFleet != nil {
		return f.createFleet(n, in)
	}
	return launched(in, "i-0123456789abcdef0"), nil
}

func (f *fakeEC2) DescribeFleets(_ context.Context, in *ec2.DescribeFleetsInput, _ ...func(*ec2.Options)) (*ec2.DescribeFleetsOutput, error) {
	f.record("DescribeFleets", in)
	f.mu.Lock()
	defer f.mu.Unlock()
	return &ec2.DescribeFleetsOutput{Fleets: append([]types.FleetData(nil), f.fleets...)}, nil
}

func (f *fakeEC2) DescribeSecurityGroups(_ context.Context, in *ec2.DescribeSecurityGroupsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupsOutput, error) {
	f.record("DescribeSecurityGroups", in)
	return &ec2.DescribeSecurityGroupsOutput{SecurityGroups: f.groups}, nil
}

func (f *fakeEC2) DescribeLaunchTemplates(_ context.Context, in *ec2.DescribeLaunchTemplatesInput, _ ...func(*ec2.Options)) (*ec2.DescribeLaunchTemplatesOutput, error) {
	f.record("DescribeLaunchTemplates", in)
	return &ec2.DescribeLaunchTemplatesOutput{LaunchTemplates: f.templates}, nil
}

func (f *fakeEC2) DeleteFleets(_ context.Context, in *ec2.DeleteFleetsInput, _ ...func(*ec2.Options)) (*ec2.DeleteFleetsOutput, error) {
	f.record("DeleteFleets", in)
	return &ec2.DeleteFleetsOutput{}, nil
}

func (f *fakeEC2) DescribeSpotInstanceRequests(_ context.Context, in *ec2.DescribeSpotInstanceRequestsInput, _ ...func(*ec2.Options)) (*ec2.DescribeSpotInstanceRequestsOutput, error) {
	f.record("DescribeSpotInstanceRequests", in)
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &ec2.DescribeSpotInstanceRequestsOutput{SpotInstanceRequests: append([]types.SpotInstanceRequest(nil), f.spotRequests...)}
	if f.spotStatus != "" {
		out.SpotInstanceRequests = []types.SpotInstanceRequest{{SpotInstanceRequestId: aws.String(f.instanceSpotR), State: types.SpotInstanceStateActive, Status: &types.SpotInstanceStatus{Code: aws.String(f.spotStatus)}}}
	}
	return out, nil
}

func (f *fakeEC2) DescribeInstances(_ context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	f.record("DescribeInstances", in)
	f.mu.Lock()
	f.describeN++
	n := f.describeN
	f.mu.Unlock()
	out := &ec2.DescribeInstancesOutput{}
	var insts []types.Instance
	ids := in.InstanceIds
	if filterValues(in.Filters, "tag-key") != nil {
		return &ec2.DescribeInstancesOutput{Reservations: []types.Reservation{{Instances: f.leftInstances}}}, nil
	}
	if len(ids) == 0 && len(in.Filters) > 0 {
		f.mu.Lock()
		f.taggedCalls++
		if f.taggedCalls >= f.taggedFrom {
			ids = f.tagged
		}
		f.mu.Unlock()
	}
	for _, id := range ids {
		st := types.InstanceStateNameRunning
		if f.instanceState != nil {
			st = f.instanceState(n, id)
		}
		inst := types.Instance{
			InstanceId:       aws.String(id),
			InstanceType:     types.InstanceTypeC7g2xlarge,
			State:            &types.InstanceState{Name: st},
			Placement:        &types.Placement{AvailabilityZone: aws.String("us-east-2a")},
			PublicIpAddress:  aws.String("203.0.113.10"),
			PrivateIpAddress: aws.String("172.31.0.10"),
			PublicDnsName:    aws.String("ec2-203-0-113-10.compute.amazonaws.com"),
		}
		if f.instanceSpotR != "" {
			inst.SpotInstanceRequestId = aws.String(f.instanceSpotR)
		}
		if f.stateReason != "" && st != types.InstanceStateNameRunning && st != types.InstanceStateNamePending {
			inst.StateReason = &types.StateReason{Code: aws.String(f.stateReason), Message: aws.String(f.stateReason + ": injected")}
		}
		if f.spotLifecycle || f.instanceSpotR != "" {
			inst.InstanceLifecycle = types.InstanceLifecycleTypeSpot
		}
		insts = append(insts, inst)
	}
	out.Reservations = []types.Reservation{{Instances: insts}}
	return out, nil
}

func (f *fakeEC2) TerminateInstances(_ context.Context, in *ec2.TerminateInstancesInput, _ ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error) {
	f.record("TerminateInstances", in)
	return &ec2.TerminateInstancesOutput{}, nil
}

// testUI records what the steps tell the user.
type testUI struct {
	packersdk.Ui
	mu  sync.Mutex
	out bytes.Buffer
}

func newTestUI() *testUI {
	u := &testUI{}
	u.Ui = &packersdk.BasicUi{Reader: strings.NewReader(""), Writer: &lockedWriter{u: u}, ErrorWriter: &lockedWriter{u: u}}
	return u
}

type lockedWriter struct{ u *testUI }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.u.mu.Lock()
	defer w.u.mu.Unlock()
	return w.u.out.Write(p)
}

// answer makes Ask (-on-error=ask, -debug) read these lines, as from a
// terminal.
func (u *testUI) answer(lines string) {
	u.Ui.(*packersdk.BasicUi).TTY = &scriptedTTY{r: bufio.NewReader(strings.NewReader(lines))}
}

// scriptedTTY is a terminal the user types lines into.
type scriptedTTY struct{ r *bufio.Reader }

func (t *scriptedTTY) ReadString() (string, error) { return t.r.ReadString('\n') }
func (t *scriptedTTY) Close() error                { return nil }

func (u *testUI) String() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.out.String()
}

// testConfig is a prepared configuration with tiny poll intervals.
func testConfig(t *testing.T, extra map[string]interface{}) *Config {
	t.Helper()
	raw := map[string]interface{}{
		"region":           "us-east-2",
		"output_directory": t.TempDir() + "/out",
		"poll_interval":    "1ms",
		"state_timeout":    "2s",
		"ssh_source_cidrs": []string{"198.51.100.7/32"},
		// No channel server answers (port 1 refuses): a warning, and the
		// build uses channel:NAME.
		"nixpkgs_channels_url": "http://127.0.0.1:1",
	}
	for k, v := range extra {
		raw[k] = v
	}
	var c Config
	if _, err := c.Prepare(raw); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	return &c
}

func testState(cfg *Config, client awscommon.EC2API) (*multistep.BasicStateBag, *testUI) {
	ui := newTestUI()
	state := new(multistep.BasicStateBag)
	state.Put(stateConfig, cfg)
	state.Put(stateUI, packersdk.Ui(ui))
	state.Put(stateEC2, client)
	state.Put(stateBuildID, "0190b1a2-test-build-id")
	return state, ui
}

func stateErr(state multistep.StateBag) error {
	if e, ok := state.GetOk("error"); ok {
		return e.(error)
	}
	if e, ok := state.GetOk(stateInterrupted); ok {
		return e.(error)
	}
	return nil
}

// mutating reports calls that change something in AWS.
func mutating(calls []string) []string {
	var m []string
	for _, c := range calls {
		if !strings.HasPrefix(c, "Describe") {
			m = append(m, c)
		}
	}
	return m
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
