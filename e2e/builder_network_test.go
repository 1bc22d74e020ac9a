//go:build e2e

package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// The builder's connection modes through the test bed's security groups:
// each host admits only what its instance's groups allow, judged on the
// source AWS would see (internal/testbed/host_firewall.go). These templates
// set no ssh_host: SSH goes to the address ssh_interface picks.

// netTemplate is a template with one nixos-sd source in bldRegion with only
// public_ip_url and extra set.
func netTemplate(tb *testbed.Testbed, name, extra string) string {
	return fmt.Sprintf(`%s
source "nixos-sd" %q {
  region        = %q
  public_ip_url = %q
%s
}

build {
  sources = ["source.nixos-sd.%s"]
}
`, bldPluginBlock, name, bldRegion, tb.PublicIPURL(), extra, name)
}

// TestBuilderPublicIP: the default ssh_interface (public_ip) reaches the
// instance's public address, where the group the builder wrote admits this
// machine's public address.
func TestBuilderPublicIP(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	dir := t.TempDir()
	writeTemplate(t, dir, "build.pkr.hcl", netTemplate(tb, "pub", ""))
	out, code := bldBuild(t, tb, dir)
	if code != 0 {
		t.Fatalf("packer build exited %d:\n%s", code, out)
	}
	checkBuiltImage(t, filepath.Join(dir, "output-pub", bldImageName))
}

// TestBuilderSourceCIDRsAdmitThisMachine: ssh_source_cidrs naming a range
// this machine's public address is in works like the default.
func TestBuilderSourceCIDRsAdmitThisMachine(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	dir := t.TempDir()
	ip := strings.Split(tb.PublicIP(), ".")
	writeTemplate(t, dir, "build.pkr.hcl", netTemplate(tb, "cidr", fmt.Sprintf("  ssh_source_cidrs = [\"%s.%s.%s.0/24\"]", ip[0], ip[1], ip[2])))
	out, code := bldBuild(t, tb, dir)
	if code != 0 {
		t.Fatalf("packer build exited %d:\n%s", code, out)
	}
	checkBuiltImage(t, filepath.Join(dir, "output-cidr", bldImageName))
}

// TestBuilderPrivateIP: ssh_interface = "private_ip" from a machine inside
// the VPC. AWS judges such a connection on the caller's VPC address, not on
// its public one, so the group must admit the VPC; a group admitting only
// this machine's public address times out.
func TestBuilderPrivateIP(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	dir := t.TempDir()
	writeTemplate(t, dir, "build.pkr.hcl", netTemplate(tb, "priv", `  ssh_interface = "private_ip"
  ssh_timeout   = "30s"`))
	out, code := bldBuild(t, tb, dir)
	if code != 0 {
		t.Fatalf("packer build exited %d:\n%s", code, out)
	}
	checkBuiltImage(t, filepath.Join(dir, "output-priv", bldImageName))
	// This machine is inside the default VPC (its route to the VPC leaves
	// from a VPC address): nothing to warn of.
	if !strings.Contains(out, "SSH will be allowed from the VPC") || strings.Contains(out, "set ssh_source_cidrs") {
		t.Errorf("a build from inside the VPC does not say SSH is allowed from it, or warns:\n%s", out)
	}
	auth := onlyCall(t, tb, "AuthorizeSecurityGroupIngress")
	cidrs := indexedValues(auth.Params, "IpPermissions.1.IpRanges", "CidrIp")
	vpcs, err := tb.MotoClient(bldRegion).DescribeVpcs(motoCtx(t), &ec2.DescribeVpcsInput{Filters: []types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}}})
	if err != nil || len(vpcs.Vpcs) != 1 {
		t.Fatalf("default VPC: %v", err)
	}
	if want := aws.ToString(vpcs.Vpcs[0].CidrBlock); len(cidrs) != 1 || cidrs[0] != want {
		t.Errorf("with ssh_interface = private_ip SSH is open to %v, want the VPC %s", cidrs, want)
	}
}

// TestBuilderBastion: ssh_interface = "private_ip" through a bastion, an
// instance of the same VPC reached at its public address. The instance's
// group must admit the bastion's private address.
func TestBuilderBastion(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	ctx := motoCtx(t)
	c := tb.EC2Client(bldRegion)
	moto := tb.MotoClient(bldRegion)

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "bastion")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "bastion_key")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	authorized := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))

	vpcs, err := moto.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}}})
	if err != nil || len(vpcs.Vpcs) != 1 {
		t.Fatalf("default VPC: %v", err)
	}
	sg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("bastion"), Description: aws.String("bastion"), VpcId: vpcs.Vpcs[0].VpcId})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: sg.GroupId, IpPermissions: []types.IpPermission{{
		IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22), IpRanges: []types.IpRange{{CidrIp: aws.String(tb.PublicIP() + "/32")}}}}}); err != nil {
		t.Fatal(err)
	}
	images, err := moto.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"136693071363"}, Filters: []types.Filter{{Name: aws.String("architecture"), Values: []string{"arm64"}}}})
	if err != nil || len(images.Images) == 0 {
		t.Fatalf("a Debian image for the bastion: %v", err)
	}
	run, err := c.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: images.Images[0].ImageId, InstanceType: types.InstanceTypeC7g2xlarge, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		SecurityGroupIds: []string{aws.ToString(sg.GroupId)},
		UserData:         aws.String(base64.StdEncoding.EncodeToString([]byte("#cloud-config\nssh_authorized_keys:\n  - \"" + authorized + "\"\n"))),
	})
	if err != nil {
		t.Fatal(err)
	}
	bastionID := aws.ToString(run.Instances[0].InstanceId)
	// Registered after startTestbed's: runs before its leak check.
	t.Cleanup(func() {
		bg := context.Background()
		moto.TerminateInstances(bg, &ec2.TerminateInstancesInput{InstanceIds: []string{bastionID}})
		for i := 0; i < 100; i++ {
			if _, err := moto.DeleteSecurityGroup(bg, &ec2.DeleteSecurityGroupInput{GroupId: sg.GroupId}); err == nil || strings.Contains(err.Error(), "NotFound") {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Errorf("could not delete the bastion's group %s", aws.ToString(sg.GroupId))
	})
	var bastionIP string
	for deadline := time.Now().Add(time.Minute); ; {
		out, err := moto.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{bastionID}})
		if err == nil && out.Reservations[0].Instances[0].State.Name == types.InstanceStateNameRunning {
			bastionIP = aws.ToString(out.Reservations[0].Instances[0].PublicIpAddress)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bastion %s does not run; watcher errors %v", bastionID, tb.WatcherErrors())
		}
		time.Sleep(100 * time.Millisecond)
	}

	dir := t.TempDir()
	writeTemplate(t, dir, "build.pkr.hcl", netTemplate(tb, "bastion", fmt.Sprintf(`  ssh_interface                = "private_ip"
  ssh_bastion_host             = %q
  ssh_bastion_username         = "admin"
  ssh_bastion_private_key_file = %q
  ssh_timeout                  = "30s"`, bastionIP, keyFile)))
	out, code := bldBuild(t, tb, dir)
	if code != 0 {
		t.Fatalf("packer build through the bastion %s exited %d:\n%s", bastionIP, code, out)
	}
	checkBuiltImage(t, filepath.Join(dir, "output-bastion", bldImageName))
}

// TestBuilderDNSNames: ssh_interface = "public_dns" and "private_dns" reach
// the instance by the names EC2 gives it (resolved through the test bed's
// hosts file, as AWS's DNS resolves them), judged like the addresses.
func TestBuilderDNSNames(t *testing.T) {
	for _, iface := range []string{"public_dns", "private_dns"} {
		t.Run(iface, func(t *testing.T) {
			tb := startTestbed(t, testbed.Options{})
			dir := t.TempDir()
			writeTemplate(t, dir, "build.pkr.hcl", netTemplate(tb, "dns", fmt.Sprintf("  ssh_interface = %q\n  ssh_timeout   = \"30s\"", iface)))
			out, code := bldBuild(t, tb, dir)
			if code != 0 {
				t.Fatalf("packer build exited %d:\n%s", code, out)
			}
			checkBuiltImage(t, filepath.Join(dir, "output-dns", bldImageName))
			if strings.Contains(out, "set ssh_source_cidrs") {
				t.Errorf("a build from inside the VPC warns:\n%s", out)
			}
		})
	}
}
