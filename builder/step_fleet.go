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
	"github.com/aws/smithy-go"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/retry"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
)

// launchAttempts is how many times one lifecycle (spot, then on-demand) is
// tried when EC2 answers with a capacity or price error.
const launchAttempts = 3

// capacityWait is the first pause after a capacity refusal: 15 ×
// poll_interval (30 s by default), doubling. Spot capacity comes back in
// minutes, not in the seconds a state change takes.
func capacityWait(cfg *Config) time.Duration { return 15 * cfg.PollIntervalDuration() }

// stepFleet launches the instance through an EC2 Fleet of type instant from
// the launch template: one request covers every pool stepNetwork found, so
// EC2 itself picks the pool with capacity. It tells refusals apart (see
// fleet_errors.go): capacity is retried after a wait, then falls back to
// on-demand when on_demand_fallback is set; a quota stops that lifecycle and
// says which quota to raise; a pool EC2 does not support is left out and the
// others are asked again; anything else fails at once. Its Cleanup
// terminates the instance (and any other the build's requests launched,
// found by the build id tag) and waits until it is gone, and deletes the
// fleets; EC2 closes the instance's one-time spot request itself.
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
// launchAttempts times each, pausing capacityWait (doubling) after a
// capacity refusal.
func requestInstance(ctx context.Context, e stepEnv, state multistep.StateBag, ltID string, pools []pool) error {
	lifecycles := []types.DefaultTargetCapacityType{types.DefaultTargetCapacityTypeSpot}
	if e.cfg.OnDemandFallback {
		lifecycles = append(lifecycles, types.DefaultTargetCapacityTypeOnDemand)
	}
	var refusals []*errRefused
	attempt := 0
	for li, lifecycle := range lifecycles {
		if li > 0 {
			e.ui.Say(fmt.Sprintf("No spot instance (%s); falling back to on-demand (on_demand_fallback = true)...", refusals[len(refusals)-1].kind().String()))
		}
		// retry.Config.Run sleeps with time.Sleep, deaf to ctx (Ctrl-C); its
		// Backoff gives the delays.
		wait := retry.Backoff{InitialBackoff: capacityWait(e.cfg), Multiplier: 2}
	tries:
		for i := range launchAttempts {
			attempt++
			if i == 0 {
				e.ui.Say(fmt.Sprintf("Requesting one %s instance from %d pools (%s)...", lifecycle, len(pools), describePools(pools)))
			}
			err := createFleet(ctx, e, state, fleetInput(e.cfg, state, ltID, pools, lifecycle, attempt), pools)
			var r *errRefused
			if !errors.As(err, &r) {
				return err
			}
			refusals = append(refusals, r)
			if drop := r.unsupportedPools(); len(drop) > 0 {
				pools = slices.DeleteFunc(pools, func(p pool) bool { return slices.Contains(drop, p) })
				e.ui.Say(fmt.Sprintf("Leaving out %d pool(s) EC2 cannot launch this request in: %s", len(drop), unsupportedDetail(r)))
				if len(pools) == 0 {
					return fmt.Errorf("EC2 cannot launch the instance in any pool (%v); choose instance_types offered in the zones (see `aws ec2 describe-instance-type-offerings --location-type availability-zone --region %s`), or another availability_zone or subnet_id", r, e.cfg.Region)
				}
			}
			switch r.kind() {
			case kindOther:
				return fmt.Errorf("EC2 refused to launch the instance: %v; check instance_types, source_ami and the account's EC2 limits", r)
			case kindQuota:
				e.ui.Error(fmt.Sprintf("EC2 refused the %s request for a quota (%v): %s", lifecycle, r, quotaAdvice(e.cfg.Region, lifecycle, poolTypes(pools), maxVCPUs(state, pools))))
				break tries
			case kindUnsupported:
				continue // the pools left are asked at once
			}
			if i+1 < launchAttempts {
				d := wait.Linear()
				e.ui.Say(fmt.Sprintf("No %s capacity (%v); trying again in %s...", lifecycle, r, d))
				if err := sleep(ctx, d); err != nil {
					return err
				}
			}
		}
	}
	return launchFailure(e, state, pools, refusals, attempt)
}

// launchFailure explains why no lifecycle launched an instance, with what to
// change.
func launchFailure(e stepEnv, state multistep.StateBag, pools []pool, refusals []*errRefused, attempts int) error {
	typesTried, zonesTried := poolSets(pools)
	last := refusals[len(refusals)-1]
	var quota []string
	for _, r := range refusals {
		if r.kind() == kindQuota && !slices.ContainsFunc(quota, func(s string) bool { return strings.HasPrefix(s, string(r.lifecycle)) }) {
			quota = append(quota, fmt.Sprintf("%s: %s", r.lifecycle, quotaAdvice(e.cfg.Region, r.lifecycle, typesTried, maxVCPUs(state, pools))))
		}
	}
	where := fmt.Sprintf("%s in %s", strings.Join(typesTried, ", "), strings.Join(zonesTried, ", "))
	switch {
	case len(quota) > 0 && !e.cfg.OnDemandFallback:
		return fmt.Errorf("EC2 refused the spot instance for a quota (%v); %s; or set on_demand_fallback = true", last, strings.Join(quota, "; "))
	case len(quota) > 0:
		return fmt.Errorf("no instance for %s after %d attempts (last: %v); %s", where, attempts, last, strings.Join(quota, "; "))
	case e.cfg.OnDemandFallback:
		return fmt.Errorf("no spot or on-demand capacity for %s after %d attempts (last: %v); add more instance_types, or try another availability_zone or region",
			where, attempts, last)
	}
	return fmt.Errorf("no spot capacity for %s after %d attempts (last: %v); add more instance_types, try another availability_zone or region, or set on_demand_fallback = true",
		where, attempts, last)
}

func (k errKind) String() string {
	switch k {
	case kindCapacity:
		return "no capacity"
	case kindQuota:
		return "quota reached"
	case kindUnsupported:
		return "no supported pool"
	}
	return "refused"
}

func unsupportedDetail(r *errRefused) string {
	var s []string
	for _, pe := range r.errs {
		if pe.kind == kindUnsupported {
			s = append(s, pe.String())
		}
	}
	return strings.Join(dedupe(s), "; ")
}

func poolTypes(pools []pool) []string {
	t, _ := poolSets(pools)
	return t
}

// maxVCPUs is the most vCPUs one instance of the pools' types has, as
// preflight found them (0 when unknown).
func maxVCPUs(state multistep.StateBag, pools []pool) int32 {
	v, _ := state.Get(stateVCPUs).(map[string]int32)
	var m int32
	for _, p := range pools {
		m = max(m, v[p.instanceType])
	}
	return m
}

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

func (s *stepFleet) Cleanup(state multistep.StateBag) {
	e, err := env(state)
	if err != nil {
		return
	}
	requested, _ := state.Get(stateFleetRequested).(bool)
	ids := getStrings(state, stateInstanceIDs)
	fleets := getStrings(state, stateFleetIDs)
	if !requested && len(ids) == 0 && len(fleets) == 0 {
		return
	}
	ctx, cancel := cleanupContext(e.cfg)
	defer cancel()
	if requested {
		lost, _ := state.Get(stateFleetPending).(bool)
		moreIDs, moreFleets, err := findByBuildID(ctx, e, getString(state, stateBuildID), ids, fleets, lost)
		if err != nil {
			e.ui.Error(fmt.Sprintf("Could not look for instances launched by this build (tag %s=%s): %v. Check with: %s", BuildIDTag, getString(state, stateBuildID), err, describeByTagCommand(e.cfg.Region, getString(state, stateBuildID))))
		}
		if len(moreIDs) > 0 {
			e.ui.Say(fmt.Sprintf("Found instance %s, launched by a request whose answer never arrived (tag %s)", strings.Join(moreIDs, ", "), BuildIDTag))
			ids = append(ids, moreIDs...)
			state.Put(stateInstanceIDs, ids)
		}
		if len(moreFleets) > 0 {
			fleets = append(fleets, moreFleets...)
			state.Put(stateFleetIDs, fleets)
		}
		if err == nil {
			state.Remove(stateFleetRequested)
		}
	}
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
	// EC2 closes an instant fleet's one-time spot request when its instance
	// terminates: nothing is left to cancel.
}

// terminateAndWait terminates the instances and waits, up to state_timeout,
// until EC2 reports them terminated: only then are their volumes gone and the
// security group free.
func terminateAndWait(ctx context.Context, e stepEnv, ids []string) error {
	// The ids come from CreateFleet: NotFound means not visible yet.
	notYet := awscommon.NotYetVisible(e.cfg.PollIntervalDuration(), awscommon.CodeInstanceNotFound)
	if _, err := e.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids}, notYet); err != nil {
		return err
	}
	var lastErr error
	// The SDK's rule fails at once on a pending or stopping instance and on
	// any API error, and takes NotFound for terminated; all of those still
	// end in terminated, which EC2 shows for an hour.
	retryable := func(_ context.Context, _ *ec2.DescribeInstancesInput, out *ec2.DescribeInstancesOutput, err error) (bool, error) {
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
