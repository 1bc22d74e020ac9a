package builder

import (
	"cmp"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// costReport is what the build's instance and volume cost, estimated from
// the price in effect and how long they existed.
type costReport struct {
	InstanceID   string  `json:"instance_id,omitempty"`
	InstanceType string  `json:"instance_type,omitempty"`
	Zone         string  `json:"availability_zone,omitempty"`
	Lifecycle    string  `json:"lifecycle,omitempty"`
	PricePerHour float64 `json:"price_per_hour_usd"`
	// PriceSource says where PricePerHour comes from: "spot price history"
	// or "on-demand table (<region>, <date>)"; empty when unknown.
	PriceSource     string  `json:"price_source,omitempty"`
	InstanceSeconds float64 `json:"instance_seconds"`
	VolumeGiB       int32   `json:"volume_gib"`
	VolumeSeconds   float64 `json:"volume_seconds"`
	VolumePerGBMo   float64 `json:"volume_price_per_gb_month_usd"`
	// PublicIPv4PerHour is the price of the instance's public IPv4 address;
	// 0 when it had none (a subnet_id without one, reached privately).
	PublicIPv4PerHour float64 `json:"public_ipv4_per_hour_usd,omitempty"`
	EstimatedUSD      float64 `json:"estimated_cost_usd"`
	// Launched is false when no instance was launched: nothing was spent.
	Launched bool `json:"launched"`
	// Interrupted are the instances EC2 interrupted before this one
	// (spot_retries); EstimatedUSD includes them.
	Interrupted []costReport `json:"interrupted_instances,omitempty"`
}

// minBilledSeconds is EC2's minimum charge for a Linux instance.
const minBilledSeconds = 60

// estimateCost builds the cost report from the state: the current instance
// (instanceCost) and those EC2 interrupted before it (endAttemptCost).
func estimateCost(state multistep.StateBag, cfg *Config, ended time.Time) costReport {
	r := instanceCost(state, cfg, ended)
	r.Interrupted, _ = state.Get(stateInterruptedCosts).([]costReport)
	for _, i := range r.Interrupted {
		r.EstimatedUSD = math.Round((r.EstimatedUSD+i.EstimatedUSD)*1e6) / 1e6
		r.Launched = true
	}
	return r
}

// endAttemptCost keeps the cost of an attempt's instance that EC2
// interrupted, for the final report; stepAttempts calls it before it starts
// the next attempt.
func endAttemptCost(state multistep.StateBag) {
	cfg, ok := state.Get(stateConfig).(*Config)
	if !ok {
		return
	}
	if r := instanceCost(state, cfg, time.Now()); r.Launched {
		prior, _ := state.Get(stateInterruptedCosts).([]costReport)
		state.Put(stateInterruptedCosts, append(prior, r))
	}
	state.Remove(stateLaunchedAt)
}

// instanceCost is the cost of the current instance, launched at
// stateLaunchedAt, until ended (the end of cleanup, which waits for its
// termination); its volume lived as long.
func instanceCost(state multistep.StateBag, cfg *Config, ended time.Time) costReport {
	r := costReport{
		InstanceID:    getString(state, stateInstanceID),
		InstanceType:  getString(state, stateInstanceType),
		Zone:          getString(state, stateZone),
		Lifecycle:     getString(state, stateLifecycle),
		VolumeGiB:     cfg.VolumeSize,
		VolumePerGBMo: gp3PerGBMonth,
	}
	if cfg.SubnetID == "" || wantsPublicAddress(cfg) {
		// The default subnets give every instance a public IPv4 address; a
		// chosen subnet gets one when the SSH interface is public.
		r.PublicIPv4PerHour = publicIPv4PerHour
	}
	launched, ok := state.Get(stateLaunchedAt).(time.Time)
	if !ok || r.InstanceID == "" {
		return r
	}
	r.Launched = true
	secs := ended.Sub(launched).Seconds()
	r.InstanceSeconds = math.Round(secs*10) / 10
	r.VolumeSeconds = r.InstanceSeconds
	if p, err := strconv.ParseFloat(getString(state, stateSpotPrice), 64); err == nil && r.Lifecycle == "spot" {
		r.PricePerHour, r.PriceSource = p, "spot price history"
	} else if p, ok := onDemandPrice(r.InstanceType); ok {
		// On-demand, or a spot price EC2 did not tell: the on-demand price
		// caps what spot costs (spot_price "auto").
		r.PricePerHour, r.PriceSource = p, fmt.Sprintf("on-demand table (%s, %s)", pricesRegion, pricesDate)
	}
	billed := max(secs, minBilledSeconds)
	usd := r.PricePerHour*billed/3600 + float64(r.VolumeGiB)*r.VolumePerGBMo*secs/3600/hoursPerMonth + r.PublicIPv4PerHour*secs/3600
	r.EstimatedUSD = math.Round(usd*1e6) / 1e6
	return r
}

// String is the report the build prints at its end.
func (r costReport) String() string {
	if !r.Launched {
		return "Cost: no instance was launched; nothing to pay."
	}
	var b strings.Builder
	b.WriteString("Cost (estimate):\n")
	for _, i := range r.Interrupted {
		fmt.Fprintf(&b, "  interrupted %s %s in %s (%s): %s at $%s/hour, $%.4f\n", i.Lifecycle, cmp.Or(i.InstanceType, "?"), cmp.Or(i.Zone, "?"), i.InstanceID,
			roundDuration(time.Duration(i.InstanceSeconds*float64(time.Second))), strconv.FormatFloat(i.PricePerHour, 'f', -1, 64), i.EstimatedUSD)
	}
	if r.InstanceID == "" {
		fmt.Fprintf(&b, "  total      $%.4f", r.EstimatedUSD)
		return b.String()
	}
	fmt.Fprintf(&b, "  instance   %s %s in %s (%s)\n", r.Lifecycle, cmp.Or(r.InstanceType, "?"), cmp.Or(r.Zone, "?"), r.InstanceID)
	if r.PriceSource == "" {
		fmt.Fprintf(&b, "  price      unknown for %s: the estimate leaves the instance out\n", cmp.Or(r.InstanceType, "this type"))
	} else {
		fmt.Fprintf(&b, "  price      $%s/hour (%s)\n", strconv.FormatFloat(r.PricePerHour, 'f', -1, 64), r.PriceSource)
	}
	fmt.Fprintf(&b, "  time       %s (billed per second, at least 1 minute)\n", roundDuration(time.Duration(r.InstanceSeconds*float64(time.Second))))
	fmt.Fprintf(&b, "  volume     %d GiB gp3 for %s at $%.2f/GB-month\n", r.VolumeGiB, roundDuration(time.Duration(r.VolumeSeconds*float64(time.Second))), r.VolumePerGBMo)
	if r.PublicIPv4PerHour > 0 {
		fmt.Fprintf(&b, "  address    public IPv4 at $%s/hour\n", strconv.FormatFloat(r.PublicIPv4PerHour, 'f', -1, 64))
	}
	if r.EstimatedUSD > 0 && r.EstimatedUSD < 0.0001 {
		b.WriteString("  total      less than $0.0001")
	} else {
		fmt.Fprintf(&b, "  total      $%.4f", r.EstimatedUSD)
	}
	return b.String()
}

// report prints the phase table and the cost report at the end of a build,
// whether it succeeded or not, and returns the cost.
func (b *Builder) report(ui packersdk.Ui, state multistep.StateBag, clock *phaseClock) costReport {
	cost := estimateCost(state, &b.config, time.Now())
	ui.Say(phaseTable(clock.phases()))
	ui.Say(cost.String())
	return cost
}

// addReport adds the phases and the cost to the generated data.
func addReport(gd map[string]interface{}, ps []phaseTime, cost costReport) {
	gd["Phases"] = formatPhases(ps)
	gd["Lifecycle"] = cost.Lifecycle
	gd["PricePerHour"] = strconv.FormatFloat(cost.PricePerHour, 'f', -1, 64)
	gd["InstanceSeconds"] = strconv.FormatFloat(cost.InstanceSeconds, 'f', -1, 64)
	gd["VolumeSize"] = strconv.Itoa(int(cost.VolumeGiB))
	gd["EstimatedCost"] = strconv.FormatFloat(cost.EstimatedUSD, 'f', 4, 64)
}

// manifestReport is what the builder adds to the image's manifest once the
// instance is gone: the phases in seconds and the cost.
func manifestReport(ps []phaseTime, cost costReport) map[string]any {
	phases := make([]map[string]any, 0, len(ps))
	for _, p := range ps {
		phases = append(phases, map[string]any{"name": p.Name, "seconds": math.Round(p.Took.Seconds()*10) / 10})
	}
	return map[string]any{"phases": phases, "cost": cost}
}
