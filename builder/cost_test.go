package builder

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

func TestEstimateCost(t *testing.T) {
	cfg := testConfig(t, nil)
	launched := time.Unix(10_000, 0)
	state := func(lifecycle, price string) multistep.StateBag {
		s := new(multistep.BasicStateBag)
		s.Put(stateInstanceID, "i-0123456789abcdef0")
		s.Put(stateInstanceType, "c7g.2xlarge")
		s.Put(stateZone, "us-east-2a")
		s.Put(stateLifecycle, lifecycle)
		s.Put(stateSpotPrice, price)
		s.Put(stateLaunchedAt, launched)
		return s
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 0.00006 }

	// Spot, 10 minutes, 30 GiB, a public IPv4 address (default subnets):
	// 0.1 * 600/3600 + 30 * 0.08 * 600/3600/730 + 0.005 * 600/3600.
	r := estimateCost(state("spot", "0.1000"), cfg, launched.Add(10*time.Minute))
	if !r.Launched || r.PricePerHour != 0.1 || r.PriceSource != "spot price history" || r.InstanceSeconds != 600 || r.VolumeGiB != 30 {
		t.Errorf("spot report = %+v", r)
	}
	if want := 0.1*600/3600 + 30*0.08*600/3600/730 + 0.005*600/3600; !near(r.EstimatedUSD, want) {
		t.Errorf("spot estimate = %v, want %v", r.EstimatedUSD, want)
	}
	if s := r.String(); !strings.Contains(s, "$0.1/hour (spot price history)") || !strings.Contains(s, "30 GiB gp3") || !strings.Contains(s, "public IPv4 at $0.005/hour") || !strings.Contains(s, "total      $0.0180") {
		t.Errorf("report:\n%s", s)
	}

	// On-demand: the table's price; c7g.2xlarge is 4 × c7g.large.
	r = estimateCost(state("on-demand", "on-demand"), cfg, launched.Add(time.Hour))
	if !near(r.PricePerHour, 0.29) || !strings.HasPrefix(r.PriceSource, "on-demand table (us-east-1, ") {
		t.Errorf("on-demand report = %+v", r)
	}

	// Spot price unknown: the on-demand price bounds it.
	r = estimateCost(state("spot", "unknown"), cfg, launched.Add(time.Hour))
	if !near(r.PricePerHour, 0.29) {
		t.Errorf("unknown spot price report = %+v", r)
	}

	// Ten seconds are billed as a minute.
	r = estimateCost(state("spot", "0.36"), cfg, launched.Add(10*time.Second))
	if !near(r.EstimatedUSD, 0.36/60+30*0.08*10/3600/730+0.005*10/3600) {
		t.Errorf("short run estimate = %v", r.EstimatedUSD)
	}

	// A type the table lacks: the price is unknown and said so.
	s := state("on-demand", "on-demand")
	s.Put(stateInstanceType, "z9g.large")
	if r := estimateCost(s, cfg, launched.Add(time.Hour)); r.PricePerHour != 0 || !strings.Contains(r.String(), "price      unknown") {
		t.Errorf("unknown type report = %+v\n%s", r, r)
	}

	// Nothing launched: nothing spent.
	r = estimateCost(new(multistep.BasicStateBag), cfg, launched)
	if r.Launched || r.EstimatedUSD != 0 || !strings.Contains(r.String(), "no instance was launched") {
		t.Errorf("no-launch report = %+v", r)
	}
}

func TestOnDemandTable(t *testing.T) {
	for _, it := range DefaultInstanceTypes {
		if _, ok := onDemandPrice(it); !ok {
			t.Errorf("the on-demand table has no price for default type %s", it)
		}
	}
	if p, _ := onDemandPrice("m7g.large"); p != 0.0816 {
		t.Errorf("m7g.large = %v", p)
	}
	if _, ok := onDemandPrice("c7g"); ok {
		t.Error("a family without size has a price")
	}
	for family, row := range onDemandLarge {
		if row.large <= 0 || !strings.HasPrefix(row.source, "https://") {
			t.Errorf("%s: row %+v lacks a price or its source", family, row)
		}
		if _, err := time.Parse(time.DateOnly, row.read); err != nil || row.read > pricesDate {
			t.Errorf("%s: read date %q is not a date on or before the table's %s", family, row.read, pricesDate)
		}
	}
	// The figures the cited table gives, for sizes other than .large.
	for it, want := range map[string]float64{
		"c7g.16xlarge": 2.32, "c8g.8xlarge": 1.27616, "r8g.4xlarge": 0.94256, "a1.xlarge": 0.102,
		"c6gn.12xlarge": 2.0736, "c7gd.8xlarge": 1.4515, "c7gn.16xlarge": 3.9936, "m7gd.2xlarge": 0.4271,
		"m8g.48xlarge": 8.61696, "r7gd.4xlarge": 1.0886, "t4g.medium": 0.0336,
	} {
		if p, _ := onDemandPrice(it); math.Abs(p-want) > want*0.002 {
			t.Errorf("%s = %v, the cited table says %v", it, p, want)
		}
	}
}

// TestCostCountsInterruptedInstances: an instance EC2 interrupted before the
// build started again (spot_retries) is in the report and the total.
func TestCostCountsInterruptedInstances(t *testing.T) {
	cfg := testConfig(t, nil)
	s := new(multistep.BasicStateBag)
	s.Put(stateConfig, cfg)
	s.Put(stateInstanceID, "i-00000000000000001")
	s.Put(stateInstanceType, "c7g.2xlarge")
	s.Put(stateZone, "us-east-2a")
	s.Put(stateLifecycle, "spot")
	s.Put(stateSpotPrice, "0.12")
	s.Put(stateLaunchedAt, time.Now().Add(-30*time.Minute))
	endAttemptCost(s)
	if _, ok := s.GetOk(stateLaunchedAt); ok {
		t.Fatal("the interrupted instance's launch time stays in the state")
	}
	// Nothing launched again yet: the report still counts the first.
	r := estimateCost(s, cfg, time.Now())
	if !r.Launched || len(r.Interrupted) != 1 || r.EstimatedUSD < 0.059 || !strings.Contains(r.String(), "interrupted spot c7g.2xlarge in us-east-2a (i-00000000000000001)") {
		t.Errorf("report = %+v\n%s", r, r)
	}
	s.Put(stateInstanceID, "i-00000000000000002")
	s.Put(stateSpotPrice, "0.12")
	s.Put(stateLaunchedAt, time.Now().Add(-30*time.Minute))
	r = estimateCost(s, cfg, time.Now())
	if r.InstanceID != "i-00000000000000002" || len(r.Interrupted) != 1 || r.EstimatedUSD < 0.119 || r.EstimatedUSD > 0.130 {
		t.Errorf("report = %+v\n%s", r, r)
	}
	if out := r.String(); !strings.Contains(out, "interrupted spot") || !strings.Contains(out, "instance   spot c7g.2xlarge in us-east-2a (i-00000000000000002)") {
		t.Errorf("report:\n%s", out)
	}
}

// TestCostPublicIPv4: a chosen subnet reached over a private interface has
// no public address to pay for; the default subnets give one.
func TestCostPublicIPv4(t *testing.T) {
	for _, c := range []struct {
		opts map[string]interface{}
		want float64
	}{
		{nil, 0.005},
		{map[string]interface{}{"subnet_id": "subnet-0123456789abcdef0", "ssh_interface": "private_ip"}, 0},
		{map[string]interface{}{"subnet_id": "subnet-0123456789abcdef0"}, 0.005},
	} {
		cfg := testConfig(t, c.opts)
		s := new(multistep.BasicStateBag)
		s.Put(stateInstanceID, "i-0123456789abcdef0")
		s.Put(stateInstanceType, "c7g.2xlarge")
		s.Put(stateLifecycle, "spot")
		s.Put(stateSpotPrice, "0.1")
		s.Put(stateLaunchedAt, time.Now().Add(-time.Hour))
		if r := estimateCost(s, cfg, time.Now()); r.PublicIPv4PerHour != c.want {
			t.Errorf("%v: public IPv4 price %v, want %v", c.opts, r.PublicIPv4PerHour, c.want)
		}
	}
}
