package builder

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
)

func TestWaitRunningPollsUntilRunning(t *testing.T) {
	f := newFakeEC2()
	f.instanceState = func(n int, id string) types.InstanceStateName {
		if n < 4 {
			return types.InstanceStateNamePending
		}
		return types.InstanceStateNameRunning
	}
	cfg := testConfig(t, nil)
	e := stepEnv{cfg: cfg, ui: newTestUI(), ec2: f}
	inst, err := waitRunning(context.Background(), e, "i-0123456789abcdef0")
	if err != nil {
		t.Fatal(err)
	}
	if inst.State.Name != types.InstanceStateNameRunning || f.count("DescribeInstances") != 4 {
		t.Errorf("state %s after %d polls", inst.State.Name, f.count("DescribeInstances"))
	}
}

func TestWaitRunningInstanceGone(t *testing.T) {
	f := newFakeEC2()
	f.instanceState = func(int, string) types.InstanceStateName { return types.InstanceStateNameTerminated }
	e := stepEnv{cfg: testConfig(t, nil), ui: newTestUI(), ec2: f}
	_, err := waitRunning(context.Background(), e, "i-0123456789abcdef0")
	var ierr *ErrInterrupted
	if !errors.As(err, &ierr) {
		t.Fatalf("err = %v, want an interruption", err)
	}
}

func TestWaitRunningTimesOut(t *testing.T) {
	f := newFakeEC2()
	f.instanceState = func(int, string) types.InstanceStateName { return types.InstanceStateNamePending }
	e := stepEnv{cfg: testConfig(t, map[string]interface{}{"state_timeout": "30ms"}), ui: newTestUI(), ec2: f}
	if _, err := waitRunning(context.Background(), e, "i-0123456789abcdef0"); err == nil {
		t.Fatal("no timeout")
	}
}

func TestInstanceAddressAndHost(t *testing.T) {
	inst := types.Instance{
		PublicIpAddress: aws.String("203.0.113.10"), PrivateIpAddress: aws.String("172.31.0.10"),
		PublicDnsName: aws.String("pub.example"), PrivateDnsName: aws.String("priv.example"),
	}
	for iface, want := range map[string]string{"public_ip": "203.0.113.10", "private_ip": "172.31.0.10", "public_dns": "pub.example", "private_dns": "priv.example"} {
		if got := instanceAddress(inst, iface); got != want {
			t.Errorf("%s: %q, want %q", iface, got, want)
		}
	}
}

func TestWaitInstanceNoAddress(t *testing.T) {
	f := newFakeEC2()
	cfg := testConfig(t, map[string]interface{}{"ssh_interface": "private_dns"})
	state, _ := testState(cfg, f)
	state.Put(stateInstanceID, "i-0123456789abcdef0")
	if (&stepWaitInstance{}).Run(context.Background(), state) != multistep.ActionHalt {
		t.Fatal("connected without an address")
	}
	if getString(state, stateZone) != "us-east-2a" || getString(state, stateInstanceType) != "c7g.2xlarge" {
		t.Error("instance type and zone not taken from the running instance")
	}
}
