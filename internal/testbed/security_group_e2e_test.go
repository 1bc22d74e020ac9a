//go:build e2e

package testbed

import (
	"bufio"
	"context"
	"encoding/base64"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// sshBanner connects to addr:22 and reads sshd's banner; false when the
// connection times out (a security group drops what it does not allow).
func sshBanner(addr string) (bool, error) {
	c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, "22"), 1500*time.Millisecond)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return false, nil
		}
		return false, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return false, err
	}
	return strings.HasPrefix(line, "SSH-2.0-"), nil
}

// eventually polls sshBanner until it gives want (a rule change applies
// within the watcher's poll).
func eventually(t *testing.T, what, addr string, want bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, err := sshBanner(addr)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (%s:22): reachable=%v (%v), want %v", what, addr, got, err, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestSecurityGroupsJudgeTheSourceAWSSees: an instance's host admits only
// what its security group allows, judged on the source AWS would see: the
// caller's public address for connections to the public address (and to
// NSAddr), an address of the VPC for connections to the private address;
// rule changes apply to new connections. The old test bed accepted every
// connection whatever the group said.
func TestSecurityGroupsJudgeTheSourceAWSSees(t *testing.T) {
	dumpOnFailure(t)
	ctx := testCtx(t)
	region := "us-east-2"
	c := tb.EC2Client(region)
	moto := tb.MotoClient(region)
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	vpcs, err := moto.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}}})
	if err != nil || len(vpcs.Vpcs) != 1 {
		t.Fatalf("default VPC: %v", err)
	}
	vpcID, vpcCIDR := aws.ToString(vpcs.Vpcs[0].VpcId), aws.ToString(vpcs.Vpcs[0].CidrBlock)
	sg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("sg-" + suffix), Description: aws.String("testbed"), VpcId: aws.String(vpcID)})
	if err != nil {
		t.Fatal(err)
	}
	groupID := aws.ToString(sg.GroupId)
	t.Cleanup(func() { deleteGroupEventually(t, c, groupID) })
	ssh22 := func(cidr string) []types.IpPermission {
		return []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22), IpRanges: []types.IpRange{{CidrIp: aws.String(cidr)}}}}
	}
	if _, err := c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: sg.GroupId, IpPermissions: ssh22(tb.PublicIP() + "/32")}); err != nil {
		t.Fatal(err)
	}
	run, err := c.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(newestImage(t, region, "debian-13-arm64-")), InstanceType: types.InstanceTypeC7g2xlarge,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SecurityGroupIds: []string{groupID},
		UserData: aws.String(base64.StdEncoding.EncodeToString([]byte("#cloud-config\n"))),
	})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(run.Instances[0].InstanceId)
	t.Cleanup(func() {
		moto.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		waitHostGone(t, id)
	})
	deadline := time.Now().Add(60 * time.Second)
	var inst types.Instance
	for {
		inst = describeInstance(t, moto, id)
		if inst.State.Name == types.InstanceStateNameRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s still %s; watcher errors %v", id, inst.State.Name, tb.WatcherErrors())
		}
		time.Sleep(100 * time.Millisecond)
	}
	h, ok := tb.Hosts().Host(id)
	if !ok {
		t.Fatalf("no host for running %s", id)
	}
	public, private := aws.ToString(inst.PublicIpAddress), aws.ToString(inst.PrivateIpAddress)
	if public == "" || private == "" {
		t.Fatalf("instance addresses public %q private %q", public, private)
	}
	// RunInstances without a subnet launches into a default subnet (plain
	// moto: EC2-Classic, a 10.x address in no VPC).
	if _, vpcNet, _ := net.ParseCIDR(vpcCIDR); !vpcNet.Contains(net.ParseIP(private)) || aws.ToString(inst.SubnetId) == "" {
		t.Errorf("private address %s (subnet %q) is not in the default VPC %s", private, aws.ToString(inst.SubnetId), vpcCIDR)
	}

	// From this machine to the public address: the caller's public address.
	eventually(t, "public address, group allows the caller", public, true)
	eventually(t, "NSAddr, group allows the caller", h.NSAddr, true)
	// To the private address: a VPC address, which the group does not allow.
	eventually(t, "private address, group allows only the caller's public address", private, false)

	// Allow the VPC: the private address answers; the public one still does.
	if _, err := c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: sg.GroupId, IpPermissions: ssh22(vpcCIDR)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "private address, group allows the VPC", private, true)
	// Revoke the caller: the public address and NSAddr stop answering.
	if _, err := c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: sg.GroupId, IpPermissions: ssh22(tb.PublicIP() + "/32")}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "public address, caller revoked", public, false)
	eventually(t, "NSAddr, caller revoked", h.NSAddr, false)
	eventually(t, "private address, VPC still allowed", private, true)
	if errs := tb.WatcherErrors(); len(errs) > 0 {
		t.Errorf("watcher errors: %v", errs)
	}
}
