package builder

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepNetwork settles where the instance may run: the VPC (the subnet's,
// vpc_id, or the region's default one) and the (instance type × subnet)
// pools, leaving out pairs whose zone does not offer the type, so a
// multi-type fleet request never fails with "not supported in AZ". It only
// looks; it creates nothing.
type stepNetwork struct{}

// pool is one launch override.
type pool struct {
	instanceType, subnetID, zone string
}

func (s *stepNetwork) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	clockOf(state).enter(phasePreflight)
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	vpcID, isDefault, err := resolveVPC(ctx, e)
	if err != nil {
		return halt(state, err)
	}
	state.Put(stateVpcID, vpcID)
	instanceTypes := getStrings(state, stateInstanceTypes)
	if len(instanceTypes) == 0 {
		instanceTypes = e.cfg.InstanceTypes
	}
	subnets, err := usableSubnets(ctx, e, vpcID, isDefault)
	if err != nil {
		return halt(state, err)
	}
	pools, err := offeredPools(ctx, e, instanceTypes, subnets)
	if err != nil {
		return halt(state, err)
	}
	state.Put(statePools, pools)
	return multistep.ActionContinue
}

func (s *stepNetwork) Cleanup(state multistep.StateBag) { clockOf(state).enter(phaseCleanup) }

// resolveVPC finds the VPC to work in: the subnet's, vpc_id, or the region's
// default VPC, and whether it is the default one.
func resolveVPC(ctx context.Context, e stepEnv) (string, bool, error) {
	cfg := e.cfg
	if cfg.SubnetID != "" {
		out, err := e.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{cfg.SubnetID}})
		if err != nil {
			return "", false, fmt.Errorf("subnet_id: describing %s: %w; check subnet_id and the credentials' ec2:DescribeSubnets permission", cfg.SubnetID, err)
		}
		if len(out.Subnets) == 0 {
			return "", false, fmt.Errorf("subnet_id: %q does not exist in region %s; use a subnet of that region, or remove subnet_id", cfg.SubnetID, cfg.Region)
		}
		return aws.ToString(out.Subnets[0].VpcId), false, nil
	}
	if cfg.VpcID != "" {
		return cfg.VpcID, false, nil
	}
	out, err := e.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{
		Filters: []types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}},
	})
	if err != nil {
		return "", false, fmt.Errorf("finding the default VPC of %s: %w", cfg.Region, err)
	}
	for _, v := range out.Vpcs {
		if aws.ToBool(v.IsDefault) || len(out.Vpcs) == 1 {
			return aws.ToString(v.VpcId), true, nil
		}
	}
	return "", false, fmt.Errorf("region %s has no default VPC; set subnet_id (or vpc_id) to a subnet with internet access, or create a default VPC (aws ec2 create-default-vpc)", cfg.Region)
}

// usableSubnets lists subnet_id, or the VPC's subnets (the default ones in
// the default VPC) in availability_zone or in every zone, keeping those that
// are available and, when SSH goes to a public address, assign one.
func usableSubnets(ctx context.Context, e stepEnv, vpcID string, isDefault bool) ([]types.Subnet, error) {
	cfg := e.cfg
	in := &ec2.DescribeSubnetsInput{}
	if cfg.SubnetID != "" {
		in.SubnetIds = []string{cfg.SubnetID}
	} else {
		in.Filters = []types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpcID}}}
		if isDefault {
			in.Filters = append(in.Filters, types.Filter{Name: aws.String("default-for-az"), Values: []string{"true"}})
		}
		if cfg.AvailabilityZone != "" {
			in.Filters = append(in.Filters, types.Filter{Name: aws.String("availability-zone"), Values: []string{cfg.AvailabilityZone}})
		}
	}
	var subnets []types.Subnet
	pages := ec2.NewDescribeSubnetsPaginator(e.ec2, in)
	for pages.HasMorePages() {
		out, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing subnets: %w", err)
		}
		subnets = append(subnets, out.Subnets...)
	}
	// Without subnet_id the instance gets a public address only from a
	// subnet that assigns one at launch (default subnets do).
	needPublic := cfg.SubnetID == "" && wantsPublicAddress(cfg) && cfg.UserSSHHost() == ""
	usable := slices.DeleteFunc(slices.Clone(subnets), func(sn types.Subnet) bool {
		return (sn.State != "" && sn.State != types.SubnetStateAvailable) ||
			(needPublic && sn.MapPublicIpOnLaunch != nil && !*sn.MapPublicIpOnLaunch)
	})
	if len(usable) > 0 {
		return usable, nil
	}
	where := "the VPC " + vpcID
	if cfg.AvailabilityZone != "" {
		where += " in " + cfg.AvailabilityZone
	}
	if needPublic && len(subnets) > 0 {
		return nil, fmt.Errorf("no subnet of %s assigns public addresses at launch; set subnet_id (the builder then asks for a public address itself), or ssh_interface = \"private_ip\" when this machine is inside the VPC", where)
	}
	return nil, fmt.Errorf("no usable subnet in %s; set subnet_id to a subnet with internet access, or choose another availability_zone", where)
}

// offeredPools pairs every instance type with every subnet whose zone offers
// it.
func offeredPools(ctx context.Context, e stepEnv, instanceTypes []string, subnets []types.Subnet) ([]pool, error) {
	offered := map[string]map[string]bool{} // zone -> type -> offered
	pages := ec2.NewDescribeInstanceTypeOfferingsPaginator(e.ec2, &ec2.DescribeInstanceTypeOfferingsInput{
		LocationType: types.LocationTypeAvailabilityZone,
		Filters:      []types.Filter{{Name: aws.String("instance-type"), Values: instanceTypes}},
	})
	for pages.HasMorePages() {
		out, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing which zones offer %s: %w", strings.Join(instanceTypes, ", "), err)
		}
		for _, o := range out.InstanceTypeOfferings {
			z := aws.ToString(o.Location)
			if offered[z] == nil {
				offered[z] = map[string]bool{}
			}
			offered[z][string(o.InstanceType)] = true
		}
	}
	var pools []pool
	for _, t := range instanceTypes {
		for _, sn := range subnets {
			if z := aws.ToString(sn.AvailabilityZone); offered[z][t] {
				pools = append(pools, pool{instanceType: t, subnetID: aws.ToString(sn.SubnetId), zone: z})
			}
		}
	}
	if len(pools) == 0 {
		var zones []string
		for _, sn := range subnets {
			zones = append(zones, aws.ToString(sn.AvailabilityZone))
		}
		return nil, fmt.Errorf("none of the instance types %s is offered in the zones of the usable subnets (%s); add instance_types offered there, or choose another subnet_id or availability_zone", strings.Join(instanceTypes, ", "), strings.Join(dedupe(zones), ", "))
	}
	return pools, nil
}

// wantsPublicAddress reports whether SSH goes to a public address.
func wantsPublicAddress(cfg *Config) bool {
	return cfg.SSHInterface == "public_ip" || cfg.SSHInterface == "public_dns"
}

// describePools is "types in zones" for messages.
func describePools(pools []pool) string {
	t, z := poolSets(pools)
	return fmt.Sprintf("%s in %s", strings.Join(t, ", "), strings.Join(z, ", "))
}

// poolSets are the pools' instance types (in order) and zones (sorted).
func poolSets(pools []pool) (typesList, zones []string) {
	for _, p := range pools {
		typesList = append(typesList, p.instanceType)
		zones = append(zones, cmp.Or(p.zone, p.subnetID))
	}
	zones = dedupe(zones)
	slices.Sort(zones)
	return dedupe(typesList), zones
}

// dedupe keeps the first of each value, in order.
func dedupe(list []string) []string {
	var out []string
	for _, s := range list {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
