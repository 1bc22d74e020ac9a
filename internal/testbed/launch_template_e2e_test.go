//go:build e2e

package testbed

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// launchTemplateCase is one way a launch template names the network.
type launchTemplateCase struct {
	name string
	// viaInterface puts subnet, group and public address on a network
	// interface; else SecurityGroupIds and the override's SubnetId.
	viaInterface bool
	public       bool // the interface's AssociatePublicIpAddress
	lifecycle    types.DefaultTargetCapacityType
}

// TestFleetInstancesGetTheirLaunchTemplate: an instant fleet's instance has
// what its launch template and override say, as on AWS: the template's
// security group (not the VPC's default), subnet, public address choice,
// root volume size, type and encryption, metadata options, shutdown
// behaviour and user data; and it is pending until its host is up. Plain
// moto gives it the default group, an 8 GiB gp2 unencrypted /dev/sda1,
// optional IMDS tokens, shutdown behaviour "stop", and runs it at once.
func TestFleetInstancesGetTheirLaunchTemplate(t *testing.T) {
	for _, tc := range []launchTemplateCase{
		{name: "groups and override subnet, spot", lifecycle: types.DefaultTargetCapacityTypeSpot},
		{name: "network interface with public address, on-demand", viaInterface: true, public: true, lifecycle: types.DefaultTargetCapacityTypeOnDemand},
		{name: "network interface without public address, spot", viaInterface: true, lifecycle: types.DefaultTargetCapacityTypeSpot},
	} {
		t.Run(tc.name, func(t *testing.T) { testFleetLaunchTemplate(t, tc) })
	}
}

func testFleetLaunchTemplate(t *testing.T, tc launchTemplateCase) {
	dumpOnFailure(t)
	ctx := testCtx(t)
	region := "us-east-2"
	c := tb.EC2Client(region)
	moto := tb.MotoClient(region)
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)

	vpcs, err := moto.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}}})
	if err != nil || len(vpcs.Vpcs) != 1 {
		t.Fatalf("default VPC: %v %+v", err, vpcs)
	}
	vpcID := aws.ToString(vpcs.Vpcs[0].VpcId)
	subnets, err := moto.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{vpcID}}, {Name: aws.String("availability-zone"), Values: []string{"us-east-2b"}}}})
	if err != nil || len(subnets.Subnets) != 1 {
		t.Fatalf("subnet of us-east-2b: %v %+v", err, subnets)
	}
	subnet := subnets.Subnets[0]
	sg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("lt-" + suffix), Description: aws.String("testbed"), VpcId: aws.String(vpcID)})
	if err != nil {
		t.Fatal(err)
	}
	groupID := aws.ToString(sg.GroupId)
	t.Cleanup(func() { deleteGroupEventually(t, c, groupID) })

	image := newestImage(t, region, "debian-13-arm64-")
	img, err := moto.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{image}})
	if err != nil || len(img.Images) != 1 {
		t.Fatalf("DescribeImages %s: %v", image, err)
	}
	root := aws.ToString(img.Images[0].RootDeviceName)
	userData := base64.StdEncoding.EncodeToString([]byte("#cloud-config\nruncmd:\n  - [echo, " + suffix + "]\n"))
	data := &types.RequestLaunchTemplateData{
		ImageId:                           aws.String(image),
		UserData:                          aws.String(userData),
		InstanceInitiatedShutdownBehavior: types.ShutdownBehaviorTerminate,
		MetadataOptions: &types.LaunchTemplateInstanceMetadataOptionsRequest{
			HttpEndpoint: types.LaunchTemplateInstanceMetadataEndpointStateEnabled,
			HttpTokens:   types.LaunchTemplateHttpTokensStateRequired,
		},
		BlockDeviceMappings: []types.LaunchTemplateBlockDeviceMappingRequest{{
			DeviceName: aws.String(root),
			Ebs: &types.LaunchTemplateEbsBlockDeviceRequest{
				VolumeType: types.VolumeTypeGp3, VolumeSize: aws.Int32(23), Encrypted: aws.Bool(true), DeleteOnTermination: aws.Bool(true),
			},
		}},
	}
	override := types.FleetLaunchTemplateOverridesRequest{InstanceType: types.InstanceTypeC7g2xlarge}
	if tc.viaInterface {
		data.NetworkInterfaces = []types.LaunchTemplateInstanceNetworkInterfaceSpecificationRequest{{
			DeviceIndex: aws.Int32(0), SubnetId: subnet.SubnetId, Groups: []string{groupID},
			AssociatePublicIpAddress: aws.Bool(tc.public), DeleteOnTermination: aws.Bool(true),
		}}
	} else {
		data.SecurityGroupIds = []string{groupID}
		override.SubnetId = subnet.SubnetId
	}
	lt, err := c.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("lt-" + suffix), LaunchTemplateData: data})
	if err != nil {
		t.Fatal(err)
	}
	ltID := lt.LaunchTemplate.LaunchTemplateId
	t.Cleanup(func() {
		c.DeleteLaunchTemplate(context.Background(), &ec2.DeleteLaunchTemplateInput{LaunchTemplateId: ltID})
	})
	capacity := &types.TargetCapacitySpecificationRequest{TotalTargetCapacity: aws.Int32(1), DefaultTargetCapacityType: tc.lifecycle}
	fleet, err := c.CreateFleet(ctx, &ec2.CreateFleetInput{
		Type:                        types.FleetTypeInstant,
		TargetCapacitySpecification: capacity,
		LaunchTemplateConfigs: []types.FleetLaunchTemplateConfigRequest{{
			LaunchTemplateSpecification: &types.FleetLaunchTemplateSpecificationRequest{LaunchTemplateId: ltID, Version: aws.String("$Latest")},
			Overrides:                   []types.FleetLaunchTemplateOverridesRequest{override},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(fleet.Instances) != 1 || len(fleet.Instances[0].InstanceIds) != 1 {
		t.Fatalf("CreateFleet launched %+v, want one instance", fleet.Instances)
	}
	id := fleet.Instances[0].InstanceIds[0]
	t.Cleanup(func() {
		moto.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		moto.DeleteFleets(context.Background(), &ec2.DeleteFleetsInput{FleetIds: []string{aws.ToString(fleet.FleetId)}, TerminateInstances: aws.Bool(true)})
		waitHostGone(t, id)
	})

	inst := describeInstance(t, moto, id)
	if inst.State.Name != types.InstanceStateNamePending {
		t.Errorf("right after CreateFleet the instance is %s, want pending (it boots)", inst.State.Name)
	}
	var groups []string
	for _, g := range inst.SecurityGroups {
		groups = append(groups, aws.ToString(g.GroupId))
	}
	if len(groups) != 1 || groups[0] != groupID {
		t.Errorf("instance security groups %v, want only the template's %s", groups, groupID)
	}
	if got := aws.ToString(inst.SubnetId); got != aws.ToString(subnet.SubnetId) {
		t.Errorf("instance subnet %s, want %s", got, aws.ToString(subnet.SubnetId))
	}
	_, cidr, _ := net.ParseCIDR(aws.ToString(subnet.CidrBlock))
	if ip := net.ParseIP(aws.ToString(inst.PrivateIpAddress)); ip == nil || !cidr.Contains(ip) {
		t.Errorf("private address %q is not in the subnet %s", aws.ToString(inst.PrivateIpAddress), cidr)
	}
	// The subnet maps public addresses: without an interface it decides.
	wantPublic := !tc.viaInterface || tc.public
	if got := aws.ToString(inst.PublicIpAddress) != ""; got != wantPublic {
		t.Errorf("public address %q, want one: %v", aws.ToString(inst.PublicIpAddress), wantPublic)
	}
	if inst.MetadataOptions == nil || inst.MetadataOptions.HttpTokens != types.HttpTokensStateRequired {
		t.Errorf("metadata options %+v, want HttpTokens required", inst.MetadataOptions)
	}
	if aws.ToString(inst.RootDeviceName) != root || len(inst.BlockDeviceMappings) != 1 || aws.ToString(inst.BlockDeviceMappings[0].DeviceName) != root {
		t.Errorf("root device %s, mappings %s; want only the AMI's root device %s", aws.ToString(inst.RootDeviceName), mappingNames(inst.BlockDeviceMappings), root)
	} else {
		vols, err := moto.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{aws.ToString(inst.BlockDeviceMappings[0].Ebs.VolumeId)}})
		if err != nil || len(vols.Volumes) != 1 {
			t.Fatalf("DescribeVolumes: %v", err)
		}
		v := vols.Volumes[0]
		if aws.ToInt32(v.Size) != 23 || v.VolumeType != types.VolumeTypeGp3 || !aws.ToBool(v.Encrypted) {
			t.Errorf("root volume %d GiB %s encrypted=%v, want 23 GiB gp3 encrypted", aws.ToInt32(v.Size), v.VolumeType, aws.ToBool(v.Encrypted))
		}
	}
	attr, err := moto.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: aws.String(id), Attribute: types.InstanceAttributeNameInstanceInitiatedShutdownBehavior})
	if err != nil || attr.InstanceInitiatedShutdownBehavior == nil || aws.ToString(attr.InstanceInitiatedShutdownBehavior.Value) != "terminate" {
		t.Errorf("shutdown behaviour %+v (%v), want terminate", attr.InstanceInitiatedShutdownBehavior, err)
	}
	ud, err := moto.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: aws.String(id), Attribute: types.InstanceAttributeNameUserData})
	if err != nil || ud.UserData == nil || aws.ToString(ud.UserData.Value) != userData {
		t.Errorf("user data %+v (%v), want the template's", ud.UserData, err)
	}

	// Running once its host is up.
	deadline := time.Now().Add(60 * time.Second)
	for {
		inst = describeInstance(t, moto, id)
		if inst.State.Name == types.InstanceStateNameRunning {
			if _, ok := tb.Hosts().Host(id); !ok {
				t.Errorf("instance %s is running but has no host", id)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s still %s after 60 s; watcher errors: %v", id, inst.State.Name, tb.WatcherErrors())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func describeInstance(t *testing.T, c *ec2.Client, id string) types.Instance {
	t.Helper()
	out, err := c.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil || len(out.Reservations) != 1 || len(out.Reservations[0].Instances) != 1 {
		t.Fatalf("DescribeInstances %s: %v", id, err)
	}
	return out.Reservations[0].Instances[0]
}

func mappingNames(m []types.InstanceBlockDeviceMapping) string {
	var s []string
	for _, b := range m {
		s = append(s, aws.ToString(b.DeviceName))
	}
	return fmt.Sprint(s)
}

func waitHostGone(t *testing.T, id string) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, ok := tb.Hosts().Host(id); !ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("host of %s still running 30 s after termination", id)
}

func deleteGroupEventually(t *testing.T, c *ec2.Client, id string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.DeleteSecurityGroup(context.Background(), &ec2.DeleteSecurityGroupInput{GroupId: aws.String(id)})
		if err == nil || strings.Contains(err.Error(), "NotFound") {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("DeleteSecurityGroup %s: %v", id, err)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}
