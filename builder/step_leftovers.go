package builder

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

// stepLeftovers looks, before anything is created, for resources of earlier
// nixos-sd builds in the region whose expiry tag has passed (what a killed
// Packer could not remove): instances, launch templates and security groups,
// found by their tags. Fleets are not looked for: DescribeFleets leaves out
// fleets of type instant unless their ids are named, and an instant fleet
// holds nothing once its instances are terminated. It lists them with the commands that remove them, and removes them
// when cleanup_leftovers is set. It creates nothing; what it removes belongs
// to no running build.
type stepLeftovers struct {
	// now is the clock; nil means time.Now.
	now func() time.Time
}

func (s *stepLeftovers) Run(ctx context.Context, state multistep.StateBag) multistep.StepAction {
	clockOf(state).enter(phasePreflight)
	e, err := env(state)
	if err != nil {
		return halt(state, err)
	}
	now := time.Now
	if s.now != nil {
		now = s.now
	}
	found, err := findLeftovers(ctx, e, getString(state, stateBuildID), now())
	if err != nil {
		// Looking is a courtesy: a missing Describe permission must not stop
		// the build.
		e.ui.Say(fmt.Sprintf("Warning: could not look for leftovers of earlier builds: %v", err))
		return multistep.ActionContinue
	}
	if len(found) == 0 {
		return multistep.ActionContinue
	}
	if !e.cfg.CleanupLeftovers {
		e.ui.Say(fmt.Sprintf("Warning: %d resource(s) of earlier nixos-sd builds in %s are past their expiry (tag %s) and still exist; remove them, or set cleanup_leftovers = true to have the build do it:%s",
			len(found), e.cfg.Region, ExpiresTag, describeLeftovers(e.cfg.Region, found)))
		return multistep.ActionContinue
	}
	e.ui.Say(fmt.Sprintf("Removing %d resource(s) of earlier nixos-sd builds past their expiry (cleanup_leftovers = true):%s", len(found), describeLeftovers(e.cfg.Region, found)))
	var instances []string
	for _, l := range found {
		if l.kind == "instance" {
			instances = append(instances, l.id)
		}
	}
	if len(instances) > 0 {
		if err := terminateAndWait(ctx, e, instances); err != nil {
			e.ui.Error(fmt.Sprintf("Could not terminate leftover instance(s) %s: %v", strings.Join(instances, ", "), err))
		}
	}
	for _, l := range found {
		var err error
		switch l.kind {
		case "launch template":
			err = deleteLaunchTemplate(ctx, e, l.id)
		case "security group":
			err = deleteSecurityGroup(ctx, e, l.id)
		}
		if err != nil {
			e.ui.Error(fmt.Sprintf("Could not remove leftover %s %s: %v; remove it with: %s", l.kind, l.id, err, l.removeCommand(e.cfg.Region)))
		}
	}
	return multistep.ActionContinue
}

func (s *stepLeftovers) Cleanup(state multistep.StateBag) { clockOf(state).enter(phaseCleanup) }

// findLeftovers lists the resources carrying a build id other than this
// build's and an expiry before now, in removal order.
func findLeftovers(ctx context.Context, e stepEnv, buildID string, now time.Time) ([]leftover, error) {
	var out []leftover
	keep := func(kind, id string, tags []types.Tag) {
		b, exp := tagValue(tags, BuildIDTag), tagValue(tags, ExpiresTag)
		if b == "" || b == buildID || exp == "" {
			return
		}
		t, err := time.Parse(time.RFC3339, exp)
		if err != nil || !t.Before(now) {
			return
		}
		out = append(out, leftover{kind: kind, id: id, buildID: b, expires: exp})
	}
	tagged := []types.Filter{{Name: aws.String("tag-key"), Values: []string{BuildIDTag}}}

	ip := ec2.NewDescribeInstancesPaginator(e.ec2, &ec2.DescribeInstancesInput{Filters: append(tagged,
		types.Filter{Name: aws.String("instance-state-name"), Values: liveInstanceStates})})
	for ip.HasMorePages() {
		page, err := ip.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("DescribeInstances: %w", err)
		}
		for _, r := range page.Reservations {
			for _, i := range r.Instances {
				keep("instance", aws.ToString(i.InstanceId), i.Tags)
			}
		}
	}
	lp := ec2.NewDescribeLaunchTemplatesPaginator(e.ec2, &ec2.DescribeLaunchTemplatesInput{Filters: tagged})
	for lp.HasMorePages() {
		page, err := lp.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("DescribeLaunchTemplates: %w", err)
		}
		for _, t := range page.LaunchTemplates {
			keep("launch template", aws.ToString(t.LaunchTemplateId), t.Tags)
		}
	}
	sp := ec2.NewDescribeSecurityGroupsPaginator(e.ec2, &ec2.DescribeSecurityGroupsInput{Filters: tagged})
	for sp.HasMorePages() {
		page, err := sp.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("DescribeSecurityGroups: %w", err)
		}
		for _, g := range page.SecurityGroups {
			keep("security group", aws.ToString(g.GroupId), g.Tags)
		}
	}
	return out, nil
}
