package builder

import (
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

func TestNetworkDefaultVPCPools(t *testing.T) {
	f := newFakeEC2()
	_, state, _ := launchState(t, f, map[string]interface{}{"instance_types": []string{"c7g.2xlarge", "m7g.2xlarge"}})
	state.Remove(stateVpcID)
	if (&stepNetwork{}).Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatalf("halted: %v", stateErr(state))
	}
	if got := getString(state, stateVpcID); got != "vpc-0123456789abcdef0" {
		t.Errorf("VPC = %q, want the default VPC", got)
	}
	if in := inputsOf[*ec2.DescribeSubnetsInput](f, "DescribeSubnets")[0]; len(filterValues(in.Filters, "default-for-az")) != 1 {
		t.Errorf("the default VPC's subnets are not limited to the default ones: %+v", in.Filters)
	}
	pools, _ := state.Get(statePools).([]pool)
	var pairs []string
	for _, p := range pools {
		pairs = append(pairs, p.instanceType+"@"+p.zone)
	}
	// m7g.2xlarge is not offered in us-east-2c: that pair is left out.
	want := "c7g.2xlarge@us-east-2a c7g.2xlarge@us-east-2b c7g.2xlarge@us-east-2c m7g.2xlarge@us-east-2a m7g.2xlarge@us-east-2b"
	if got := strings.Join(pairs, " "); got != want {
		t.Errorf("pools = %s\nwant    %s", got, want)
	}
}

func TestNetworkSubnetID(t *testing.T) {
	f := newFakeEC2()
	_, state, _ := launchState(t, f, map[string]interface{}{"subnet_id": "subnet-bbbbbbbb", "instance_types": []string{"c7g.2xlarge"}})
	state.Remove(stateVpcID)
	if (&stepNetwork{}).Run(context.Background(), state) != multistep.ActionContinue {
		t.Fatalf("halted: %v", stateErr(state))
	}
	if f.count("DescribeVpcs") != 0 {
		t.Error("looked up the default VPC although subnet_id was given")
	}
	if got := getString(state, stateVpcID); got != "vpc-0123456789abcdef0" {
		t.Errorf("VPC = %q, want the subnet's", got)
	}
	if pools, _ := state.Get(statePools).([]pool); len(pools) != 1 || pools[0].subnetID != "subnet-bbbbbbbb" {
		t.Errorf("pools = %+v", pools)
	}
}

func TestNetworkNoDefaultVPC(t *testing.T) {
	f := newFakeEC2()
	f.defaultVpc = ""
	cfg := testConfig(t, nil)
	state, _ := testState(cfg, f)
	if (&stepNetwork{}).Run(context.Background(), state) != multistep.ActionHalt {
		t.Fatal("passed")
	}
	if msg := stateErr(state).Error(); !strings.Contains(msg, "no default VPC") || !strings.Contains(msg, "subnet_id") {
		t.Errorf("error = %q", msg)
	}
}

func TestNetworkVPCWithoutPublicSubnets(t *testing.T) {
	f := newFakeEC2()
	for i := range f.subnets {
		f.subnets[i].MapPublicIpOnLaunch = aws.Bool(false)
	}
	_, state, _ := launchState(t, f, map[string]interface{}{"vpc_id": "vpc-0123456789abcdef0"})
	if (&stepNetwork{}).Run(context.Background(), state) != multistep.ActionHalt {
		t.Fatal("launched where SSH cannot reach")
	}
	if msg := stateErr(state).Error(); !strings.Contains(msg, "assigns public addresses") || !strings.Contains(msg, "subnet_id") {
		t.Errorf("error = %q", msg)
	}
	if f.count("CreateFleet") != 0 {
		t.Error("requested an instance anyway")
	}
}
