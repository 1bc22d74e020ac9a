package builder

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/retry"
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
	clockOf(state).enter(phaseLaunch)
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
				if r.requestWide {
					return fmt.Errorf("EC2 refused the launch request itself, alike in every pool (%v): the launch options are wrong, not the instance types; check volume_size against the source AMI's snapshot, source_ami, volume_kms_key_id and subnet_id", r)
				}
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

func (s *stepFleet) Cleanup(state multistep.StateBag) {
	clockOf(state).enter(phaseCleanup)
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
		moreIDs, err := findByBuildID(ctx, e, getString(state, stateBuildID), ids, lost)
		if err != nil {
			e.ui.Error(fmt.Sprintf("Could not look for instances launched by this build (tag %s=%s): %v. Check with: %s", BuildIDTag, getString(state, stateBuildID), err, describeByTagCommand(e.cfg.Region, getString(state, stateBuildID))))
		}
		if len(moreIDs) > 0 {
			e.ui.Say(fmt.Sprintf("Found instance %s, launched by a request whose answer never arrived (tag %s)", strings.Join(moreIDs, ", "), BuildIDTag))
			ids = append(ids, moreIDs...)
			state.Put(stateInstanceIDs, ids)
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
