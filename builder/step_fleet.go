package builder

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/retry"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
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

// stepFleet launches the instance through an EC2 Fleet of type instant from
// the launch template: one request covers every pool stepNetwork found, so
// EC2 itself picks the pool with capacity, and a refusal means every pool
// was tried. It retries a refusal for capacity, then falls back to
// on-demand when on_demand_fallback is set. Its Cleanup terminates the
// instance and waits until it is gone, deletes the fleets and cancels any
// spot request left.
type stepFleet struct{}

func (s *stepFleet) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	ltID := getString(state, stateLaunchTemplate)
	pools, _ := state.Get(statePools).([]pool)
	if ltID == "" || len(pools) == 0 {
		return halt(state, errors.New("internal error: no launch template or pools in the build state"))
	}
	started := time.Now()
	if err := requestInstance(ctx, e, state, ltID, pools); err != nil {
		return halt(state, err)
	}
	recordTiming(state, "launch", time.Since(started))
	return multistep.ActionContinue
}

// requestInstance asks for spot (then on-demand, when allowed) capacity,
// launchAttempts times each, with a doubling pause between attempts.
func requestInstance(ctx context.Context, e stepEnv, state multistep.StateBag, ltID string, pools []pool) error {
	lifecycles := []types.DefaultTargetCapacityType{types.DefaultTargetCapacityTypeSpot}
	if e.cfg.OnDemandFallback {
		lifecycles = append(lifecycles, types.DefaultTargetCapacityTypeOnDemand)
	}
	var last error
	attempt := 0
	for li, lifecycle := range lifecycles {
		if li > 0 {
			e.ui.Say("No spot capacity in any pool; falling back to on-demand (on_demand_fallback = true)...")
		}
		// retry.Config.Run sleeps with time.Sleep, deaf to ctx (Ctrl-C); its
		// Backoff gives the delays.
		wait := retry.Backoff{InitialBackoff: e.cfg.PollIntervalDuration(), Multiplier: 2}
		for i := range launchAttempts {
			attempt++
			if i > 0 {
				d := wait.Linear()
				e.ui.Say(fmt.Sprintf("No %s capacity (%v); trying again in %s...", lifecycle, last, d))
				if err := sleep(ctx, d); err != nil {
					return err
				}
			} else {
				e.ui.Say(fmt.Sprintf("Requesting one %s instance from %d pools (%s)...", lifecycle, len(pools), describePools(pools)))
			}
			err := createFleet(ctx, e, state, fleetInput(e.cfg, state, ltID, pools, lifecycle, attempt), pools)
			var nc *errNoCapacity
			if !errors.As(err, &nc) {
				return err
			}
			last = err
		}
	}
	typesTried, zonesTried := poolSets(pools)
	if e.cfg.OnDemandFallback {
		return fmt.Errorf("no spot or on-demand capacity for %s in %s after %d attempts (last: %v); add more instance_types, or try another availability_zone or region",
			strings.Join(typesTried, ", "), strings.Join(zonesTried, ", "), attempt, last)
	}
	return fmt.Errorf("no spot capacity for %s in %s after %d attempts (last: %v); add more instance_types, try another availability_zone or region, or set on_demand_fallback = true",
		strings.Join(typesTried, ", "), strings.Join(zonesTried, ", "), attempt, last)
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
// It returns *errNoCapacity when EC2 had no capacity in any pool.
func createFleet(ctx context.Context, e stepEnv, state multistep.StateBag, in *ec2.CreateFleetInput, pools []pool) error {
	out, err := e.ec2.CreateFleet(ctx, in)
	if err != nil {
		// Never read out here: the SDK returns nil output with an error.
		if isCapacityError(awscommon.ErrorCode(err), err.Error()) {
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
		return fleetRefusal(out.Errors)
	}
	recordInstance(ctx, e, state, launched[0], in.TargetCapacitySpecification.DefaultTargetCapacityType, pools)
	return nil
}

// fleetRefusal explains a fleet that launched nothing: *errNoCapacity when
// every reason is capacity or price.
func fleetRefusal(errs []types.CreateFleetError) error {
	if len(errs) == 0 {
		return &errNoCapacity{detail: "EC2 launched no instance and gave no reason"}
	}
	var details []string
	allCapacity := true
	for _, fe := range errs {
		code, msg := aws.ToString(fe.ErrorCode), aws.ToString(fe.ErrorMessage)
		if !isCapacityError(code, msg) {
			allCapacity = false
		}
		where := ""
		if lo := fe.LaunchTemplateAndOverrides; lo != nil && lo.Overrides != nil {
			where = fmt.Sprintf(" [%s %s]", lo.Overrides.InstanceType, cmp.Or(aws.ToString(lo.Overrides.AvailabilityZone), aws.ToString(lo.Overrides.SubnetId)))
		}
		details = append(details, fmt.Sprintf("%s: %s%s", code, msg, where))
	}
	detail := strings.Join(dedupe(details), "; ")
	if allCapacity {
		return &errNoCapacity{detail: detail}
	}
	return fmt.Errorf("EC2 refused to launch the instance: %s", detail)
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
	state.Put(stateLaunchedAt, time.Now())
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

func (s *stepFleet) Cleanup(state multistep.StateBag) {
	e, err := env(state)
	if err != nil {
		return
	}
	ids := getStrings(state, stateInstanceIDs)
	fleets := getStrings(state, stateFleetIDs)
	if len(ids) == 0 && len(fleets) == 0 {
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
	if len(fleets) > 0 {
		e.ui.Say("Deleting the temporary EC2 fleet...")
		if deleteFleets(ctx, e, fleets) {
			state.Remove(stateFleetIDs)
		}
	}
	if len(ids) > 0 {
		cancelSpotRequests(ctx, e, ids)
	}
}

// terminateAndWait terminates the instances and waits, up to state_timeout,
// until EC2 reports them terminated: only then are their volumes gone and the
// security group free.
func terminateAndWait(ctx context.Context, e stepEnv, ids []string) error {
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids}); err != nil {
		if awscommon.ErrorCode(err) == "InvalidInstanceID.NotFound" {
			return nil
		}
		return err
	}
	var lastErr error
	// The SDK's rule fails at once on a pending or stopping instance and on
	// any API error; all of those still end in terminated (or not found).
	retryable := func(_ context.Context, _ *ec2.DescribeInstancesInput, out *ec2.DescribeInstancesOutput, err error) (bool, error) {
		if awscommon.ErrorCode(err) == "InvalidInstanceID.NotFound" {
			return false, nil
		}
		if err != nil {
			lastErr = err
			return true, nil
		}
		for _, r := range out.Reservations {
			for _, inst := range r.Instances {
				if inst.State == nil || inst.State.Name != types.InstanceStateNameTerminated {
					lastErr = errors.New("not terminated yet")
					return true, nil
				}
			}
		}
		return false, nil
	}
	poll := pollBackoff(e.cfg)
	waiter := ec2.NewInstanceTerminatedWaiter(e.ec2, func(o *ec2.InstanceTerminatedWaiterOptions) {
		o.MinDelay, o.MaxDelay, o.Retryable = poll.InitialBackoff, poll.MaxBackoff, retryable
	})
	if err := waiter.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids}, e.cfg.StateTimeoutDuration()); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("waited %s for termination: %w", e.cfg.StateTimeoutDuration(), cmp.Or(lastErr, err))
	}
	return nil
}

// deleteFleets deletes the fleets, reporting those it could not; it returns
// whether none is left.
func deleteFleets(ctx context.Context, e stepEnv, fleets []string) bool {
	out, err := e.ec2.DeleteFleets(ctx, &ec2.DeleteFleetsInput{FleetIds: fleets, TerminateInstances: aws.Bool(true)})
	if err != nil {
		if awscommon.ErrorCode(err) != "InvalidFleetId.NotFound" {
			cleanupError(e.ui, "EC2 fleet", strings.Join(fleets, ", "), err)
		}
		return false
	}
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
	return true
}

// cancelSpotRequests cancels any spot request still open for the instances.
// It lists the live requests and matches the instance ids itself: not every
// EC2 emulator has the "instance-id" filter, and live requests are few.
func cancelSpotRequests(ctx context.Context, e stepEnv, ids []string) {
	var reqs []string
	pages := ec2.NewDescribeSpotInstanceRequestsPaginator(e.ec2, &ec2.DescribeSpotInstanceRequestsInput{
		Filters: []types.Filter{{Name: aws.String("state"), Values: []string{"open", "active", "disabled"}}},
	})
	for pages.HasMorePages() {
		out, err := pages.NextPage(ctx)
		if err != nil {
			cleanupError(e.ui, "spot requests of instance", strings.Join(ids, ", "), fmt.Errorf("listing them: %w", err))
			return
		}
		for _, r := range out.SpotInstanceRequests {
			if slices.Contains(ids, aws.ToString(r.InstanceId)) {
				reqs = append(reqs, aws.ToString(r.SpotInstanceRequestId))
			}
		}
	}
	if len(reqs) == 0 {
		return
	}
	if _, err := e.ec2.CancelSpotInstanceRequests(ctx, &ec2.CancelSpotInstanceRequestsInput{SpotInstanceRequestIds: reqs}); err != nil {
		cleanupError(e.ui, "spot request", strings.Join(reqs, ", "), err)
	}
}
