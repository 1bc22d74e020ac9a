package builder

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
)

// clientToken makes each CreateFleet request of the build unique (EC2 would
// answer a reused token with the first request's fleet) and an SDK retry of
// one request idempotent: the build id, the launch round (spot_retries) and
// the attempt.
func clientToken(buildID string, round, attempt int) string {
	return fmt.Sprintf("%s-r%d-a%d", buildID, round, attempt)
}

// launchRound is the number of the launch (1, then one more per spot
// interruption retried).
func launchRound(state multistep.StateBag) int {
	if n, ok := state.Get(stateLaunchRound).(int); ok && n > 0 {
		return n
	}
	return 1
}

// fleetInput is one instant fleet request for one instance of lifecycle.
func fleetInput(cfg *Config, state multistep.StateBag, ltID string, pools []pool, lifecycle types.DefaultTargetCapacityType, attempt int) *ec2.CreateFleetInput {
	buildID := getString(state, stateBuildID)
	spot := lifecycle == types.DefaultTargetCapacityTypeSpot
	var overrides []types.FleetLaunchTemplateOverridesRequest
	for _, p := range pools {
		o := types.FleetLaunchTemplateOverridesRequest{InstanceType: types.InstanceType(p.instanceType)}
		switch {
		case cfg.SubnetID != "":
			// The launch template's network interface names the subnet.
		case p.subnetID != "":
			o.SubnetId = aws.String(p.subnetID)
		case p.zone != "":
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
	in := &ec2.CreateFleetInput{
		Type:        types.FleetTypeInstant,
		ClientToken: aws.String(clientToken(buildID, launchRound(state), attempt)),
		LaunchTemplateConfigs: []types.FleetLaunchTemplateConfigRequest{{
			LaunchTemplateSpecification: &types.FleetLaunchTemplateSpecificationRequest{
				LaunchTemplateId: aws.String(ltID),
				Version:          aws.String("$Latest"),
			},
			Overrides: overrides,
		}},
		TargetCapacitySpecification: capacity,
		TagSpecifications:           []types.TagSpecification{tagSpec(types.ResourceTypeFleet, resourceTags(cfg, state, nil))},
	}
	if !spot {
		capacity.OnDemandTargetCapacity = aws.Int32(1)
		in.OnDemandOptions = &types.OnDemandOptionsRequest{AllocationStrategy: types.FleetOnDemandAllocationStrategyLowestPrice}
		return in
	}
	capacity.SpotTargetCapacity = aws.Int32(1)
	in.SpotOptions = &types.SpotOptionsRequest{AllocationStrategy: types.SpotAllocationStrategy(cfg.SpotAllocationStrategy)}
	if cfg.SpotPrice != "auto" {
		// "auto" leaves the price unset: AWS then caps it at the on-demand price.
		in.SpotOptions.MaxTotalPrice = aws.String(cfg.SpotPrice)
	}
	return in
}

// createFleet makes one instant fleet request and records what it launched.
// It returns *errRefused when EC2 launched nothing for capacity, quota or
// pool reasons.
func createFleet(ctx context.Context, e stepEnv, state multistep.StateBag, in *ec2.CreateFleetInput, pools []pool) error {
	lifecycle := in.TargetCapacitySpecification.DefaultTargetCapacityType
	// Until the answer arrives, the request may have launched an instance
	// nobody knows the id of: Cleanup then searches by the build id tag.
	state.Put(stateFleetRequested, true)
	state.Put(stateFleetPending, true)
	out, err := e.ec2.CreateFleet(ctx, in, awscommon.NotYetVisible(e.cfg.PollIntervalDuration(), awscommon.CodeLaunchTemplateNotFound))
	if err == nil || awscommon.ErrorCode(err) != "" {
		state.Put(stateFleetPending, false)
	}
	if err != nil {
		// Never read out here: the SDK returns nil output with an error.
		code := awscommon.ErrorCode(err)
		if k := classify(code, err.Error(), false); k == kindCapacity || k == kindQuota {
			return &errRefused{lifecycle: lifecycle, errs: []poolError{{code: code, message: apiMessage(err), kind: k}}}
		}
		return fmt.Errorf("requesting the instance (CreateFleet): %w", err)
	}
	if out == nil {
		return errors.New("requesting the instance (CreateFleet): EC2 returned no answer; run the build again")
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
		return refusal(lifecycle, out.Errors, pools)
	}
	if len(out.Errors) > 0 {
		e.ui.Say(fmt.Sprintf("Some pools failed, another launched the instance: %v", refusal(lifecycle, out.Errors, pools)))
	}
	recordInstance(ctx, e, state, launched[0], lifecycle, pools)
	return nil
}

// apiMessage is an API error's own message, without the SDK's operation
// prefix.
func apiMessage(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorMessage()
	}
	return err.Error()
}

// recordInstance puts the launched instance's id, type, zone, lifecycle and
// price in the state.
func recordInstance(ctx context.Context, e stepEnv, state multistep.StateBag, fi types.CreateFleetInstance, lifecycle types.DefaultTargetCapacityType, pools []pool) {
	id := fi.InstanceIds[0]
	itype := string(fi.InstanceType)
	zone, subnet := "", ""
	if lo := fi.LaunchTemplateAndOverrides; lo != nil && lo.Overrides != nil {
		itype = cmp.Or(itype, string(lo.Overrides.InstanceType))
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
	lc := cmp.Or(string(fi.Lifecycle), string(lifecycle))
	price := "on-demand"
	if lc == string(types.InstanceLifecycleSpot) {
		price = spotPrice(ctx, e, itype, zone)
	}
	state.Put(stateInstanceID, id)
	if _, ok := state.GetOk(stateLaunchedAt); !ok {
		// The first launch: after a spot interruption retried, the cost
		// covers the instances one after the other.
		state.Put(stateLaunchedAt, time.Now())
	}
	state.Put(stateInstanceType, itype)
	state.Put(stateZone, zone)
	state.Put(stateLifecycle, lc)
	state.Put(stateSpotPrice, price)
	e.ui.Say(fmt.Sprintf("Launched %s instance %s (%s in %s, price %s)", lc, id, cmp.Or(itype, "?"), cmp.Or(zone, "?"), price))
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
