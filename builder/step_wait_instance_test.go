package builder

import (
	"context"
	"errors"
	"strings"
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

// TestWaitRunningInstanceGone: an instance that ends while it boots is an
// interruption only when EC2 took a spot instance back; every other state
// reason ends the build with its own advice, and an on-demand instance is
// never interrupted.
func TestWaitRunningInstanceGone(t *testing.T) {
	cases := []struct {
		name   string
		spot   bool
		reason string
		want   []string // nil: an *ErrInterrupted
	}{
		{"spot reclaimed", true, reasonSpotTermination, nil},
		{"spot stopped by EC2", true, reasonSpotShutdown, nil},
		{"spot, no reason yet", true, "", nil},
		{"KMS key at launch", true, reasonClientInternal, []string{"spot instance i-0123456789abcdef0 is terminated", "Client.InternalError", "KMS key", "aws ec2 get-ebs-default-kms-key-id --region us-east-2", "kms:CreateGrant", "NixosSdEbsKms", "volume_kms_key_id"}},
		{"volume limit", false, reasonVolumeLimit, []string{"on-demand instance", "EBS volume or storage limit", "volume_size (30 GiB)", "Service Quotas"}},
		{"capacity at launch", true, reasonNoCapacity, []string{"ran out of capacity", "add instance_types"}},
		{"shut itself down", true, reasonInstanceShutdown, []string{"powered itself off", "instance_max_lifetime (3h0m0s)", "orphan_timeout (15m0s)"}},
		{"someone terminated it", true, reasonUserShutdown, []string{"terminated it through the EC2 API", "CloudTrail", "nixos-sd:build-id"}},
		{"on-demand shut down by the user", false, reasonUserShutdown, []string{"on-demand instance", "CloudTrail"}},
		{"on-demand with a spot reason", false, reasonSpotTermination, []string{"on-demand instance", "run the build again"}},
		{"on-demand, no reason", false, "", []string{"EC2 gave no reason"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeEC2()
			f.spotLifecycle, f.stateReason = c.spot, c.reason
			f.instanceState = func(int, string) types.InstanceStateName { return types.InstanceStateNameTerminated }
			e := stepEnv{cfg: testConfig(t, nil), ui: newTestUI(), ec2: f}
			_, err := waitRunning(context.Background(), e, "i-0123456789abcdef0")
			var ierr *ErrInterrupted
			var eerr *ErrInstanceEnded
			if c.want == nil {
				if !errors.As(err, &ierr) {
					t.Fatalf("err = %v, want an interruption", err)
				}
				return
			}
			if !errors.As(err, &eerr) {
				t.Fatalf("err = %v, want *ErrInstanceEnded", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
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
