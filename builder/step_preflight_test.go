package builder

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

func runPreflight(t *testing.T, cfg *Config, f *fakeEC2) (multistep.StepAction, multistep.StateBag) {
	t.Helper()
	state, _ := testState(cfg, f)
	action := (&stepPreflight{}).Run(context.Background(), state)
	if m := mutating(f.Calls()); len(m) > 0 {
		t.Errorf("preflight made mutating calls %v; it must only describe", m)
	}
	return action, state
}

func TestPreflightPasses(t *testing.T) {
	f := newFakeEC2()
	cfg := testConfig(t, map[string]interface{}{
		"availability_zone": "us-east-2a",
		"instance_types":    []string{"c7g.2xlarge", "t4g.small"},
		"source_ami":        "ami-0123456789abcdef0",
		"subnet_id":         "subnet-aaaaaaaa",
	})
	action, state := runPreflight(t, cfg, f)
	if action != multistep.ActionContinue {
		t.Fatalf("preflight halted: %v", stateErr(state))
	}
	if got := getStrings(state, stateInstanceTypes); strings.Join(got, ",") != "c7g.2xlarge,t4g.small" {
		t.Errorf("instance types = %v", got)
	}
	if got := getString(state, stateRootDevice); got != "/dev/xvda" {
		t.Errorf("root device = %q", got)
	}
	offers := inputsOf[*ec2.DescribeInstanceTypeOfferingsInput](f, "DescribeInstanceTypeOfferings")
	if len(offers) != 1 || offers[0].LocationType != types.LocationTypeAvailabilityZone {
		t.Errorf("offerings must be asked per availability zone when one is given: %+v", offers)
	}
}

// TestPreflightUnknownChannel: a nixpkgs channel the channel server does not
// have stops the build before any EC2 call, naming the living channels; the
// one it has is fixed to its release for the build.
func TestPreflightUnknownChannel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/nixos-unstable":
			http.Redirect(w, r, "/releases/nixos/unstable/nixos-26.11pre806999.1234567890ab", http.StatusMovedPermanently)
		case "/releases/nixos/unstable/nixos-26.11pre806999.1234567890ab/git-revision":
			fmt.Fprintln(w, "1234567890ab"+strings.Repeat("0", 28))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	f := newFakeEC2()
	cfg := testConfig(t, map[string]interface{}{"nixpkgs": "nixos-26.06", "nixpkgs_channels_url": srv.URL})
	action, state := runPreflight(t, cfg, f)
	if action != multistep.ActionHalt {
		t.Fatal("preflight passed a channel that does not exist")
	}
	if err := stateErr(state); err == nil || !strings.Contains(err.Error(), `nixpkgs: channel "nixos-26.06" does not exist on `+srv.URL) ||
		!strings.Contains(err.Error(), "nixos-unstable") {
		t.Errorf("error = %v, want it to name the channel and the living ones", err)
	}
	if calls := f.Calls(); len(calls) > 0 {
		t.Errorf("preflight called EC2 (%v) before refusing the channel", calls)
	}

	cfg = testConfig(t, map[string]interface{}{"nixpkgs": "nixos-unstable", "nixpkgs_channels_url": srv.URL})
	if action, state := runPreflight(t, cfg, newFakeEC2()); action != multistep.ActionContinue {
		t.Fatalf("preflight halted: %v", stateErr(state))
	}
	if p := cfg.Pin(); p == nil || p.URL != srv.URL+"/releases/nixos/unstable/nixos-26.11pre806999.1234567890ab/nixexprs.tar.xz" {
		t.Errorf("pin = %+v", p)
	}
}

func TestPreflightFailures(t *testing.T) {
	cases := []struct {
		name  string
		extra map[string]interface{}
		setup func(*fakeEC2)
		want  []string
	}{
		{
			name:  "x86 type",
			extra: map[string]interface{}{"instance_types": []string{"c7g.2xlarge", "m5.large"}},
			// looksX86 catches m5 at Prepare; pretend it is a family it does not know.
			setup: func(f *fakeEC2) {},
			want:  nil, // replaced below
		},
		{
			name:  "unknown zone",
			extra: map[string]interface{}{"availability_zone": "us-east-2z"},
			want:  []string{`availability_zone: "us-east-2z" is not a zone of region us-east-2`, "us-east-2a, us-east-2b, us-east-2c", "leave it empty"},
		},
		{
			name:  "missing AMI",
			extra: map[string]interface{}{"source_ami": "ami-0fffffffffffffff0"},
			want:  []string{`source_ami: "ami-0fffffffffffffff0" does not exist in region us-east-2`, "remove source_ami"},
		},
		{
			name:  "x86 AMI",
			extra: map[string]interface{}{"source_ami": "ami-00000000000000086"},
			want:  []string{`source_ami: "ami-00000000000000086" is x86_64, not arm64`},
		},
		{
			name:  "unknown region",
			extra: map[string]interface{}{"region": "xx-foo-1"},
			want:  []string{`region: "xx-foo-1" is not an EC2 region; use one of: eu-west-1, us-east-1, us-east-2`},
		},
		{
			name: "bad credentials",
			setup: func(f *fakeEC2) {
				f.regionsErr = apiErr("AuthFailure", "AWS was not able to validate the provided access credentials")
			},
			want: []string{"AWS rejected the credentials", "check your credentials or profile"},
		},
		{
			name:  "unknown type",
			extra: map[string]interface{}{"instance_types": []string{"c7g.2xlarge", "zz9g.huge"}},
			want:  []string{"instance_types:", "zz9g.huge"},
		},
		{
			name:  "explicit type not offered",
			extra: map[string]interface{}{"availability_zone": "us-east-2c", "instance_types": []string{"c7g.2xlarge", "t4g.small"}},
			want:  []string{`instance_types: "t4g.small" not offered in availability zone us-east-2c`},
		},
		{
			name:  "no type offered",
			extra: map[string]interface{}{"availability_zone": "us-east-2c", "instance_types": []string{"t4g.small"}},
			want:  []string{`instance_types: none of "t4g.small" is offered in availability zone us-east-2c`},
		},
		{
			name:  "missing vpc",
			extra: map[string]interface{}{"vpc_id": "vpc-0fffffffffffffff0"},
			want:  []string{`vpc_id: "vpc-0fffffffffffffff0" does not exist`},
		},
		{
			name:  "subnet in another zone",
			extra: map[string]interface{}{"availability_zone": "us-east-2a", "subnet_id": "subnet-bbbbbbbb"},
			want:  []string{`subnet_id: "subnet-bbbbbbbb" is in us-east-2b, not in availability_zone "us-east-2a"`},
		},
		{
			name:  "missing subnet",
			extra: map[string]interface{}{"subnet_id": "subnet-0fffffff"},
			want:  []string{`subnet_id: "subnet-0fffffff" does not exist`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeEC2()
			if tc.setup != nil {
				tc.setup(f)
			}
			var cfg *Config
			want := tc.want
			if tc.name == "x86 type" {
				// Prepare rejects well-known x86 names already; an x86 type
				// with a Graviton-looking name must still fail preflight.
				f.typeArch["x9g.large"] = "x86_64"
				cfg = testConfig(t, map[string]interface{}{"instance_types": []string{"c7g.2xlarge", "x9g.large"}})
				want = []string{`instance_types: "x9g.large" is x86_64, not arm64`, "Graviton"}
			} else {
				cfg = testConfig(t, tc.extra)
			}
			action, state := runPreflight(t, cfg, f)
			if action != multistep.ActionHalt {
				t.Fatal("preflight passed; want a failure")
			}
			msg := stateErr(state).Error()
			for _, w := range want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q\n does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestPreflightDropsUnofferedDefaultTypes(t *testing.T) {
	f := newFakeEC2()
	cfg := testConfig(t, nil) // default types; c8g/m8g are offered nowhere in the fake
	action, state := runPreflight(t, cfg, f)
	if action != multistep.ActionContinue {
		t.Fatalf("preflight halted: %v", stateErr(state))
	}
	got := strings.Join(getStrings(state, stateInstanceTypes), ",")
	if got != "c7g.2xlarge,m7g.2xlarge,c6g.2xlarge,m6g.2xlarge" {
		t.Errorf("instance types = %s", got)
	}
}

// TestRegionNotEnabled: EC2 in a region not enabled for the account answers
// AuthFailure as it does for wrong credentials; STS in the partition's home
// region tells the two apart.
func TestRegionNotEnabled(t *testing.T) {
	for _, c := range []struct {
		name    string
		region  string
		account string
		stsErr  error
		want    []string
	}{
		{"opt-in region", "ap-east-1", "111122223333", nil, []string{`region: "ap-east-1" is not enabled for account 111122223333`, "AuthFailure", "STS in us-east-1", "aws account enable-region --region-name ap-east-1"}},
		{"wrong credentials", "ap-east-1", "", apiErr("InvalidClientTokenId", "The security token included in the request is invalid."), []string{"AWS rejected the credentials", "check your credentials or profile"}},
		{"GovCloud home", "us-gov-east-1", "111122223333", nil, []string{"STS in us-gov-west-1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeEC2()
			f.regionsErr = apiErr("AuthFailure", "AWS was not able to validate the provided access credentials")
			opts := map[string]interface{}{"region": c.region}
			if c.region == "us-gov-east-1" {
				opts["source_ami"] = "ami-0123456789abcdef0"
			}
			cfg := testConfig(t, opts)
			state, _ := testState(cfg, f)
			var asked int
			state.Put(stateCallerAccount, func(context.Context) (string, error) { asked++; return c.account, c.stsErr })
			if (&stepPreflight{}).Run(context.Background(), state) != multistep.ActionHalt {
				t.Fatal("preflight passed")
			}
			msg := stateErr(state).Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("%q lacks %q", msg, w)
				}
			}
			if asked != 1 {
				t.Errorf("STS asked %d times, want 1", asked)
			}
		})
	}
}
