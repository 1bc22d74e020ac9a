package builder

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"golang.org/x/crypto/ssh"
	"gopkg.in/yaml.v3"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/hostkey"
)

func TestLaunchTemplateShape(t *testing.T) {
	f := newFakeEC2()
	cfg, state, _ := launchState(t, f, map[string]interface{}{
		"run_tags": map[string]string{"Owner": "me"},
		"tags":     map[string]string{"Project": "pi"},
	})
	if action := (&stepLaunchTemplate{}).Run(context.Background(), state); action != multistep.ActionContinue {
		t.Fatalf("launch template halted: %v", stateErr(state))
	}
	lts := inputsOf[*ec2.CreateLaunchTemplateInput](f, "CreateLaunchTemplate")
	if len(lts) != 1 {
		t.Fatalf("CreateLaunchTemplate calls = %d", len(lts))
	}
	d := lts[0].LaunchTemplateData
	if aws.ToString(d.ImageId) != "ami-0123456789abcdef0" {
		t.Errorf("ImageId = %q", aws.ToString(d.ImageId))
	}
	if d.InstanceInitiatedShutdownBehavior != types.ShutdownBehaviorTerminate {
		t.Errorf("shutdown behaviour = %q, want terminate", d.InstanceInitiatedShutdownBehavior)
	}
	if d.MetadataOptions == nil || d.MetadataOptions.HttpTokens != types.LaunchTemplateHttpTokensStateRequired || aws.ToInt32(d.MetadataOptions.HttpPutResponseHopLimit) != 1 {
		t.Errorf("metadata options = %+v, want IMDSv2 required with hop limit 1", d.MetadataOptions)
	}
	if len(d.BlockDeviceMappings) != 1 {
		t.Fatalf("block devices = %+v", d.BlockDeviceMappings)
	}
	bd := d.BlockDeviceMappings[0]
	if aws.ToString(bd.DeviceName) != "/dev/xvda" || bd.Ebs == nil || bd.Ebs.VolumeType != types.VolumeTypeGp3 ||
		!aws.ToBool(bd.Ebs.Encrypted) || !aws.ToBool(bd.Ebs.DeleteOnTermination) || aws.ToInt32(bd.Ebs.VolumeSize) != 30 {
		t.Errorf("root volume = %s %+v, want /dev/xvda gp3 encrypted delete-on-termination 30 GiB", aws.ToString(bd.DeviceName), bd.Ebs)
	}
	if len(d.SecurityGroupIds) != 1 || d.SecurityGroupIds[0] != "sg-0123456789abcdef0" {
		t.Errorf("security groups = %v", d.SecurityGroupIds)
	}
	ud, err := base64.StdEncoding.DecodeString(aws.ToString(d.UserData))
	if err != nil {
		t.Fatalf("user data is not base64: %v", err)
	}
	cc := decodeCloudConfig(t, ud)
	if want := []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBuildKey packer-nixos-sd"}; !slices.Equal(cc.SSHAuthorizedKeys, want) {
		t.Errorf("ssh_authorized_keys = %q, want %q", cc.SSHAuthorizedKeys, want)
	}
	if want := []string{"shutdown", "-P", "+180", "packer-nixos-sd: instance_max_lifetime reached"}; len(cc.RunCmd) != 1 || !slices.Equal(cc.RunCmd[0], want) {
		t.Errorf("runcmd = %q, want [%q]", cc.RunCmd, want)
	}
	checkHostKey(t, state, cc)
	tagsOf := func(rt types.ResourceType) map[string]string {
		m := map[string]string{}
		for _, ts := range d.TagSpecifications {
			if ts.ResourceType == rt {
				for _, tg := range ts.Tags {
					m[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
				}
			}
		}
		return m
	}
	for _, rt := range []types.ResourceType{types.ResourceTypeInstance, types.ResourceTypeVolume} {
		tg := tagsOf(rt)
		if tg[BuildIDTag] != "0190b1a2-test-build-id" || tg["Owner"] != "me" || tg["Project"] != "pi" || tg["Name"] != "packer-nixos-sd-"+cmp.Or(cfg.PackerBuildName, "nixos-sd") {
			t.Errorf("%s tags = %v", rt, tg)
		}
	}
	if len(lts[0].TagSpecifications) != 1 || lts[0].TagSpecifications[0].ResourceType != types.ResourceTypeLaunchTemplate {
		t.Errorf("launch template tags = %+v", lts[0].TagSpecifications)
	}

	if getString(state, stateLaunchTemplate) != "lt-0123456789abcdef0" {
		t.Errorf("launch template id = %q", getString(state, stateLaunchTemplate))
	}
}

func TestLaunchTemplateSubnetAndLifetime(t *testing.T) {
	f := newFakeEC2()
	_, state, _ := launchState(t, f, map[string]interface{}{
		"subnet_id":             "subnet-bbbbbbbb",
		"instance_max_lifetime": "2h30m",
		"build_timeout":         "1h",
		"volume_size":           64,
		"ssh_interface":         "public_ip",
	})
	if action := (&stepLaunchTemplate{}).Run(context.Background(), state); action != multistep.ActionContinue {
		t.Fatalf("launch template halted: %v", stateErr(state))
	}
	d := inputsOf[*ec2.CreateLaunchTemplateInput](f, "CreateLaunchTemplate")[0].LaunchTemplateData
	if len(d.SecurityGroupIds) != 0 || len(d.NetworkInterfaces) != 1 || !aws.ToBool(d.NetworkInterfaces[0].AssociatePublicIpAddress) ||
		aws.ToString(d.NetworkInterfaces[0].SubnetId) != "subnet-bbbbbbbb" ||
		len(d.NetworkInterfaces[0].Groups) != 1 || d.NetworkInterfaces[0].Groups[0] != "sg-0123456789abcdef0" {
		t.Errorf("a chosen subnet needs a network interface with a public address and the group: %+v / %+v", d.SecurityGroupIds, d.NetworkInterfaces)
	}
	if aws.ToInt32(d.BlockDeviceMappings[0].Ebs.VolumeSize) != 64 {
		t.Errorf("volume size = %d", aws.ToInt32(d.BlockDeviceMappings[0].Ebs.VolumeSize))
	}
	ud, _ := base64.StdEncoding.DecodeString(aws.ToString(d.UserData))
	if cc := decodeCloudConfig(t, ud); len(cc.RunCmd) != 1 || len(cc.RunCmd[0]) < 3 || cc.RunCmd[0][2] != "+150" {
		t.Errorf("lifetime cap of 2h30m should be +150 minutes:\n%s", ud)
	}
}

func TestLaunchTemplateCleanup(t *testing.T) {
	f := newFakeEC2()
	_, state, _ := launchState(t, f, nil)
	if action := (&stepLaunchTemplate{}).Run(context.Background(), state); action != multistep.ActionContinue {
		t.Fatalf("launch template halted: %v", stateErr(state))
	}
	(&stepLaunchTemplate{}).Cleanup(state)
	(&stepLaunchTemplate{}).Cleanup(state)
	if n := f.count("DeleteLaunchTemplate"); n != 1 {
		t.Errorf("DeleteLaunchTemplate calls = %d, want 1 (the second cleanup finds nothing left)", n)
	}
	if in := inputsOf[*ec2.DeleteLaunchTemplateInput](f, "DeleteLaunchTemplate")[0]; aws.ToString(in.LaunchTemplateId) != "lt-0123456789abcdef0" {
		t.Errorf("deleted %q", aws.ToString(in.LaunchTemplateId))
	}
}

// decodeCloudConfig reads user data as cloud-init does: the #cloud-config
// header, then YAML.
func decodeCloudConfig(t *testing.T, ud []byte) cloudConfig {
	t.Helper()
	cc, err := parseCloudConfig(ud)
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

func parseCloudConfig(ud []byte) (cloudConfig, error) {
	var cc cloudConfig
	body, ok := bytes.CutPrefix(ud, []byte("#cloud-config\n"))
	if !ok {
		return cc, fmt.Errorf("user data does not start with #cloud-config:\n%s", ud)
	}
	if err := yaml.Unmarshal(body, &cc); err != nil {
		return cc, fmt.Errorf("user data is not YAML: %v\n%s", err, ud)
	}
	return cc, nil
}

// checkHostKey: the user data installs the build's host key, and only it.
func checkHostKey(t *testing.T, state multistep.StateBag, cc cloudConfig) {
	t.Helper()
	pair := state.Get(stateHostKey).(*hostkey.Pair)
	if !cc.SSHDeleteKeys || cc.SSHGenKeyTypes == nil || len(cc.SSHGenKeyTypes) != 0 {
		t.Errorf("ssh_deletekeys = %v, ssh_genkeytypes = %#v; want true and [] so that no other host key is offered", cc.SSHDeleteKeys, cc.SSHGenKeyTypes)
	}
	if cc.SSHKeys == nil {
		t.Fatal("no ssh_keys in the user data")
	}
	if cc.SSHKeys.ED25519Private != string(pair.PrivatePEM) {
		t.Errorf("ed25519_private = %q, want the build's host key", cc.SSHKeys.ED25519Private)
	}
	signer, err := ssh.ParsePrivateKey([]byte(cc.SSHKeys.ED25519Private))
	if err != nil {
		t.Fatalf("ed25519_private does not parse: %v", err)
	}
	if got := hostkey.AuthorizedLine(signer.PublicKey()); got != cc.SSHKeys.ED25519Public || got != hostkey.AuthorizedLine(pair.Public) {
		t.Errorf("ed25519_public = %q, private key's = %q, pinned = %q", cc.SSHKeys.ED25519Public, got, hostkey.AuthorizedLine(pair.Public))
	}
}

func TestLaunchTemplateNeedsHostKey(t *testing.T) {
	f := newFakeEC2()
	_, state, _ := launchState(t, f, nil)
	state.Remove(stateHostKey)
	if action := (&stepLaunchTemplate{}).Run(context.Background(), state); action != multistep.ActionHalt {
		t.Fatal("launched without a host key to pin")
	}
	if n := f.count("CreateLaunchTemplate"); n != 0 {
		t.Errorf("CreateLaunchTemplate calls = %d, want 0", n)
	}
}
