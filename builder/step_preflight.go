package builder

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
)

// stepPreflight checks, before anything is created, that the credentials
// work and that every name in the configuration exists in the region: a
// mistake costs one Describe call instead of a half-made build to clean up.
// It makes only Describe* calls.
type stepPreflight struct{}

func (s *stepPreflight) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	clockOf(state).enter(phasePreflight)
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	if src := e.cfg.RegionSource(); src != "" {
		e.ui.Say(fmt.Sprintf("Using region %s (region is not set; taken from %s)", e.cfg.Region, src))
	}
	// The channel first: a mistake there is found without AWS, and the
	// release is fixed before the instance is paid for.
	if err := e.cfg.PinNixpkgs(ctx, e.ui); err != nil {
		return halt(state, err)
	}
	e.ui.Say("Checking the AWS credentials and the configuration against EC2...")
	if err := s.check(ctx, e, state); err != nil {
		return halt(state, err)
	}
	return multistep.ActionContinue
}

func (s *stepPreflight) check(ctx context.Context, e stepEnv, state multistep.StateBag) error {
	cfg := e.cfg
	if err := checkRegion(ctx, e, state); err != nil {
		return err
	}
	if cfg.AvailabilityZone != "" {
		if err := checkZone(ctx, e); err != nil {
			return err
		}
	}
	offered, vcpus, err := checkInstanceTypes(ctx, e)
	if err != nil {
		return err
	}
	state.Put(stateInstanceTypes, offered)
	state.Put(stateVCPUs, vcpus)
	if err := checkSpotPrice(ctx, e, offered); err != nil {
		return err
	}
	if cfg.SourceAMI != "" {
		root, err := checkSourceAMI(ctx, e)
		if err != nil {
			return err
		}
		if root != "" {
			state.Put(stateRootDevice, root)
		}
	}
	return checkNetwork(ctx, e)
}

func checkRegion(ctx context.Context, e stepEnv, state multistep.StateBag) error {
	cfg := e.cfg
	out, err := e.ec2.DescribeRegions(ctx, &ec2.DescribeRegionsInput{AllRegions: aws.Bool(true)})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		code := awscommon.ErrorCode(err)
		var dnsErr *net.DNSError
		switch {
		case awscommon.IsCredentialError(code), awscommon.IsPermissionError(code):
			if err := regionNotEnabled(ctx, e, state, code); err != nil {
				return err
			}
			return fmt.Errorf("AWS rejected the credentials (%v); check your credentials or profile: the profile option or AWS_PROFILE, access_key/secret_key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, and that the key is active and allowed ec2:Describe*", err)
		case errors.As(err, &dnsErr):
			return fmt.Errorf("region: cannot reach EC2 in %q (%v); check the region name (for example \"us-east-2\") or ec2_endpoint", cfg.Region, err)
		case code == "":
			return fmt.Errorf("cannot call EC2 in region %q: %v; check your credentials or profile (profile, AWS_PROFILE, access_key/secret_key) and the network", cfg.Region, err)
		}
		return fmt.Errorf("checking the region with DescribeRegions: %w; check your credentials or profile", err)
	}
	var names []string
	for _, r := range out.Regions {
		name := aws.ToString(r.RegionName)
		if name == cfg.Region {
			if st := aws.ToString(r.OptInStatus); st == "not-opted-in" {
				return fmt.Errorf("region: %q is not enabled for this account; enable it in the AWS console (Account > AWS Regions) or use another region", cfg.Region)
			}
			return nil
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return fmt.Errorf("region: %q is not an EC2 region; use one of: %s", cfg.Region, strings.Join(names, ", "))
}

// regionNotEnabled tells a region not enabled for the account from wrong
// credentials: EC2 in such a region answers AuthFailure (or OptInRequired,
// UnauthorizedOperation) to any call, while STS in the partition's home
// region still knows the credentials. It is nil when they are wrong too, or
// when STS cannot be asked.
func regionNotEnabled(ctx context.Context, e stepEnv, state multistep.StateBag, code string) error {
	caller, ok := state.Get(stateCallerAccount).(func(context.Context) (string, error))
	if !ok || caller == nil || code == "UnrecognizedClientException" || code == "InvalidClientTokenId" || code == "SignatureDoesNotMatch" || code == "ExpiredToken" {
		return nil
	}
	account, err := caller(ctx)
	if err != nil {
		return nil
	}
	region := e.cfg.Region
	home := awscommon.PartitionHomeRegion(awscommon.Partition(region))
	return fmt.Errorf("region: %q is not enabled for account %s: EC2 there answered %s, while STS in %s accepts the same credentials. Enable the region with `aws account enable-region --region-name %s` (or in the console: Account > AWS Regions), wait until `aws account get-region-opt-status --region-name %s` says ENABLED, or choose another region",
		region, account, code, home, region, region)
}

func checkZone(ctx context.Context, e stepEnv) error {
	cfg := e.cfg
	out, err := e.ec2.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{})
	if err != nil {
		return fmt.Errorf("availability_zone: listing the zones of %s failed: %w; check the credentials' ec2:DescribeAvailabilityZones permission", cfg.Region, err)
	}
	var names []string
	for _, z := range out.AvailabilityZones {
		name := aws.ToString(z.ZoneName)
		if name == cfg.AvailabilityZone {
			if z.State != "" && z.State != types.AvailabilityZoneStateAvailable {
				return fmt.Errorf("availability_zone: %q is %s; use another zone or leave availability_zone empty", name, z.State)
			}
			return nil
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return fmt.Errorf("availability_zone: %q is not a zone of region %s; valid: %s, or leave it empty to let EC2 choose", cfg.AvailabilityZone, cfg.Region, strings.Join(names, ", "))
}

// checkInstanceTypes checks that every type exists, is arm64 and is offered
// where the build asks, and returns the types to launch and their vCPUs.
func checkInstanceTypes(ctx context.Context, e stepEnv) ([]string, map[string]int32, error) {
	vcpus, err := checkArchitectures(ctx, e)
	if err != nil {
		return nil, nil, err
	}
	offered, err := offeredTypes(ctx, e)
	return offered, vcpus, err
}

// checkArchitectures checks that every type exists in the region and is
// arm64, and returns their vCPUs.
func checkArchitectures(ctx context.Context, e stepEnv) (map[string]int32, error) {
	cfg := e.cfg
	want := cfg.InstanceTypes
	known := map[string]types.InstanceTypeInfo{}
	in := &ec2.DescribeInstanceTypesInput{}
	for _, t := range want {
		in.InstanceTypes = append(in.InstanceTypes, types.InstanceType(t))
	}
	pages := ec2.NewDescribeInstanceTypesPaginator(e.ec2, in)
	for pages.HasMorePages() {
		out, err := pages.NextPage(ctx)
		if err != nil {
			if awscommon.ErrorCode(err) == "InvalidInstanceType" {
				return nil, fmt.Errorf("instance_types: EC2 in %s does not know some of %s (%v); fix or remove those names, for example use \"c7g.2xlarge\"", cfg.Region, joinQuoted(want), err)
			}
			return nil, fmt.Errorf("instance_types: DescribeInstanceTypes failed: %w; check the credentials' ec2:DescribeInstanceTypes permission and the region", err)
		}
		for _, info := range out.InstanceTypes {
			known[string(info.InstanceType)] = info
		}
	}
	vcpus := map[string]int32{}
	for _, t := range want {
		info, ok := known[t]
		if !ok {
			return nil, fmt.Errorf("instance_types: %q does not exist in region %s; remove it or use a Graviton type such as \"c7g.2xlarge\"", t, cfg.Region)
		}
		var archs []string
		if info.ProcessorInfo != nil {
			for _, a := range info.ProcessorInfo.SupportedArchitectures {
				archs = append(archs, string(a))
			}
		}
		if !slices.Contains(archs, "arm64") {
			return nil, fmt.Errorf("instance_types: %q is %s, not arm64; the build needs a Graviton type, so replace it with one such as %q", t, strings.Join(archs, "/"), graviton(t))
		}
		if info.VCpuInfo != nil {
			vcpus[t] = aws.ToInt32(info.VCpuInfo.DefaultVCpus)
		}
	}
	return vcpus, nil
}

// offeredTypes are the types offered in availability_zone, or the region.
// Default types not offered there are dropped (the defaults are a spread,
// not a demand); a chosen type not offered is an error.
func offeredTypes(ctx context.Context, e stepEnv) ([]string, error) {
	cfg := e.cfg
	want := cfg.InstanceTypes
	location, locType := cfg.Region, types.LocationTypeRegion
	if cfg.AvailabilityZone != "" {
		location, locType = cfg.AvailabilityZone, types.LocationTypeAvailabilityZone
	}
	offered := map[string]bool{}
	offerings := ec2.NewDescribeInstanceTypeOfferingsPaginator(e.ec2, &ec2.DescribeInstanceTypeOfferingsInput{
		LocationType: locType,
		Filters: []types.Filter{
			{Name: aws.String("location"), Values: []string{location}},
			{Name: aws.String("instance-type"), Values: want},
		},
	})
	for offerings.HasMorePages() {
		out, err := offerings.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("instance_types: DescribeInstanceTypeOfferings failed: %w; check the credentials' ec2:DescribeInstanceTypeOfferings permission and the region", err)
		}
		for _, o := range out.InstanceTypeOfferings {
			if aws.ToString(o.Location) == location {
				offered[string(o.InstanceType)] = true
			}
		}
	}
	var keep, missing []string
	for _, t := range want {
		if offered[t] {
			keep = append(keep, t)
		} else {
			missing = append(missing, t)
		}
	}
	where := "region " + location
	if locType == types.LocationTypeAvailabilityZone {
		where = "availability zone " + location
	}
	if len(keep) == 0 {
		return nil, fmt.Errorf("instance_types: none of %s is offered in %s; add types offered there, or choose another availability_zone or region", joinQuoted(want), where)
	}
	if len(missing) > 0 {
		if !slices.Equal(want, DefaultInstanceTypes) {
			return nil, fmt.Errorf("instance_types: %s not offered in %s; remove them, or choose another availability_zone or region", joinQuoted(missing), where)
		}
		e.ui.Say(fmt.Sprintf("Default instance types not offered in %s, skipped: %s", where, strings.Join(missing, ", ")))
	}
	return keep, nil
}

// checkSourceAMI checks source_ami exists and is arm64, and returns its root
// device name.
func checkSourceAMI(ctx context.Context, e stepEnv) (string, error) {
	cfg := e.cfg
	out, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{cfg.SourceAMI}})
	if err != nil {
		switch awscommon.ErrorCode(err) {
		case "InvalidAMIID.NotFound", "InvalidAMIID.Unavailable", "InvalidAMIID.Malformed":
			return "", fmt.Errorf("source_ami: %q does not exist in region %s or is not shared with this account (%v); use an AMI id of this region, or remove source_ami to use the newest Debian AMI", cfg.SourceAMI, cfg.Region, err)
		}
		return "", fmt.Errorf("source_ami: DescribeImages failed: %w; check the credentials' ec2:DescribeImages permission and source_ami", err)
	}
	if len(out.Images) == 0 {
		return "", fmt.Errorf("source_ami: %q does not exist in region %s or is not shared with this account; use an AMI id of this region, or remove source_ami to use the newest Debian AMI", cfg.SourceAMI, cfg.Region)
	}
	img := out.Images[0]
	if img.Architecture != types.ArchitectureValuesArm64 {
		return "", fmt.Errorf("source_ami: %q is %s, not arm64; use an arm64 AMI, or remove source_ami to use the newest Debian arm64 AMI", cfg.SourceAMI, img.Architecture)
	}
	if img.State != "" && img.State != types.ImageStateAvailable {
		return "", fmt.Errorf("source_ami: %q is %s, not available; use another AMI", cfg.SourceAMI, img.State)
	}
	return aws.ToString(img.RootDeviceName), nil
}

func checkNetwork(ctx context.Context, e stepEnv) error {
	cfg := e.cfg
	if cfg.VpcID != "" {
		out, err := e.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{cfg.VpcID}})
		if err != nil || len(out.Vpcs) == 0 {
			if err == nil || awscommon.ErrorCode(err) == "InvalidVpcID.NotFound" {
				return fmt.Errorf("vpc_id: %q does not exist in region %s; use a VPC of this region, or remove vpc_id to use the default VPC", cfg.VpcID, cfg.Region)
			}
			return fmt.Errorf("vpc_id: DescribeVpcs failed: %w; check the credentials' ec2:DescribeVpcs permission and vpc_id", err)
		}
	}
	if cfg.SubnetID != "" {
		out, err := e.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{cfg.SubnetID}})
		if err != nil || len(out.Subnets) == 0 {
			if err == nil || awscommon.ErrorCode(err) == "InvalidSubnetID.NotFound" {
				return fmt.Errorf("subnet_id: %q does not exist in region %s; use a subnet of this region, or remove subnet_id to use the default VPC's subnets", cfg.SubnetID, cfg.Region)
			}
			return fmt.Errorf("subnet_id: DescribeSubnets failed: %w; check the credentials' ec2:DescribeSubnets permission and subnet_id", err)
		}
		sn := out.Subnets[0]
		if cfg.AvailabilityZone != "" && aws.ToString(sn.AvailabilityZone) != cfg.AvailabilityZone {
			return fmt.Errorf("subnet_id: %q is in %s, not in availability_zone %q; use a subnet of that zone, or remove availability_zone", cfg.SubnetID, aws.ToString(sn.AvailabilityZone), cfg.AvailabilityZone)
		}
		if cfg.VpcID != "" && aws.ToString(sn.VpcId) != cfg.VpcID {
			return fmt.Errorf("subnet_id: %q belongs to %s, not to vpc_id %q; remove vpc_id (the subnet decides the VPC) or use a subnet of that VPC", cfg.SubnetID, aws.ToString(sn.VpcId), cfg.VpcID)
		}
	}
	return nil
}

func (s *stepPreflight) Cleanup(state multistep.StateBag) { clockOf(state).enter(phaseCleanup) }

// joinQuoted is the list as "a", "b", "c".
func joinQuoted(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}
