package builder

import (
	"strings"
	"testing"

	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// TestPreflightSpotPrice: a spot_price below every pool's current price stops
// the build at preflight (or, with on_demand_fallback, is only reported); a
// price some pool meets, and "auto", pass.
func TestPreflightSpotPrice(t *testing.T) {
	prices := map[string]map[string]string{
		"c7g.2xlarge": {"us-east-2a": "0.1210", "us-east-2b": "0.0950"},
		"m7g.2xlarge": {"us-east-2a": "0.1400"},
	}
	cases := []struct {
		name string
		opts map[string]interface{}
		want string // part of the refusal; "" to pass
	}{
		{"auto", map[string]interface{}{"spot_price": "auto"}, ""},
		{"above the cheapest", map[string]interface{}{"spot_price": "0.10"}, ""},
		{"below every pool", map[string]interface{}{"spot_price": "0.05"}, `spot_price: 0.05 is below the current price of every spot pool of instance_types (the cheapest: c7g.2xlarge in us-east-2b at $0.0950/h)`},
		{"below every pool of the zone", map[string]interface{}{"spot_price": "0.10", "availability_zone": "us-east-2a"}, "the cheapest: c7g.2xlarge in us-east-2a at $0.1210/h"},
		{"on_demand_fallback", map[string]interface{}{"spot_price": "0.05", "on_demand_fallback": true}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeEC2()
			f.spotPrices = prices
			opts := map[string]interface{}{"instance_types": []string{"c7g.2xlarge", "m7g.2xlarge"}}
			for k, v := range tc.opts {
				opts[k] = v
			}
			action, state := runPreflight(t, testConfig(t, opts), f)
			if tc.want == "" {
				if action != multistep.ActionContinue {
					t.Fatalf("preflight halted: %v", stateErr(state))
				}
				return
			}
			if action != multistep.ActionHalt {
				t.Fatalf("preflight continued; want a refusal saying %q", tc.want)
			}
			if err := stateErr(state); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "raise spot_price") {
				t.Fatalf("error %v, want it to say %q and what to do", err, tc.want)
			}
		})
	}
}
