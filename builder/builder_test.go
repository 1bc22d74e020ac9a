package builder

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/awscommon"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/debianami"
)

func testBuilder(t *testing.T, f *fakeEC2, extra map[string]interface{}) *Builder {
	t.Helper()
	raw := map[string]interface{}{
		"region":           "us-east-2",
		"output_directory": t.TempDir() + "/out",
		"poll_interval":    "1ms",
		"state_timeout":    "1s",
		"ssh_source_cidrs": []string{"198.51.100.7/32"},
	}
	for k, v := range extra {
		raw[k] = v
	}
	b := &Builder{newEC2: func(context.Context) (awscommon.EC2API, error) { return f, nil }}
	keys, _, err := b.Prepare(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != len(GeneratedDataKeys) {
		t.Errorf("Prepare returned generated data keys %v", keys)
	}
	return b
}

func TestRunPreflightFailureCreatesNothing(t *testing.T) {
	f := newFakeEC2()
	b := testBuilder(t, f, map[string]interface{}{"availability_zone": "us-east-2z"})
	art, err := b.Run(context.Background(), newTestUI(), &packersdk.MockHook{})
	if err == nil || art != nil {
		t.Fatalf("Run = %v, %v; want a preflight error", art, err)
	}
	if !strings.Contains(err.Error(), "availability_zone") {
		t.Errorf("error = %v", err)
	}
	if m := mutating(f.Calls()); len(m) > 0 {
		t.Errorf("mutating calls after a preflight failure: %v", m)
	}
}

func TestRunLaunchFailureCleansUp(t *testing.T) {
	stubLookup(t, func(debianami.Query) (*debianami.Image, error) {
		return &debianami.Image{ID: "ami-0123456789abcdef0", RootDeviceName: "/dev/xvda"}, nil
	})
	f := newFakeEC2()
	f.createFleet = func(int, *ec2.CreateFleetInput) (*ec2.CreateFleetOutput, error) {
		return nil, apiErr("InsufficientInstanceCapacity", "no capacity")
	}
	b := testBuilder(t, f, nil)
	_, err := b.Run(context.Background(), newTestUI(), &packersdk.MockHook{})
	if err == nil || !strings.Contains(err.Error(), "on_demand_fallback") {
		t.Fatalf("err = %v", err)
	}
	var created, deleted []string
	for _, c := range mutating(f.Calls()) {
		switch c {
		case "CreateSecurityGroup", "CreateLaunchTemplate":
			created = append(created, c)
		case "DeleteSecurityGroup", "DeleteLaunchTemplate":
			deleted = append(deleted, c)
		}
	}
	if strings.Join(created, ",") != "CreateSecurityGroup,CreateLaunchTemplate" || strings.Join(deleted, ",") != "DeleteLaunchTemplate,DeleteSecurityGroup" {
		t.Errorf("created %v, deleted %v (want reverse order)", created, deleted)
	}
	if f.count("TerminateInstances") != 0 {
		t.Error("terminated an instance that was never launched")
	}
}

func TestRunCancelledBeforeStart(t *testing.T) {
	f := newFakeEC2()
	b := testBuilder(t, f, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Run(ctx, newTestUI(), &packersdk.MockHook{}); err == nil {
		t.Fatal("a cancelled build succeeded")
	}
	if m := mutating(f.Calls()); len(m) > 0 {
		t.Errorf("mutating calls after cancel: %v", m)
	}
}

var _ multistep.Step = &stepPreflight{}
