package builder

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/packer-plugin-sdk/multistep"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/debianami"
)

func stubLookup(t *testing.T, fn func(debianami.Query) (*debianami.Image, error)) *[]debianami.Query {
	t.Helper()
	var queries []debianami.Query
	old := lookupDebianAMI
	lookupDebianAMI = func(_ context.Context, _ ec2.DescribeImagesAPIClient, q debianami.Query) (*debianami.Image, error) {
		queries = append(queries, q)
		return fn(q)
	}
	t.Cleanup(func() { lookupDebianAMI = old })
	return &queries
}

func TestSourceAMIGiven(t *testing.T) {
	q := stubLookup(t, func(debianami.Query) (*debianami.Image, error) { return nil, errors.New("must not be called") })
	cfg := testConfig(t, map[string]interface{}{"source_ami": "ami-0123456789abcdef0"})
	state, _ := testState(cfg, newFakeEC2())
	if (&stepSourceAMI{}).Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateErr(state))
	}
	if getString(state, stateSourceAMI) != "ami-0123456789abcdef0" || len(*q) != 0 {
		t.Errorf("AMI %q, lookups %d", getString(state, stateSourceAMI), len(*q))
	}
}

func TestSourceAMILookup(t *testing.T) {
	q := stubLookup(t, func(q debianami.Query) (*debianami.Image, error) {
		return &debianami.Image{ID: "ami-0deb1a2b3c4d5e6f7", Name: "debian-12-arm64-20260601-1", RootDeviceName: "/dev/xvda"}, nil
	})
	cfg := testConfig(t, map[string]interface{}{"debian_release": "bookworm", "nixpkgs": "nixos-25.05"})
	state, ui := testState(cfg, newFakeEC2())
	if (&stepSourceAMI{}).Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatal(stateErr(state))
	}
	if len(*q) != 1 {
		t.Fatalf("lookups = %d", len(*q))
	}
	got := (*q)[0]
	if got.Release.Codename != "bookworm" || got.Architecture != "arm64" || len(got.Owners) != 1 || got.Owners[0] != debianami.DebianOwner {
		t.Errorf("query = %+v", got)
	}
	if getString(state, stateSourceAMI) != "ami-0deb1a2b3c4d5e6f7" || getString(state, stateRootDevice) != "/dev/xvda" {
		t.Error("AMI or root device not recorded")
	}
	if !strings.Contains(ui.String(), "ami-0deb1a2b3c4d5e6f7") {
		t.Error("the user is not told which AMI")
	}
}

func TestSourceAMILookupFails(t *testing.T) {
	stubLookup(t, func(debianami.Query) (*debianami.Image, error) { return nil, errors.New("no image matched") })
	cfg := testConfig(t, nil)
	state, _ := testState(cfg, newFakeEC2())
	if (&stepSourceAMI{}).Run(context.Background(), state) != multistep.ActionHalt {
		t.Fatal("passed")
	}
	if msg := stateErr(state).Error(); !strings.Contains(msg, "set source_ami") {
		t.Errorf("error = %q", msg)
	}
}
