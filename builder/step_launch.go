package builder

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// launchAttempts is how many times one lifecycle (spot, then on-demand) is
// tried when EC2 answers with a capacity or price error.
const launchAttempts = 3

// capacityErrorCodes are the answers that mean "no capacity at this price
// right now" rather than a mistake: worth a retry, then another lifecycle.
var capacityErrorCodes = []string{
	"InsufficientInstanceCapacity", "InsufficientCapacity", "InsufficientHostCapacity",
	"SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded", "UnfulfillableCapacity",
	"InsufficientFreeAddressesInSubnet", "InsufficientReservedInstanceCapacity",
	"capacity-not-available", "price-too-low",
}

func isCapacityError(code, message string) bool {
	if slices.Contains(capacityErrorCodes, code) {
		return true
	}
	m := strings.ToLower(message)
	return strings.Contains(m, "not supported in") || strings.Contains(m, "insufficient capacity") ||
		strings.Contains(m, "no spot capacity")
}

// errNoCapacity is a launch attempt that failed for capacity or price.
type errNoCapacity struct{ detail string }

func (e *errNoCapacity) Error() string { return e.detail }

// stepLaunch launches the instance through an EC2 Fleet of type instant with
// a temporary launch template: one request covers every (instance type ×
// subnet) pool, so EC2 itself picks the pool with capacity, and a refusal
// means every pool was tried. Pairs whose zone does not offer the type are
// left out, so a multi-type request never fails with "not supported in AZ".
type stepLaunch struct{}

// pool is one launch override.
type pool struct {
	instanceType, subnetID, zone string
}

func (s *stepLaunch) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	started := time.Now()
	if err := s.launch(ctx, e, state); err != nil {
		return halt(state, err)
	}
	recordTiming(state, "launch", time.Since(started))
	return multistep.ActionContinue
}

func (s *stepLaunch) launch(ctx context.Context, e stepEnv, state multistep.StateBag) error {
	cfg := e.cfg
	buildID := getString(state, stateBuildID)
	ami := getString(state, stateSourceAMI)
	if ami == "" {
		return errors.New("internal error: no source AMI in the build state")
	}
	groupID := getString(state, stateSecurityGroupID)
	instanceTypes := getStrings(state, stateInstanceTypes)
	if len(instanceTypes) == 0 {
		instanceTypes = cfg.InstanceTypes
	}

	pools, err := s.pools(ctx, e, state, instanceTypes)
	if err != nil {
		return err
	}

	rootDevice := getString(state, stateRootDevice)
	if rootDevice == "" {
		out, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{ami}})
		if err != nil {
			return fmt.Errorf("describing source AMI %s: %w", ami, err)
		}
		if len(out.Images) == 0 {
			return fmt.Errorf("source AMI %s does not exist in %s; set source_ami to an arm64 AMI of this region", ami, cfg.Region)
		}
		rootDevice = aws.ToString(out.Images[0].RootDeviceName)
		if rootDevice == "" {
			rootDevice = "/dev/xvda"
		}
	}

	userData, err := userData(getString(state, statePublicKey), cfg.InstanceMaxLifetimeDuration())
	if err != nil {
		return err
	}
	ltName := fmt.Sprintf("packer-nixos-sd-%s", buildID)
	runTags := resourceTags(cfg, buildID, cfg.RunTags)
	data := &types.RequestLaunchTemplateData{
		ImageId:  aws.String(ami),
		UserData: aws.String(userData),
		// A shutdown from inside (the lifetime cap, or anything else) ends the
		// instance and its volume instead of leaving a stopped instance.
		InstanceInitiatedShutdownBehavior: types.ShutdownBehaviorTerminate,
		MetadataOptions: &types.LaunchTemplateInstanceMetadataOptionsRequest{
			HttpEndpoint:            types.LaunchTemplateInstanceMetadataEndpointStateEnabled,
			HttpTokens:              types.LaunchTemplateHttpTokensStateRequired,
			HttpPutResponseHopLimit: aws.Int32(1),
		},
		BlockDeviceMappings: []types.LaunchTemplateBlockDeviceMappingRequest{{
			DeviceName: aws.String(rootDevice),
			Ebs: &types.LaunchTemplateEbsBlockDeviceRequest{
				VolumeType:          types.VolumeTypeGp3,
				VolumeSize:          aws.Int32(cfg.VolumeSize),
				Encrypted:           aws.Bool(true),
				DeleteOnTermination: aws.Bool(true),
			},
		}},
		TagSpecifications: []types.LaunchTemplateTagSpecificationRequest{
			{ResourceType: types.ResourceTypeInstance, Tags: runTags},
			{ResourceType: types.ResourceTypeVolume, Tags: runTags},
		},
	}
	if cfg.SubnetID != "" {
		// A chosen subnet may not give public addresses by default: ask for
		// one on the primary interface, which then carries the subnet and the
		// group. The overrides then name no subnet: EC2 refuses an
		// instance-level subnet next to a network interface.
		ni := types.LaunchTemplateInstanceNetworkInterfaceSpecificationRequest{
			DeviceIndex:              aws.Int32(0),
			SubnetId:                 aws.String(cfg.SubnetID),
			AssociatePublicIpAddress: aws.Bool(wantsPublicAddress(cfg)),
			DeleteOnTermination:      aws.Bool(true),
		}
		if groupID != "" {
			ni.Groups = []string{groupID}
		}
		data.NetworkInterfaces = []types.LaunchTemplateInstanceNetworkInterfaceSpecificationRequest{ni}
	} else if groupID != "" {
		data.SecurityGroupIds = []string{groupID}
	}

	e.ui.Say("Creating temporary launch template " + ltName + "...")
	lt, err := e.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String(ltName),
		LaunchTemplateData: data,
		VersionDescription: aws.String("packer-nixos-sd build " + buildID),
		TagSpecifications:  []types.TagSpecification{tagSpec(types.ResourceTypeLaunchTemplate, resourceTags(cfg, buildID, nil))},
	})
	if err != nil {
		return fmt.Errorf("creating the launch template: %w", err)
	}
	if lt.LaunchTemplate == nil || aws.ToString(lt.LaunchTemplate.LaunchTemplateId) == "" {
		return errors.New("creating the launch template: EC2 returned no launch template id")
	}
	ltID := aws.ToString(lt.LaunchTemplate.LaunchTemplateId)
	state.Put(stateLaunchTemplate, ltID)

	lifecycles := []types.DefaultTargetCapacityType{types.DefaultTargetCapacityTypeSpot}
	if cfg.OnDemandFallback {
		lifecycles = append(lifecycles, types.DefaultTargetCapacityTypeOnDemand)
	}
	var last error
	attempt := 0
	for li, lifecycle := range lifecycles {
		if li > 0 {
			e.ui.Say("No spot capacity in any pool; falling back to on-demand (on_demand_fallback = true)...")
		}
		wait := cfg.PollIntervalDuration()
		for i := 0; i < launchAttempts; i++ {
			attempt++
			if i > 0 {
				e.ui.Say(fmt.Sprintf("No %s capacity (%v); trying again in %s...", lifecycle, last, wait))
				if err := sleep(ctx, wait); err != nil {
					return err
				}
				wait *= 2
			} else {
				e.ui.Say(fmt.Sprintf("Requesting one %s instance from %d pools (%s)...", lifecycle, len(pools), describePools(pools)))
			}
			err := s.createFleet(ctx, e, state, ltID, pools, lifecycle, buildID, attempt)
			if err == nil {
				return nil
			}
			var nc *errNoCapacity
			if !errors.As(err, &nc) {
				return err
			}
			last = err
		}
	}
	typesTried, zonesTried := poolSets(pools)
	msg := fmt.Sprintf("no spot capacity for %s in %s after %d attempts (last: %v); add more instance_types, try another availability_zone or region, or set on_demand_fallback = true",
		strings.Join(typesTried, ", "), strings.Join(zonesTried, ", "), attempt, last)
	if cfg.OnDemandFallback {
		msg = fmt.Sprintf("no spot or on-demand capacity for %s in %s after %d attempts (last: %v); add more instance_types, or try another availability_zone or region",
			strings.Join(typesTried, ", "), strings.Join(zonesTried, ", "), attempt, last)
	}
	return errors.New(msg)
}

// createFleet makes one instant fleet request. It returns *errNoCapacity
// when EC2 had no capacity in any pool.
func (s *stepLaunch) createFleet(ctx context.Context, e stepEnv, state multistep.StateBag, ltID string, pools []pool, lifecycle types.DefaultTargetCapacityType, buildID string, attempt int) error {
	cfg := e.cfg
	spot := lifecycle == types.DefaultTargetCapacityTypeSpot
	var overrides []types.FleetLaunchTemplateOverridesRequest
	for _, p := range pools {
		o := types.FleetLaunchTemplateOverridesRequest{InstanceType: types.InstanceType(p.instanceType)}
		if cfg.SubnetID != "" {
			// The launch template's network interface names the subnet.
		} else if p.subnetID != "" {
			o.SubnetId = aws.String(p.subnetID)
		} else if p.zone != "" {
			o.AvailabilityZone = aws.String(p.zone)
		}
		if spot && cfg.SpotPrice != "auto" {
			o.MaxPrice = aws.String(cfg.SpotPrice)
		}
		overrides = append(overrides, o)
	}
	capacity := &types.TargetCapacitySpecificationRequest{
		TotalTargetCapacity:       aws.Int32(1),
		DefaultTargetCapacityType: lifecycle,
	}
	if spot {
		capacity.SpotTargetCapacity = aws.Int32(1)
	} else {
		capacity.OnDemandTargetCapacity = aws.Int32(1)
	}
	in := &ec2.CreateFleetInput{
		Type: types.FleetTypeInstant,
		// The same token makes an SDK-level retry of this very request safe.
		ClientToken: aws.String(fmt.Sprintf("%s-%d", buildID, attempt)),
		LaunchTemplateConfigs: []types.FleetLaunchTemplateConfigRequest{{
			LaunchTemplateSpecification: &types.FleetLaunchTemplateSpecificationRequest{
				LaunchTemplateId: aws.String(ltID),
				Version:          aws.String("$Latest"),
			},
			Overrides: overrides,
		}},
		TargetCapacitySpecification: capacity,
		TagSpecifications:           []types.TagSpecification{tagSpec(types.ResourceTypeFleet, resourceTags(cfg, buildID, nil))},
	}
	if spot {
		in.SpotOptions = &types.SpotOptionsRequest{AllocationStrategy: types.SpotAllocationStrategy(cfg.SpotAllocationStrategy)}
		if cfg.SpotPrice != "auto" {
			// "auto" leaves the price unset: AWS then caps it at the on-demand price.
			in.SpotOptions.MaxTotalPrice = aws.String(cfg.SpotPrice)
		}
	} else {
		in.OnDemandOptions = &types.OnDemandOptionsRequest{AllocationStrategy: types.FleetOnDemandAllocationStrategyLowestPrice}
	}

	out, err := e.ec2.CreateFleet(ctx, in)
	if err != nil {
		// Never read out here: the SDK returns nil output with an error.
		code := apiErrorCode(err)
		if isCapacityError(code, err.Error()) {
			return &errNoCapacity{detail: err.Error()}
		}
		return fmt.Errorf("requesting the instance (CreateFleet): %w", err)
	}
	if out == nil {
		return errors.New("requesting the instance (CreateFleet): EC2 returned no answer")
	}
	if id := aws.ToString(out.FleetId); id != "" {
		appendString(state, stateFleetIDs, id)
	}
	var launched []types.CreateFleetInstance
	for _, fi := range out.Instances {
		if len(fi.InstanceIds) > 0 {
			launched = append(launched, fi)
			for _, id := range fi.InstanceIds {
				appendString(state, stateInstanceIDs, id)
			}
		}
	}
	if len(launched) == 0 {
		if len(out.Errors) == 0 {
			return &errNoCapacity{detail: "EC2 launched no instance and gave no reason"}
		}
		var details []string
		allCapacity := true
		for _, fe := range out.Errors {
			code, msg := aws.ToString(fe.ErrorCode), aws.ToString(fe.ErrorMessage)
			if !isCapacityError(code, msg) {
				allCapacity = false
			}
			where := ""
			if lo := fe.LaunchTemplateAndOverrides; lo != nil && lo.Overrides != nil {
				where = fmt.Sprintf(" [%s %s]", lo.Overrides.InstanceType, firstNonEmpty(aws.ToString(lo.Overrides.AvailabilityZone), aws.ToString(lo.Overrides.SubnetId)))
			}
			details = append(details, fmt.Sprintf("%s: %s%s", code, msg, where))
		}
		details = dedupe(details)
		if allCapacity {
			return &errNoCapacity{detail: strings.Join(details, "; ")}
		}
		return fmt.Errorf("EC2 refused to launch the instance: %s", strings.Join(details, "; "))
	}

	fi := launched[0]
	id := fi.InstanceIds[0]
	itype := string(fi.InstanceType)
	zone, subnet := "", ""
	if lo := fi.LaunchTemplateAndOverrides; lo != nil && lo.Overrides != nil {
		if itype == "" {
			itype = string(lo.Overrides.InstanceType)
		}
		zone = aws.ToString(lo.Overrides.AvailabilityZone)
		subnet = aws.ToString(lo.Overrides.SubnetId)
	}
	if zone == "" && subnet != "" {
		for _, p := range pools {
			if p.subnetID == subnet {
				zone = p.zone
			}
		}
	}
	if _, zones := poolSets(pools); zone == "" && len(zones) == 1 {
		zone = zones[0]
	}
	state.Put(stateInstanceID, id)
	state.Put(stateInstanceType, itype)
	state.Put(stateZone, zone)
	lc := string(fi.Lifecycle)
	if lc == "" {
		lc = string(lifecycle)
	}
	state.Put(stateLifecycle, lc)
	price := "on-demand"
	if lc == string(types.InstanceLifecycleSpot) {
		price = spotPrice(ctx, e, itype, zone)
	}
	state.Put(stateSpotPrice, price)
	e.ui.Say(fmt.Sprintf("Launched %s instance %s (%s in %s, price %s)", lc, id, firstNonEmpty(itype, "?"), firstNonEmpty(zone, "?"), price))
	return nil
}

// spotPrice is the current spot price of the type in the zone, best effort.
func spotPrice(ctx context.Context, e stepEnv, itype, zone string) string {
	if itype == "" {
		return "unknown"
	}
	in := &ec2.DescribeSpotPriceHistoryInput{
		InstanceTypes:       []types.InstanceType{types.InstanceType(itype)},
		ProductDescriptions: []string{"Linux/UNIX"},
		StartTime:           aws.Time(time.Now()),
	}
	if zone != "" {
		in.AvailabilityZone = aws.String(zone)
	}
	out, err := e.ec2.DescribeSpotPriceHistory(ctx, in)
	if err != nil || len(out.SpotPriceHistory) == 0 {
		return "unknown"
	}
	// Prefer the entry of the zone (not every EC2 emulator filters by it).
	for _, p := range out.SpotPriceHistory {
		if zone != "" && aws.ToString(p.AvailabilityZone) == zone && p.InstanceType == types.InstanceType(itype) {
			return aws.ToString(p.SpotPrice)
		}
	}
	return aws.ToString(out.SpotPriceHistory[0].SpotPrice)
}

// pools lists the (instance type × subnet) pairs to offer EC2: subnet_id, or
// the VPC's subnets (the default ones in the default VPC) in
// availability_zone or in every zone, keeping only pairs whose zone offers
// the type.
func (s *stepLaunch) pools(ctx context.Context, e stepEnv, state multistep.StateBag, instanceTypes []string) ([]pool, error) {
	cfg := e.cfg
	in := &ec2.DescribeSubnetsInput{}
	if cfg.SubnetID != "" {
		in.SubnetIds = []string{cfg.SubnetID}
	} else {
		vpcID := getString(state, stateVpcID)
		if vpcID == "" {
			return nil, errors.New("internal error: no VPC in the build state")
		}
		in.Filters = []types.Filter{{Name: aws.String("vpc-id"), Values: []string{vpcID}}}
		if isDefault, _ := state.Get(stateDefaultVPC).(bool); isDefault {
			in.Filters = append(in.Filters, types.Filter{Name: aws.String("default-for-az"), Values: []string{"true"}})
		}
		if cfg.AvailabilityZone != "" {
			in.Filters = append(in.Filters, types.Filter{Name: aws.String("availability-zone"), Values: []string{cfg.AvailabilityZone}})
		}
	}
	var subnets []types.Subnet
	for {
		out, err := e.ec2.DescribeSubnets(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("listing subnets: %w", err)
		}
		subnets = append(subnets, out.Subnets...)
		if aws.ToString(out.NextToken) == "" {
			break
		}
		in.NextToken = out.NextToken
	}
	// Without subnet_id the instance gets a public address only from a
	// subnet that assigns one at launch (default subnets do).
	needPublic := cfg.SubnetID == "" && wantsPublicAddress(cfg) && cfg.Comm.SSHHost == ""
	var usable []types.Subnet
	for _, sn := range subnets {
		if sn.State != "" && sn.State != types.SubnetStateAvailable {
			continue
		}
		if needPublic && sn.MapPublicIpOnLaunch != nil && !*sn.MapPublicIpOnLaunch {
			continue
		}
		usable = append(usable, sn)
	}
	if len(usable) == 0 {
		where := "the VPC " + getString(state, stateVpcID)
		if cfg.AvailabilityZone != "" {
			where += " in " + cfg.AvailabilityZone
		}
		if needPublic && len(subnets) > 0 {
			return nil, fmt.Errorf("no subnet of %s assigns public addresses at launch; set subnet_id (the builder then asks for a public address itself), or ssh_interface = \"private_ip\" when this machine is inside the VPC", where)
		}
		return nil, fmt.Errorf("no usable subnet in %s; set subnet_id to a subnet with internet access, or choose another availability_zone", where)
	}

	// Which zone offers which type.
	offered := map[string]map[string]bool{}
	oin := &ec2.DescribeInstanceTypeOfferingsInput{
		LocationType: types.LocationTypeAvailabilityZone,
		Filters:      []types.Filter{{Name: aws.String("instance-type"), Values: instanceTypes}},
	}
	for {
		out, err := e.ec2.DescribeInstanceTypeOfferings(ctx, oin)
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
		if aws.ToString(out.NextToken) == "" {
			break
		}
		oin.NextToken = out.NextToken
	}
	var pools []pool
	for _, t := range instanceTypes {
		for _, sn := range usable {
			z := aws.ToString(sn.AvailabilityZone)
			if offered[z][t] {
				pools = append(pools, pool{instanceType: t, subnetID: aws.ToString(sn.SubnetId), zone: z})
			}
		}
	}
	if len(pools) == 0 {
		var zones []string
		for _, sn := range usable {
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

func describePools(pools []pool) string {
	t, z := poolSets(pools)
	return fmt.Sprintf("%s in %s", strings.Join(t, ", "), strings.Join(z, ", "))
}

func poolSets(pools []pool) (typesList, zones []string) {
	for _, p := range pools {
		typesList = append(typesList, p.instanceType)
		zones = append(zones, firstNonEmpty(p.zone, p.subnetID))
	}
	typesList = dedupe(typesList)
	zones = dedupe(zones)
	sort.Strings(zones)
	return typesList, zones
}

// userData is the base64 cloud-config: the SSH key for the default user and
// a hard lifetime cap (the instance powers off, and so terminates, even when
// Packer was killed and could not clean up).
func userData(publicKey string, lifetime time.Duration) (string, error) {
	var b strings.Builder
	b.WriteString("#cloud-config\n")
	if publicKey != "" {
		q, err := json.Marshal(publicKey) // JSON strings are YAML strings
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&b, "ssh_authorized_keys:\n  - %s\n", q)
	}
	minutes := int(math.Ceil(lifetime.Minutes()))
	if minutes < 1 {
		minutes = 1
	}
	fmt.Fprintf(&b, "runcmd:\n  - [shutdown, -P, \"+%d\", \"packer-nixos-sd: instance_max_lifetime reached\"]\n", minutes)
	return base64.StdEncoding.EncodeToString([]byte(b.String())), nil
}

func (s *stepLaunch) Cleanup(state multistep.StateBag) {
	e, err := env(state)
	if err != nil {
		return
	}
	ids := getStrings(state, stateInstanceIDs)
	fleets := getStrings(state, stateFleetIDs)
	ltID := getString(state, stateLaunchTemplate)
	if len(ids) == 0 && len(fleets) == 0 && ltID == "" {
		return
	}
	ctx, cancel := cleanupContext(e.cfg)
	defer cancel()

	if len(ids) > 0 {
		e.ui.Say(fmt.Sprintf("Terminating instance %s...", strings.Join(ids, ", ")))
		if err := terminateAndWait(ctx, e, ids); err != nil {
			cleanupError(e.ui, "instance", strings.Join(ids, ", "), err)
		} else {
			state.Remove(stateInstanceIDs)
		}
	}
	if len(fleets) > 0 || ltID != "" {
		e.ui.Say("Deleting the temporary EC2 fleet and launch template...")
	}
	if len(fleets) > 0 {
		out, err := e.ec2.DeleteFleets(ctx, &ec2.DeleteFleetsInput{FleetIds: fleets, TerminateInstances: aws.Bool(true)})
		if err != nil {
			if code := apiErrorCode(err); code != "InvalidFleetId.NotFound" {
				cleanupError(e.ui, "EC2 fleet", strings.Join(fleets, ", "), err)
			}
		} else {
			for _, u := range out.UnsuccessfulFleetDeletions {
				if u.Error != nil && u.Error.Code == types.DeleteFleetErrorCodeFleetIdDoesNotExist {
					continue
				}
				msg := "unknown error"
				if u.Error != nil {
					msg = fmt.Sprintf("%s: %s", u.Error.Code, aws.ToString(u.Error.Message))
				}
				cleanupError(e.ui, "EC2 fleet", aws.ToString(u.FleetId), errors.New(msg))
			}
			state.Remove(stateFleetIDs)
		}
	}
	if len(ids) > 0 {
		cancelSpotRequests(ctx, e, ids)
	}
	if ltID != "" {
		_, err := e.ec2.DeleteLaunchTemplate(ctx, &ec2.DeleteLaunchTemplateInput{LaunchTemplateId: aws.String(ltID)})
		if err != nil && !strings.HasPrefix(apiErrorCode(err), "InvalidLaunchTemplateId.NotFound") {
			cleanupError(e.ui, "launch template", ltID, err)
		} else {
			state.Remove(stateLaunchTemplate)
		}
	}
}

// terminateAndWait terminates the instances and waits, up to state_timeout,
// until EC2 reports them terminated: only then are their volumes gone and the
// security group free.
func terminateAndWait(ctx context.Context, e stepEnv, ids []string) error {
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids}); err != nil {
		if apiErrorCode(err) == "InvalidInstanceID.NotFound" {
			return nil
		}
		return err
	}
	deadline := time.Now().Add(e.cfg.StateTimeoutDuration())
	bo := newBackoff(e.cfg.PollIntervalDuration())
	for {
		out, err := e.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids})
		if err != nil && apiErrorCode(err) == "InvalidInstanceID.NotFound" {
			return nil
		}
		if err == nil {
			done := true
			for _, r := range out.Reservations {
				for _, inst := range r.Instances {
					if inst.State == nil || inst.State.Name != types.InstanceStateNameTerminated {
						done = false
					}
				}
			}
			if done {
				return nil
			}
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("not terminated yet")
			}
			return fmt.Errorf("waited %s for termination: %w", e.cfg.StateTimeoutDuration(), err)
		}
		if err := sleep(ctx, bo.Next()); err != nil {
			return err
		}
	}
}

// cancelSpotRequests cancels any spot request still open for the instances
// (instant fleets make one-time requests; this makes sure none lingers). It
// lists the open, active and disabled requests and matches the instance ids
// itself: the "instance-id" filter is not implemented by every EC2 emulator,
// while the "state" filter is, and an account rarely holds many live
// requests.
func cancelSpotRequests(ctx context.Context, e stepEnv, ids []string) {
	in := &ec2.DescribeSpotInstanceRequestsInput{
		Filters: []types.Filter{{Name: aws.String("state"), Values: []string{"open", "active", "disabled"}}},
	}
	var reqs []string
	for {
		out, err := e.ec2.DescribeSpotInstanceRequests(ctx, in)
		if err != nil {
			cleanupError(e.ui, "spot requests of instance", strings.Join(ids, ", "), fmt.Errorf("listing them: %w", err))
			return
		}
		for _, r := range out.SpotInstanceRequests {
			if slices.Contains(ids, aws.ToString(r.InstanceId)) {
				reqs = append(reqs, aws.ToString(r.SpotInstanceRequestId))
			}
		}
		if aws.ToString(out.NextToken) == "" {
			break
		}
		in.NextToken = out.NextToken
	}
	if len(reqs) == 0 {
		return
	}
	if _, err := e.ec2.CancelSpotInstanceRequests(ctx, &ec2.CancelSpotInstanceRequestsInput{SpotInstanceRequestIds: reqs}); err != nil {
		cleanupError(e.ui, "spot request", strings.Join(reqs, ", "), err)
	}
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func dedupe(list []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range list {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
