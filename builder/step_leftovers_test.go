package builder

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

func buildTags(buildID, expires string) []types.Tag {
	return []types.Tag{{Key: aws.String(BuildIDTag), Value: aws.String(buildID)}, {Key: aws.String(ExpiresTag), Value: aws.String(expires)}}
}

// leftoverFake holds resources of an earlier build (expired), of a build
// still running (not expired), of this build, and untagged ones.
func leftoverFake() *fakeEC2 {
	f := newFakeEC2()
	const past, future = "2026-11-30T08:00:00Z", "2026-11-30T14:00:00Z"
	f.leftInstances = []types.Instance{
		{InstanceId: aws.String("i-0old"), Tags: buildTags("old-build", past)},
		{InstanceId: aws.String("i-0running"), Tags: buildTags("running-build", future)},
	}
	f.fleets = []types.FleetData{
		{FleetId: aws.String("fleet-old"), FleetState: types.FleetStateCodeActive, Tags: buildTags("old-build", past)},
		{FleetId: aws.String("fleet-gone"), FleetState: types.FleetStateCodeDeletedTerminatingInstances, Tags: buildTags("old-build", past)},
		{FleetId: aws.String("fleet-notours"), FleetState: types.FleetStateCodeActive},
	}
	f.templates = []types.LaunchTemplate{
		{LaunchTemplateId: aws.String("lt-0old"), Tags: buildTags("old-build", past)},
		{LaunchTemplateId: aws.String("lt-0mine"), Tags: buildTags("0190b1a2-test-build-id", past)},
	}
	f.groups = []types.SecurityGroup{
		{GroupId: aws.String("sg-0old"), Tags: buildTags("old-build", past)},
		{GroupId: aws.String("sg-0bad"), Tags: buildTags("odd-build", "not a time")},
	}
	f.instanceState = func(n int, id string) types.InstanceStateName { return types.InstanceStateNameTerminated }
	return f
}

var leftoverNow = func() time.Time { return time.Date(2026, 11, 30, 11, 0, 0, 0, time.UTC) }

func TestLeftoversListedWithCommands(t *testing.T) {
	f := leftoverFake()
	cfg := testConfig(t, nil)
	state, ui := testState(cfg, f)
	if a := (&stepLeftovers{now: leftoverNow}).Run(context.Background(), state); a != multistep.ActionContinue {
		t.Fatalf("halted: %v", stateErr(state))
	}
	if m := mutating(f.Calls()); len(m) > 0 {
		t.Errorf("without cleanup_leftovers the step changed something: %v", m)
	}
	out := ui.String()
	for _, want := range []string{
		"3 resource(s) of earlier nixos-sd builds in us-east-2 are past their expiry",
		"cleanup_leftovers = true",
		"instance i-0old (build old-build, expired 2026-11-30T08:00:00Z): aws ec2 terminate-instances --region us-east-2 --instance-ids i-0old",
		"launch template lt-0old (build old-build, expired 2026-11-30T08:00:00Z): aws ec2 delete-launch-template --region us-east-2 --launch-template-id lt-0old",
		"security group sg-0old (build old-build, expired 2026-11-30T08:00:00Z): aws ec2 delete-security-group --region us-east-2 --group-id sg-0old",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := f.count("DescribeFleets"); n != 0 {
		t.Errorf("%d DescribeFleets calls; leftovers are found by the tags of instances, templates and groups", n)
	}
	for _, not := range []string{"i-0running", "fleet-old", "lt-0mine", "sg-0bad"} {
		if strings.Contains(out, not) {
			t.Errorf("output names %s, which is not a leftover:\n%s", not, out)
		}
	}
}

func TestLeftoversRemovedWhenAsked(t *testing.T) {
	f := leftoverFake()
	cfg := testConfig(t, map[string]interface{}{"cleanup_leftovers": true})
	state, ui := testState(cfg, f)
	if a := (&stepLeftovers{now: leftoverNow}).Run(context.Background(), state); a != multistep.ActionContinue {
		t.Fatalf("halted: %v", stateErr(state))
	}
	got := strings.Join(mutating(f.Calls()), " ")
	if want := "TerminateInstances DeleteLaunchTemplate DeleteSecurityGroup"; got != want {
		t.Errorf("calls = %s, want %s\n%s", got, want, ui)
	}
	if in := inputsOf[*ec2.TerminateInstancesInput](f, "TerminateInstances"); len(in) != 1 || !slices.Equal(in[0].InstanceIds, []string{"i-0old"}) {
		t.Errorf("terminated %v", in)
	}
	if in := inputsOf[*ec2.DeleteLaunchTemplateInput](f, "DeleteLaunchTemplate"); aws.ToString(in[0].LaunchTemplateId) != "lt-0old" {
		t.Errorf("deleted template %s", aws.ToString(in[0].LaunchTemplateId))
	}
	if in := inputsOf[*ec2.DeleteSecurityGroupInput](f, "DeleteSecurityGroup"); aws.ToString(in[0].GroupId) != "sg-0old" {
		t.Errorf("deleted group %s", aws.ToString(in[0].GroupId))
	}
}

// What -on-error=abort keeps is listed with the commands that remove it.
func TestReportKeptAfterAbort(t *testing.T) {
	b := &Builder{}
	b.config = *testConfig(t, nil)
	b.config.PackerOnError = "abort"
	state, ui := testState(&b.config, newFakeEC2())
	state.Put(stateInstanceIDs, []string{"i-0123456789abcdef0"})
	state.Put(stateFleetIDs, []string{"fleet-1"})
	state.Put(stateLaunchTemplate, "lt-0123456789abcdef0")
	state.Put(stateSecurityGroupID, "sg-0123456789abcdef0")
	b.reportKept(ui, state)
	if ui.String() != "" {
		t.Errorf("a build that did not fail reports kept resources:\n%s", ui)
	}
	state.Put(multistep.StateHalted, true)
	b.reportKept(ui, state)
	out := ui.String()
	for _, want := range []string{
		"-on-error=abort: the build left 4 resource(s) in us-east-2",
		"aws ec2 terminate-instances --region us-east-2 --instance-ids i-0123456789abcdef0",
		"aws ec2 delete-fleets --region us-east-2 --fleet-ids fleet-1 --terminate-instances",
		"aws ec2 delete-launch-template --region us-east-2 --launch-template-id lt-0123456789abcdef0",
		"aws ec2 delete-security-group --region us-east-2 --group-id sg-0123456789abcdef0",
		"aws ec2 describe-instances --region us-east-2 --filters Name=tag:nixos-sd:build-id,Values=0190b1a2-test-build-id",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if i, j := strings.Index(out, "terminate-instances"), strings.Index(out, "delete-security-group"); i > j {
		t.Errorf("the group is listed before the instance that holds it:\n%s", out)
	}
}

func TestResourceTagsCarryBuildIDAndExpiry(t *testing.T) {
	cfg := testConfig(t, map[string]interface{}{"instance_max_lifetime": "4h"})
	state, _ := testState(cfg, newFakeEC2())
	state.Put(stateExpires, expiry(cfg, time.Date(2026, 11, 30, 11, 0, 0, 0, time.UTC)))
	tags := resourceTags(cfg, state, nil)
	if got := tagValue(tags, BuildIDTag); got != "0190b1a2-test-build-id" {
		t.Errorf("%s = %q", BuildIDTag, got)
	}
	if got := tagValue(tags, ExpiresTag); got != "2026-11-30T15:00:00Z" {
		t.Errorf("%s = %q, want the start plus instance_max_lifetime", ExpiresTag, got)
	}
}
