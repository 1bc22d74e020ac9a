package builder

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// TestDocsCostExample: the cost report in docs/guides/costs-and-cleanup.md is
// what the code prints for the build it describes (a spot c7g.2xlarge at
// $0.1032/hour for 5m31s with the default volume).
func TestDocsCostExample(t *testing.T) {
	cfg := testConfig(t, nil)
	state := new(multistep.BasicStateBag)
	launched := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	state.Put(stateInstanceID, "i-0abc...")
	state.Put(stateInstanceType, "c7g.2xlarge")
	state.Put(stateZone, "us-east-2b")
	state.Put(stateLifecycle, "spot")
	state.Put(stateSpotPrice, "0.1032")
	state.Put(stateLaunchedAt, launched)
	r := estimateCost(state, cfg, launched.Add(5*time.Minute+31*time.Second))
	var want strings.Builder
	want.WriteString("```\n")
	for _, l := range strings.Split(r.String(), "\n") {
		want.WriteString("==> nixos-sd.pi: " + l + "\n")
	}
	want.WriteString("```\n")
	doc, err := os.ReadFile("../docs/guides/costs-and-cleanup.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), want.String()) {
		t.Errorf("docs/guides/costs-and-cleanup.md does not show the cost report as the code prints it; put this block there:\n%s", want.String())
	}
}

// TestDocsDefaults: what the guides say about defaults is what Prepare sets.
func TestDocsDefaults(t *testing.T) {
	c := testConfig(t, map[string]interface{}{"poll_interval": nil, "state_timeout": nil})
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	costs := read("../docs/guides/costs-and-cleanup.md") + read("../docs/builders/nixos-sd.mdx")
	for _, want := range []string{
		"`instance_max_lifetime` (" + shortDuration(c.InstanceMaxLifetimeDuration()) + ", or `build_timeout` plus 15m when that is longer)",
		"`instance_max_lifetime` (by default\n  " + shortDuration(c.InstanceMaxLifetimeDuration()) + ", or `build_timeout` plus 15m when that is longer)",
		"`orphan_timeout` (" + shortDuration(c.OrphanTimeoutDuration()) + ")",
	} {
		if !strings.Contains(costs, want) {
			t.Errorf("docs/guides/costs-and-cleanup.md lacks %q", want)
		}
	}
	longer := testConfig(t, map[string]interface{}{"build_timeout": "4h"})
	if got := longer.InstanceMaxLifetimeDuration(); got != 4*time.Hour+15*time.Minute {
		t.Errorf("instance_max_lifetime with build_timeout 4h = %s, want 4h15m as the docs say", got)
	}
}

// shortDuration writes d as the docs do: 3h, 15m, 4h15m.
func shortDuration(d time.Duration) string {
	s := strings.TrimSuffix(d.String(), "0s")
	return strings.TrimSuffix(s, "h0m") + map[bool]string{true: "h", false: ""}[strings.HasSuffix(s, "h0m")]
}

// TestDocsPriceTable: the price table in docs/guides/costs-and-cleanup.md is
// builder/prices.go's, row for row.
func TestDocsPriceTable(t *testing.T) {
	doc, err := os.ReadFile("../docs/guides/costs-and-cleanup.md")
	if err != nil {
		t.Fatal(err)
	}
	cell := regexp.MustCompile("`([a-z0-9]+)` \\| ([0-9.]+) \\|")
	seen := map[string]bool{}
	for _, m := range cell.FindAllStringSubmatch(string(doc), -1) {
		row, ok := onDemandLarge[m[1]]
		if !ok {
			t.Errorf("the docs price %s, which builder/prices.go lacks", m[1])
			continue
		}
		if p, _ := strconv.ParseFloat(m[2], 64); p != row.large {
			t.Errorf("the docs price %s.large at %s, builder/prices.go at %v", m[1], m[2], row.large)
		}
		seen[m[1]] = true
	}
	for family := range onDemandLarge {
		if !seen[family] {
			t.Errorf("docs/guides/costs-and-cleanup.md's price table lacks %s", family)
		}
	}
}
