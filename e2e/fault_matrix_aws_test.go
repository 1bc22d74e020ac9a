//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// Rows of the fault matrix where the test bed behaves as AWS does and moto
// alone does not: why an instance ended (its state reason), encrypted
// volumes, and the other AWS behaviours of docs/reliability.md's
// "AWS as it is" section.

// endInstance ends the build's instance, once its host is up, the way EC2
// does for state reason code (stop: stopped instead of terminated).
func endInstance(code string, stop bool, spotStatus string) func(*testing.T, *testbed.Testbed, *bgPacker) {
	return func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
		h := firstHost(t, tb, p)
		if err := tb.EndInstance(motoCtx(t), bldRegion, h.ID, code, stop, spotStatus); err != nil {
			t.Fatalf("ending %s with %s: %v", h.ID, code, err)
		}
	}
}

// poweroffNix is a nix that powers the instance off, through sudo as the
// build's user may not (the stand-in records it; the test bed's watcher
// then ends the instance as EC2 does).
const poweroffNix = `#!/bin/bash
if [ "${1:-}" = --version ]; then echo "nix (Nix) 2.28.3"; exit 0; fi
sudo -n poweroff
sleep 600 &
wait
`

// notRetried checks the build did not start again on a new instance.
func notRetried(t *testing.T, _ *testbed.Testbed, out string) {
	t.Helper()
	if strings.Contains(out, "Starting the build again") || strings.Contains(out, "interrupted by EC2") {
		t.Errorf("the build took the instance's end for a spot interruption:\n%s", out)
	}
}

func awsScenarios() []scenario {
	return append([]scenario{
		// --- Why the instance ended: one row per state reason. ---
		{name: "spot stopped by EC2 (Server.SpotInstanceShutdown)", during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
			h := firstHost(t, tb, p)
			if err := tb.EndInstance(motoCtx(t), bldRegion, h.ID, "Server.SpotInstanceShutdown", true, "instance-stopped-no-capacity"); err != nil {
				t.Fatal(err)
			}
		}, want: retried, output: []string{"was interrupted by EC2"}, check: func(t *testing.T, _ *testbed.Testbed, out string) {
			// The watcher sees the stopped instance's reason, or the request's
			// status first when it looked at the instance just before.
			if !strings.Contains(out, "Server.SpotInstanceShutdown") && !strings.Contains(out, "instance-stopped-no-capacity") {
				t.Errorf("the interruption names neither the state reason nor the request's status:\n%s", out)
			}
		}},
		{name: "KMS key unusable at launch (Client.InternalError)", extra: "  volume_kms_key_id = \"" + testbed.DisabledKeyAlias + "\"\n",
			want: failedSayingSo, output: []string{"Client.InternalError", "KMS key", "volume_kms_key_id \"" + testbed.DisabledKeyAlias + "\"", "kms:CreateGrant", "NixosSdEbsKms"},
			check: notRetried},
		{name: "volume limit at launch (Client.VolumeLimitExceeded)", during: endInstance("Client.VolumeLimitExceeded", false, ""),
			want: failedSayingSo, output: []string{"Client.VolumeLimitExceeded", "EBS volume or storage limit", "volume_size (30 GiB)"}, check: notRetried},
		{name: "no capacity at launch (Server.InsufficientInstanceCapacity)", during: endInstance("Server.InsufficientInstanceCapacity", false, ""),
			want: failedSayingSo, output: []string{"Server.InsufficientInstanceCapacity", "ran out of capacity", "add instance_types"}, check: notRetried},
		{name: "instance powered itself off (Client.InstanceInitiatedShutdown)", during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
			h := firstHost(t, tb, p)
			if err := os.WriteFile(filepath.Join(h.Dir, "bin", "nix"), []byte(poweroffNix), 0o755); err != nil {
				t.Fatal(err)
			}
		}, want: failedSayingSo, output: []string{"Client.InstanceInitiatedShutdown", "powered itself off", "instance_max_lifetime", "orphan_timeout"}, check: notRetried},
		{name: "someone terminated the instance (Client.UserInitiatedShutdown)", during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
			h := firstHost(t, tb, p)
			if _, err := tb.MotoClient(bldRegion).TerminateInstances(motoCtx(t), &ec2.TerminateInstancesInput{InstanceIds: []string{h.ID}}); err != nil {
				t.Fatal(err)
			}
		}, want: failedSayingSo, output: []string{"Client.UserInitiatedShutdown", "terminated it through the EC2 API", "CloudTrail"}, check: notRetried},
		{name: "on-demand instance terminated is not an interruption", extra: "  on_demand_fallback = true\n",
			rules: []testbed.Rule{{Action: "CreateFleet", Nth: 1, PoolErrors: []testbed.PoolError{poolErr("", "MaxSpotInstanceCountExceeded")}}},
			during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
				h := firstHost(t, tb, p)
				if err := tb.EndInstance(motoCtx(t), bldRegion, h.ID, "Server.ScheduledStop", true, ""); err != nil {
					t.Fatal(err)
				}
			}, want: failedSayingSo, output: []string{"Launched on-demand instance", "on-demand instance i-", "is stopped", "Server.ScheduledStop"}, check: notRetried},
		{name: "volume encrypted with volume_kms_key_id", extra: "  volume_kms_key_id = \"" + testbed.EBSKeyAlias + "\"\n",
			want: succeeded, check: func(t *testing.T, tb *testbed.Testbed, _ string) {
				c := onlyPluginCall(t, tb, "CreateLaunchTemplate")
				if got := c.Params["LaunchTemplateData.BlockDeviceMapping.1.Ebs.KmsKeyId"]; got != testbed.EBSKeyAlias {
					t.Errorf("the launch template's volume names KMS key %q, want %q", got, testbed.EBSKeyAlias)
				}
			}},
	}, lostAnswerRows()...)
}

// noCalls checks the build made no AWS call at all (refused at validation).
func noCalls(t *testing.T, tb *testbed.Testbed, _ string) {
	t.Helper()
	if n := len(tb.Proxy().Calls()); n != 0 {
		t.Errorf("%d AWS calls; the configuration should be refused before any", n)
	}
}

// onlyPluginCall is the plugin's one call of action.
func onlyPluginCall(t *testing.T, tb *testbed.Testbed, action string) testbed.Call {
	t.Helper()
	calls := pluginCalls(tb, action)
	if len(calls) != 1 {
		t.Fatalf("%d %s calls by the plugin, want 1", len(calls), action)
	}
	return calls[0]
}

// onlyOneInstance checks the build's CreateFleet requests launched exactly
// one instance in EC2, and that it is terminated: a retry with the lost
// request's client token got the first answer (the test bed honours client
// tokens as EC2 does) instead of a second instance.
func onlyOneInstance(t *testing.T, tb *testbed.Testbed, calls []testbed.Call) {
	t.Helper()
	if len(calls) == 0 {
		t.Fatal("no CreateFleet call")
	}
	if last := calls[len(calls)-1]; len(calls) > 1 && !last.Repeated {
		t.Errorf("the retried CreateFleet reached moto; EC2 answers a repeated client token with the first answer")
	}
	// The client token is "<build id>-r<round>-a<attempt>".
	token := calls[0].Params["ClientToken"]
	buildID := token[:strings.LastIndex(token[:strings.LastIndex(token, "-")], "-")]
	out, err := tb.MotoClient(bldRegion).DescribeInstances(motoCtx(t), &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("tag:" + buildIDTag), Values: []string{buildID}}}})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			ids = append(ids, aws.ToString(i.InstanceId))
			if i.State == nil || i.State.Name != types.InstanceStateNameTerminated {
				t.Errorf("instance %s is %v, want terminated", aws.ToString(i.InstanceId), i.State)
			}
		}
	}
	if len(ids) != 1 {
		t.Errorf("the build launched %d instances (%v), want exactly 1", len(ids), ids)
	}
}

// lostAnswerRows: requests whose answer never arrives, retried by the SDK;
// regions and partitions; request-wide errors.
func lostAnswerRows() []scenario {
	return []scenario{
		{name: "region not enabled for the account (opt-in)", region: "ap-east-1",
			want: failedSayingSo, output: []string{`region: "ap-east-1" is not enabled for account`, "AuthFailure", "STS in us-east-1", "aws account enable-region --region-name ap-east-1"},
			check: func(t *testing.T, tb *testbed.Testbed, out string) {
				noCreates(t, tb, out)
				if n := len(pluginCalls(tb, "GetCallerIdentity")); n != 1 {
					t.Errorf("%d GetCallerIdentity calls, want 1 (STS tells a region not enabled from wrong credentials)", n)
				}
			}},
		{name: "China region without source_ami", region: "cn-north-1",
			want: failedSayingSo, output: []string{"source_ami: required in region cn-north-1", "partition aws-cn"}, check: noCalls},
		{name: "GovCloud region without source_ami", region: "us-gov-west-1",
			want: failedSayingSo, output: []string{"source_ami: required in region us-gov-west-1", "partition aws-us-gov"}, check: noCalls},
		{name: "the same invalid parameter in every pool: the request is wrong",
			rules: []testbed.Rule{{Action: "CreateFleet", PoolErrors: []testbed.PoolError{{ErrorCode: "InvalidParameterValue",
				Message: "Volume of size 4GB is smaller than snapshot 'snap-0123456789abcdef0', expect size >= 8GB"}}}},
			want: failedSayingSo, output: []string{"EC2 refused the launch request itself, alike in every pool", "smaller than snapshot", "check volume_size"},
			check: func(t *testing.T, tb *testbed.Testbed, out string) {
				if n := len(pluginCalls(tb, "CreateFleet")); n != 1 {
					t.Errorf("%d CreateFleet calls, want 1: leaving pools out cannot mend the request", n)
				}
				if strings.Contains(out, "Leaving out") || strings.Contains(out, "in any pool") {
					t.Errorf("the request's error was blamed on the pools:\n%s", out)
				}
			}},
		// The test bed's spot prices are of the size AWS shows (0.30 to 0.45
		// of the on-demand price): a spot_price of a cent is below every
		// pool, where moto's $0.00001 was below none.
		{name: "spot_price below every pool's current price", extra: "  spot_price = \"0.01\"\n",
			want: failedSayingSo, output: []string{"spot_price: 0.01 is below the current price of every spot pool of instance_types", "raise spot_price to at least"},
			check: func(t *testing.T, tb *testbed.Testbed, out string) {
				noCreates(t, tb, out)
				m := regexp.MustCompile(`the cheapest: (c7g|m7g)\.2xlarge in us-east-2[a-c] at \$([0-9.]+)/h`).FindStringSubmatch(normalizeSpace(out))
				if m == nil {
					t.Fatalf("the refusal names no pool and its price:\n%s", out)
				}
				// c7g.2xlarge is $0.29/h on demand: its spot price is about a third.
				if p, err := strconv.ParseFloat(m[2], 64); err != nil || p < 0.07 || p > 0.15 {
					t.Errorf("the cheapest spot price %s is not of the size AWS shows (a third or so of $0.29)", m[2])
				}
			}},
		{name: "CreateLaunchTemplate answer lost", rules: []testbed.Rule{{Action: "CreateLaunchTemplate", Nth: 1, DropAnswer: true}},
			want: succeeded, check: func(t *testing.T, tb *testbed.Testbed, _ string) {
				calls := pluginCalls(tb, "CreateLaunchTemplate")
				if len(calls) != 2 || calls[0].Params["ClientToken"] == "" || calls[1].Params["ClientToken"] != calls[0].Params["ClientToken"] || !calls[1].Repeated {
					t.Errorf("want the SDK's retry with the same client token answered with the first template; got %+v", calls)
				}
			}},
		{name: "CreateSecurityGroup answer lost", rules: []testbed.Rule{{Action: "CreateSecurityGroup", Nth: 1, DropAnswer: true}},
			want: succeeded, check: func(t *testing.T, tb *testbed.Testbed, _ string) {
				calls := pluginCalls(tb, "CreateSecurityGroup")
				if len(calls) != 2 || calls[1].ErrorCode != "InvalidGroup.Duplicate" {
					t.Errorf("want the SDK's retry answered InvalidGroup.Duplicate (the API has no client token); got %+v", calls)
				}
			}},
	}
}
