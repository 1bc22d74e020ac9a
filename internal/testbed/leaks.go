package testbed

// The leak checker lists what a build left in moto, region by region.
//
// What counts (moto 5.2.5 behaviour noted where it matters):
//   - instances in any state but terminated;
//   - spot instance requests in state open or active. moto_launcher.py closes
//     an instant fleet's (or one-time) request when its instance terminates,
//     as AWS does; plain moto would leave it active forever;
//   - EC2 fleets whose state does not start with "deleted" (moto keeps deleted
//     fleets listed as deleted_terminating / deleted_running, as AWS does for a
//     while), except instant fleets none of whose instances lives: AWS lists
//     an instant fleet only when its id is named (DescribeFleets), so nobody
//     can find one whose id was lost, and once its instances are terminated
//     it holds nothing and costs nothing;
//   - launch templates, key pairs, security groups other than "default";
//   - volumes: every volume. moto deletes an instance's root volume when the
//     instance terminates (DeleteOnTermination=true, verified), and the
//     volumes moto creates for catalogue AMIs are deleted right away (only
//     their snapshots stay, which are not counted), so any volume is a leak.

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// leaks lists the resources left in one region.
func leaks(ctx context.Context, c *ec2.Client, region string) ([]string, error) {
	var out []string
	add := func(format string, args ...any) {
		out = append(out, region+": "+fmt.Sprintf(format, args...))
	}

	live := map[string]bool{}
	ip := ec2.NewDescribeInstancesPaginator(c, &ec2.DescribeInstancesInput{})
	for ip.HasMorePages() {
		page, err := ip.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: DescribeInstances: %w", region, err)
		}
		for _, r := range page.Reservations {
			for _, i := range r.Instances {
				state := ""
				if i.State != nil {
					state = string(i.State.Name)
				}
				if state != "terminated" {
					live[aws.ToString(i.InstanceId)] = true
					add("instance %s (%s%s)", aws.ToString(i.InstanceId), state, nameTag(i.Tags))
				}
			}
		}
	}

	spot, err := c.DescribeSpotInstanceRequests(ctx, &ec2.DescribeSpotInstanceRequestsInput{})
	if err != nil {
		return nil, fmt.Errorf("%s: DescribeSpotInstanceRequests: %w", region, err)
	}
	for _, s := range spot.SpotInstanceRequests {
		if s.State == types.SpotInstanceStateOpen || s.State == types.SpotInstanceStateActive {
			add("spot request %s (%s, instance %s%s)", aws.ToString(s.SpotInstanceRequestId), s.State, aws.ToString(s.InstanceId), nameTag(s.Tags))
		}
	}

	fp := ec2.NewDescribeFleetsPaginator(c, &ec2.DescribeFleetsInput{})
	for fp.HasMorePages() {
		page, err := fp.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: DescribeFleets: %w", region, err)
		}
		for _, f := range page.Fleets {
			if f.Type == types.FleetTypeInstant && !slices.ContainsFunc(f.Instances, func(fi types.DescribeFleetsInstances) bool {
				return slices.ContainsFunc(fi.InstanceIds, func(id string) bool { return live[id] })
			}) {
				continue
			}
			if !strings.HasPrefix(string(f.FleetState), "deleted") {
				add("EC2 fleet %s (%s, type %s%s)", aws.ToString(f.FleetId), f.FleetState, f.Type, nameTag(f.Tags))
			}
		}
	}

	lt, err := c.DescribeLaunchTemplates(ctx, &ec2.DescribeLaunchTemplatesInput{})
	if err != nil {
		return nil, fmt.Errorf("%s: DescribeLaunchTemplates: %w", region, err)
	}
	for _, t := range lt.LaunchTemplates {
		add("launch template %s (%s)", aws.ToString(t.LaunchTemplateId), aws.ToString(t.LaunchTemplateName))
	}

	kp, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{})
	if err != nil {
		return nil, fmt.Errorf("%s: DescribeKeyPairs: %w", region, err)
	}
	for _, k := range kp.KeyPairs {
		add("key pair %s (%s)", aws.ToString(k.KeyPairId), aws.ToString(k.KeyName))
	}

	sp := ec2.NewDescribeSecurityGroupsPaginator(c, &ec2.DescribeSecurityGroupsInput{})
	for sp.HasMorePages() {
		page, err := sp.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: DescribeSecurityGroups: %w", region, err)
		}
		for _, g := range page.SecurityGroups {
			if aws.ToString(g.GroupName) != "default" {
				add("security group %s (%s)", aws.ToString(g.GroupId), aws.ToString(g.GroupName))
			}
		}
	}

	vp := ec2.NewDescribeVolumesPaginator(c, &ec2.DescribeVolumesInput{})
	for vp.HasMorePages() {
		page, err := vp.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: DescribeVolumes: %w", region, err)
		}
		for _, v := range page.Volumes {
			var att []string
			for _, a := range v.Attachments {
				att = append(att, fmt.Sprintf(", attached to %s", aws.ToString(a.InstanceId)))
			}
			add("volume %s (%s, %d GiB%s%s)", aws.ToString(v.VolumeId), v.State, aws.ToInt32(v.Size), strings.Join(att, ""), nameTag(v.Tags))
		}
	}
	return out, nil
}

func nameTag(tags []types.Tag) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == "Name" {
			return ", Name " + aws.ToString(t.Value)
		}
	}
	return ""
}
