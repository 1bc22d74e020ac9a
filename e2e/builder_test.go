//go:build e2e

package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"gopkg.in/yaml.v3"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// The nixos-sd builder through the real Packer against the test bed: moto's
// EC2 behind the fault proxy, a network namespace with sshd for the instance,
// a stand-in nix. Every test ends with the harness's leak check (startTestbed).

// buildIDTag is builder.BuilderIDTag (the e2e tests import no plugin code
// but the test bed).
const buildIDTag = "nixos-sd:build-id"

// TestBuilderMinimal: a template with only region, ssh_host and
// public_ip_url builds, downloads a verified image and makes the calls the
// documentation promises: a spot instant fleet from a hardened launch
// template, SSH open to this machine only, everything tagged, no AMI.
func TestBuilderMinimal(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	dir := t.TempDir()
	writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "min", ""))
	out, code := bldBuild(t, tb, dir)
	if code != 0 {
		t.Fatalf("packer build exited %d:\n%s", code, out)
	}

	image := filepath.Join(dir, "output-min", bldImageName)
	sum := checkBuiltImage(t, image)
	checkBuilderManifest(t, tb, image, sum)
	// Packer's artifact list names the image (relative to the working directory).
	artifact := "--> nixos-sd.min: NixOS SD image: " + filepath.Join("output-min", bldImageName) + " (sha256 " + sum + ")"
	if !strings.Contains(out, artifact) {
		t.Errorf("packer's output has no artifact line %q:\n%s", artifact, out)
	}
	// The download opened a connection of its own with the builder's
	// credentials (and, the link being short, kept to one).
	if !strings.Contains(out, "Round trip to the host:") || strings.Contains(out, "Could not open another SSH connection") {
		t.Errorf("the download did not open an SSH connection of its own with the builder's credentials:\n%s", out)
	}

	p := tb.Proxy()
	for _, action := range []string{"CreateImage", "RegisterImage", "CopyImage", "CreateSnapshot"} {
		if n := len(p.CallsOf(action)); n > 0 {
			t.Errorf("the build called %s %d time(s); it must not make an AMI", action, n)
		}
	}

	// The launch template.
	lt := onlyCall(t, tb, "CreateLaunchTemplate")
	want := map[string]string{
		"LaunchTemplateData.MetadataOptions.HttpTokens":                   "required",
		"LaunchTemplateData.InstanceInitiatedShutdownBehavior":            "terminate",
		"LaunchTemplateData.BlockDeviceMapping.1.Ebs.Encrypted":           "true",
		"LaunchTemplateData.BlockDeviceMapping.1.Ebs.VolumeType":          "gp3",
		"LaunchTemplateData.BlockDeviceMapping.1.Ebs.DeleteOnTermination": "true",
	}
	for k, v := range want {
		if got := lt.Params[k]; got != v {
			t.Errorf("CreateLaunchTemplate %s = %q, want %q", k, got, v)
		}
	}
	ud := userDataOf(t, lt)
	cc := cloudConfigOf(t, ud)
	if len(cc.SSHAuthorizedKeys) != 1 || !regexp.MustCompile(`^ssh-ed25519 [A-Za-z0-9+/=]+ `).MatchString(cc.SSHAuthorizedKeys[0]) {
		t.Errorf("the user data does not authorize a temporary ed25519 key:\n%s", ud)
	}
	if !strings.HasPrefix(cc.SSHKeys["ed25519_public"], "ssh-ed25519 ") || !strings.Contains(cc.SSHKeys["ed25519_private"], "OPENSSH PRIVATE KEY") {
		t.Errorf("the user data does not give the instance its host key:\n%s", ud)
	}
	// Default instance_max_lifetime: 3h.
	if len(cc.RunCmd) != 1 || len(cc.RunCmd[0]) < 3 || strings.Join(cc.RunCmd[0][:3], " ") != "shutdown -P +180" {
		t.Errorf("the user data does not cap the instance's life at 180 minutes:\n%s", ud)
	}
	if t.Failed() {
		t.Logf("CreateLaunchTemplate parameters:\n%s", formatParams(lt))
	}

	// The fleet: spot, instant, from that template.
	fleet := onlyCall(t, tb, "CreateFleet")
	for k, v := range map[string]string{
		"TargetCapacitySpecification.DefaultTargetCapacityType": "spot",
		"TargetCapacitySpecification.TotalTargetCapacity":       "1",
		"Type": "instant",
	} {
		if got := fleet.Params[k]; got != v {
			t.Errorf("CreateFleet %s = %q, want %q\n%s", k, got, v, formatParams(fleet))
		}
	}

	// SSH open to this machine's address only, on port 22.
	auth := onlyCall(t, tb, "AuthorizeSecurityGroupIngress")
	cidrs := indexedValues(auth.Params, "IpPermissions.1.IpRanges", "CidrIp")
	if len(cidrs) != 1 || cidrs[0] != tb.PublicIP()+"/32" {
		t.Errorf("SSH is open to %q, want only %s/32\n%s", cidrs, tb.PublicIP(), formatParams(auth))
	}
	if auth.Params["IpPermissions.1.FromPort"] != "22" || auth.Params["IpPermissions.1.ToPort"] != "22" {
		t.Errorf("the security group opens ports %s-%s, want 22\n%s", auth.Params["IpPermissions.1.FromPort"], auth.Params["IpPermissions.1.ToPort"], formatParams(auth))
	}
	if _, more := auth.Params["IpPermissions.2.IpProtocol"]; more {
		t.Errorf("the security group gets more than one rule:\n%s", formatParams(auth))
	}

	checkBuildIDTags(t, tb)
	checkInstanceAsLaunched(t, tb)
}

// checkInstanceAsLaunched checks, on the build's (terminated) instance, what
// EC2 made of its launch template: the build's security group only, IMDSv2
// required, shutdown behaviour terminate. The test bed applies launch
// templates as AWS does (moto alone gave the default group, optional IMDS
// tokens and "stop").
func checkInstanceAsLaunched(t *testing.T, tb *testbed.Testbed) {
	t.Helper()
	sg := onlyCall(t, tb, "CreateSecurityGroup")
	moto := tb.MotoClient(bldRegion)
	out, err := moto.DescribeInstances(motoCtx(t), &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("tag-key"), Values: []string{buildIDTag}}}})
	if err != nil {
		t.Fatalf("DescribeInstances: %v", err)
	}
	var insts []types.Instance
	for _, r := range out.Reservations {
		insts = append(insts, r.Instances...)
	}
	if len(insts) != 1 {
		t.Fatalf("%d instances tagged %s, want 1", len(insts), buildIDTag)
	}
	inst := insts[0]
	if len(inst.SecurityGroups) != 1 || aws.ToString(inst.SecurityGroups[0].GroupName) != sg.Params["GroupName"] {
		t.Errorf("the instance's groups are %+v, want only the build's %s", inst.SecurityGroups, sg.Params["GroupName"])
	}
	if inst.MetadataOptions == nil || inst.MetadataOptions.HttpTokens != types.HttpTokensStateRequired {
		t.Errorf("the instance's metadata options %+v, want HttpTokens required", inst.MetadataOptions)
	}
	attr, err := moto.DescribeInstanceAttribute(motoCtx(t), &ec2.DescribeInstanceAttributeInput{InstanceId: inst.InstanceId, Attribute: types.InstanceAttributeNameInstanceInitiatedShutdownBehavior})
	if err != nil || aws.ToString(attr.InstanceInitiatedShutdownBehavior.Value) != "terminate" {
		t.Errorf("the instance's shutdown behaviour %+v (%v), want terminate", attr.InstanceInitiatedShutdownBehavior, err)
	}
}

// TestBuilderMinimalExample: example/minimal, a three-line build, builds
// with nothing but the AWS configuration of the environment (the region
// from AWS_REGION) and the user's own public key, which goes into the image;
// the output says both, and ends with the phase and cost report. On AWS the
// instance's address and this machine's public address are found on their
// own; in the test bed the build block adds them (ssh_host, public_ip_url)
// to the example's source, whose line is kept as it is.
func TestBuilderMinimalExample(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	example := filepath.Join(repoRoot(t), "example", "minimal")
	src, err := os.ReadFile(filepath.Join(example, "build.pkr.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(src)), "\n")
	if len(lines) != 3 || lines[0] != `source "nixos-sd" "pi" {}` || !strings.HasPrefix(lines[2], "build {") {
		t.Fatalf("example/minimal/build.pkr.hcl is not the three-line build the README shows:\n%s", src)
	}
	dir := t.TempDir()
	copyTree(t, example, dir)
	host, port := tb.NextSSHEndpoint()
	writeTemplate(t, dir, "build.pkr.hcl", fmt.Sprintf(`%s

build {
  source "source.nixos-sd.pi" {
    ssh_host      = %q
    ssh_port      = %d
    public_ip_url = %q
  }
}
`, lines[0], host, port, tb.PublicIPURL()))

	home := t.TempDir()
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl pi-owner@laptop"
	writeTemplate(t, home, ".ssh/id_ed25519.pub", key+"\n")
	env := append(tb.Env(), "HOME="+home, "SSH_AUTH_SOCK=")
	out, code := packerRun(t, dir, env, "build", "-color=false", ".")
	checkBuildReport(t, out)
	if code != 0 {
		t.Fatalf("packer build exited %d:\n%s", code, out)
	}
	for _, want := range []string{
		"==> nixos-sd.pi: Using region " + bldRegion + " (region is not set; taken from AWS_REGION)",
		"==> nixos-sd.pi: ssh_authorized_keys is not set: the image lets in your own public keys, as root and nixos, so you can log in at first boot (use_local_ssh_keys = false leaves them out): " + filepath.Join(home, ".ssh", "id_ed25519.pub"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s", want, out)
		}
	}
	image := filepath.Join(dir, "output-pi", bldImageName)
	sum := checkBuiltImage(t, image)
	checkBuilderManifest(t, tb, image, sum)
	if m := readManifest(t, image); m["ssh_authorized_keys"] != float64(1) || m["region"] != bldRegion {
		t.Errorf("the manifest says %v keys in region %v, want the user's key in %s", m["ssh_authorized_keys"], m["region"], bldRegion)
	}
}

// e2eCloudConfig is the part of the builder's cloud-config the tests read.
type e2eCloudConfig struct {
	SSHAuthorizedKeys []string          `yaml:"ssh_authorized_keys"`
	SSHKeys           map[string]string `yaml:"ssh_keys"`
	RunCmd            [][]string        `yaml:"runcmd"`
}

// cloudConfigOf reads user data as cloud-init does: #cloud-config, YAML.
func cloudConfigOf(t *testing.T, ud string) e2eCloudConfig {
	t.Helper()
	body, ok := strings.CutPrefix(ud, "#cloud-config\n")
	if !ok {
		t.Fatalf("the user data is not #cloud-config:\n%s", ud)
	}
	var cc e2eCloudConfig
	if err := yaml.Unmarshal([]byte(body), &cc); err != nil {
		t.Fatalf("the user data is not YAML: %v\n%s", err, ud)
	}
	return cc
}

// userDataOf decodes the user data of a CreateLaunchTemplate call.
func userDataOf(t *testing.T, lt testbed.Call) string {
	t.Helper()
	raw := lt.Params["LaunchTemplateData.UserData"]
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		t.Fatalf("the launch template's user data %q is not base64: %v", raw, err)
	}
	return string(b)
}

// checkBuildIDTags checks that every call creating a resource tags it (and,
// for the launch template, the instance and volume it makes) with the same
// build id.
func checkBuildIDTags(t *testing.T, tb *testbed.Testbed) {
	t.Helper()
	ids := map[string]bool{}
	creates := 0
	for _, c := range tb.Proxy().MutatingCalls() {
		var wantTypes []string
		specs := tagSpecs(c.Params, "")
		switch c.Action {
		case "CreateSecurityGroup":
			wantTypes = []string{"security-group"}
		case "CreateLaunchTemplate":
			wantTypes = []string{"launch-template"}
			for rt, tags := range tagSpecs(c.Params, "LaunchTemplateData.") {
				specs["data:"+rt] = tags
			}
			wantTypes = append(wantTypes, "data:instance", "data:volume")
		case "CreateFleet":
			wantTypes = []string{"fleet"}
		default:
			if strings.HasPrefix(c.Action, "Create") || strings.HasPrefix(c.Action, "Import") || c.Action == "RunInstances" || c.Action == "RequestSpotInstances" {
				t.Errorf("the build called %s, which this test does not expect; check it tags what it creates:\n%s", c.Action, formatParams(c))
			}
			continue
		}
		creates++
		for _, rt := range wantTypes {
			id := specs[rt][buildIDTag]
			if id == "" {
				t.Errorf("%s: no %s tag for %s:\n%s", c.Action, buildIDTag, rt, formatParams(c))
				continue
			}
			ids[id] = true
		}
	}
	if creates < 3 {
		t.Errorf("only %d creating calls in the record, want at least CreateSecurityGroup, CreateLaunchTemplate and CreateFleet:\n%s", creates, tb.Proxy().Summary())
	}
	if len(ids) > 1 {
		t.Errorf("the build tagged its resources with %d different build ids: %v", len(ids), ids)
	}
}

// TestBuilderExample: the checked-in example builds in a chosen region and
// zone; the fleet is offered only that zone's subnets, and the manifest
// post-processor lists the image.
func TestBuilderExample(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	dir := t.TempDir()
	copyTree(t, filepath.Join(repoRoot(t), "example"), dir)
	host, port := tb.NextSSHEndpoint()
	if port != 22 {
		t.Fatalf("the next host answers SSH on port %d; the example has no ssh_port variable", port)
	}
	out, code := packerRun(t, dir, tb.Env(), "build", "-color=false",
		"-var", "region=eu-west-1", "-var", "availability_zone=eu-west-1b",
		"-var", "ssh_host="+host, "-var", "public_ip_url="+tb.PublicIPURL(),
		"nixos-sd.pkr.hcl")
	if code != 0 {
		t.Fatalf("packer build exited %d:\n%s", code, out)
	}
	image := filepath.Join(dir, "output-rpi", bldImageName)
	checkBuiltImage(t, image)

	// The fleet names only subnets of eu-west-1b.
	fleet := onlyCall(t, tb, "CreateFleet")
	if fleet.Region != "eu-west-1" {
		t.Errorf("CreateFleet went to region %q, want eu-west-1", fleet.Region)
	}
	sn, err := tb.MotoClient("eu-west-1").DescribeSubnets(motoCtx(t), &ec2.DescribeSubnetsInput{
		Filters: []types.Filter{{Name: aws.String("availability-zone"), Values: []string{"eu-west-1b"}}},
	})
	if err != nil {
		t.Fatalf("listing the subnets of eu-west-1b: %v", err)
	}
	inZone := map[string]bool{}
	for _, s := range sn.Subnets {
		inZone[aws.ToString(s.SubnetId)] = true
	}
	subnets := indexedValues(fleet.Params, "LaunchTemplateConfigs.1.Overrides", "SubnetId")
	if len(subnets) == 0 {
		t.Errorf("the fleet's overrides name no subnet:\n%s", formatParams(fleet))
	}
	for _, s := range subnets {
		if !inZone[s] {
			t.Errorf("the fleet offers subnet %s, which is not in eu-west-1b (%v):\n%s", s, inZone, formatParams(fleet))
		}
	}
	for _, z := range indexedValues(fleet.Params, "LaunchTemplateConfigs.1.Overrides", "AvailabilityZone") {
		if z != "eu-west-1b" {
			t.Errorf("the fleet offers zone %s, want only eu-west-1b", z)
		}
	}

	// The manifest post-processor.
	b, err := os.ReadFile(filepath.Join(dir, "output-rpi", "packer-manifest.json"))
	if err != nil {
		t.Fatalf("the manifest post-processor's file: %v", err)
	}
	var manifest struct {
		Builds []struct {
			Name        string `json:"name"`
			BuilderType string `json:"builder_type"`
			ArtifactID  string `json:"artifact_id"`
			Files       []struct {
				Name string `json:"name"`
				Size int64  `json:"size"`
			} `json:"files"`
		} `json:"builds"`
	}
	if err := json.Unmarshal(b, &manifest); err != nil {
		t.Fatalf("packer-manifest.json: %v\n%s", err, b)
	}
	if len(manifest.Builds) != 1 || manifest.Builds[0].BuilderType != "nixos-sd" || manifest.Builds[0].Name != "rpi" {
		t.Fatalf("packer-manifest.json does not list one nixos-sd build named rpi:\n%s", b)
	}
	st, err := os.Stat(image)
	if err != nil {
		t.Fatal(err)
	}
	listed := false
	for _, f := range manifest.Builds[0].Files {
		if filepath.Base(f.Name) == bldImageName && f.Size == st.Size() {
			listed = true
		}
	}
	if !listed {
		t.Errorf("packer-manifest.json does not list the image %s (%d bytes):\n%s", bldImageName, st.Size(), b)
	}
}

// TestBuilderPostProcessorsAndOnly: of two sources, -only builds one; the
// checksum and shell-local post-processors get its artifact and its build
// variables. The source also sets instance_max_lifetime, which the user data
// turns into the instance's own shutdown.
func TestBuilderPostProcessorsAndOnly(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	dir := t.TempDir()
	conn := bldConnection(t, tb)
	writeTemplate(t, dir, "build.pkr.hcl", fmt.Sprintf(`%s
source "nixos-sd" "a" {
  region                = %q
%s
  build_timeout         = "60m"
  instance_max_lifetime = "90m"
}

source "nixos-sd" "b" {
  region = %q
%s
}

build {
  sources = ["source.nixos-sd.a", "source.nixos-sd.b"]

  post-processor "checksum" {
    checksum_types = ["sha256"]
    output         = "checksums/{{.BuildName}}_{{.ChecksumType}}.checksum"
  }

  post-processor "shell-local" {
    inline = ["echo PP_BUILD=$PACKER_BUILD_NAME PP_TYPE=$PACKER_BUILDER_TYPE PP_IMAGE=${build.ImagePath} PP_SHA=${build.ImageSHA256} PP_INSTANCE=${build.InstanceID}"]
  }
}
`, bldPluginBlock, bldRegion, conn, bldRegion, conn))
	out, code := bldBuild(t, tb, dir, "-only=nixos-sd.a")
	if code != 0 {
		t.Fatalf("packer build exited %d:\n%s", code, out)
	}
	image := filepath.Join(dir, "output-a", bldImageName)
	sum := checkBuiltImage(t, image)
	if _, err := os.Stat(filepath.Join(dir, "output-b")); !os.IsNotExist(err) {
		t.Errorf("source b was built although -only named a (output-b: %v)", err)
	}
	if strings.Contains(out, "nixos-sd.b:") {
		t.Errorf("packer's output mentions source b:\n%s", out)
	}
	onlyCall(t, tb, "CreateFleet")

	// checksum: one line per artifact file, the image's among them.
	b, err := os.ReadFile(filepath.Join(dir, "checksums", "a_sha256.checksum"))
	if err != nil {
		t.Fatalf("the checksum post-processor's file: %v", err)
	}
	if !regexp.MustCompile(`(?m)^` + sum + `\s+\S*` + regexp.QuoteMeta(bldImageName) + `$`).Match(b) {
		t.Errorf("the checksum file has no line for the image with sha256 %s:\n%s", sum, b)
	}

	// shell-local: the build variables of source a.
	m := regexp.MustCompile(`PP_BUILD=(\S*) PP_TYPE=(\S*) PP_IMAGE=(\S*) PP_SHA=(\S*) PP_INSTANCE=(\S*)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the shell-local post-processor printed nothing:\n%s", out)
	}
	fleetInstance := ""
	if term := tb.Proxy().CallsOf("TerminateInstances"); len(term) > 0 {
		fleetInstance = term[0].Params["InstanceId.1"]
	}
	if m[1] != "a" || m[2] != "nixos-sd" || filepath.Base(m[3]) != bldImageName || m[4] != sum || m[5] == "" || m[5] != fleetInstance {
		t.Errorf("shell-local saw build %q, type %q, image %q, sha256 %q, instance %q; want a, nixos-sd, .../%s, %s, %s",
			m[1], m[2], m[3], m[4], m[5], bldImageName, sum, fleetInstance)
	}

	// The lifetime cap: build_timeout 60m, instance_max_lifetime 90m.
	lt := onlyCall(t, tb, "CreateLaunchTemplate")
	ud := userDataOf(t, lt)
	if cc := cloudConfigOf(t, ud); len(cc.RunCmd) != 1 || len(cc.RunCmd[0]) < 3 || strings.Join(cc.RunCmd[0][:3], " ") != "shutdown -P +90" {
		t.Errorf("the user data does not shut the instance down after 90 minutes, once:\n%s", ud)
	}
	if got := lt.Params["LaunchTemplateData.InstanceInitiatedShutdownBehavior"]; got != "terminate" {
		t.Errorf("InstanceInitiatedShutdownBehavior = %q; a shutdown must terminate the instance", got)
	}
}

// bldFailingConfig is a NixOS configuration the stand-in nix fails to build.
const bldFailingConfig = `{ ... }: {
  # STANDIN_FAIL: the test bed's stand-in nix fails on this text.
  networking.hostName = "broken";
}
`

// TestBuilderBuildFailure: a failing nix build fails the Packer build with
// nix's own error, leaves no image behind and cleans everything up.
func TestBuilderBuildFailure(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	dir := t.TempDir()
	writeTemplate(t, dir, "configuration.nix", bldFailingConfig)
	writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "broken", `  nixos_config = "${path.root}/configuration.nix"`))
	out, code := bldBuild(t, tb, dir)
	if code == 0 {
		t.Fatalf("packer build succeeded although nix failed:\n%s", out)
	}
	flat := normalizeSpace(out)
	for _, want := range []string{
		"building the NixOS SD image on instance i-",
		"error: builder for '/nix/store/",
		"failed with exit code 1",
		"Terminating instance",
	} {
		if !strings.Contains(flat, want) {
			t.Errorf("packer's output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "output-broken", bldImageName)); !os.IsNotExist(err) {
		t.Errorf("a failed build left the image file (%v); entries: %q", err, dirEntries(t, filepath.Join(dir, "output-broken")))
	}
	for _, action := range []string{"TerminateInstances", "DeleteFleets", "DeleteLaunchTemplate", "DeleteSecurityGroup"} {
		if len(tb.Proxy().CallsOf(action)) == 0 {
			t.Errorf("the failed build's cleanup made no %s call", action)
		}
	}
	if strings.Contains(out, "The artifacts of successful builds are") {
		t.Errorf("packer lists an artifact of the failed build:\n%s", out)
	}
}

// TestBuilderPreflightFailures: names that look right but do not exist in
// the region fail before anything is created, naming the option.
func TestBuilderPreflightFailures(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	cases := []struct {
		name, extra string
		want        []string
		noCalls     bool // refused before any EC2 call (by packer's own validation)
	}{
		{"instance type", `  instance_types = ["c7g.huge"]`, []string{"instance_types", `"c7g.huge"`}, false},
		{"zone", `  availability_zone = "us-east-2z"`, []string{"availability_zone", `"us-east-2z"`, "us-east-2a"}, false},
		{"source AMI", `  source_ami = "ami-0123456789abcdef0"`, []string{"source_ami", `"ami-0123456789abcdef0"`, "does not exist"}, false},
		{"x86 type", `  instance_types = ["c5.2xlarge"]`, []string{"instance_types", `"c5.2xlarge"`, "AArch64"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb.Proxy().ResetCalls()
			dir := t.TempDir()
			writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "bad", tc.extra))
			out, code := bldBuild(t, tb, dir)
			if code == 0 {
				t.Fatalf("packer build succeeded:\n%s", out)
			}
			flat := normalizeSpace(out)
			for _, w := range tc.want {
				if !strings.Contains(flat, w) {
					t.Errorf("packer's output lacks %q:\n%s", w, out)
				}
			}
			if m := tb.Proxy().MutatingCalls(); len(m) > 0 {
				t.Errorf("the build made %d changing EC2 call(s) before failing:\n%s", len(m), tb.Proxy().Summary())
			}
			calls := tb.Proxy().Calls()
			if tc.noCalls && len(calls) > 0 {
				t.Errorf("packer's validation should refuse this before any EC2 call; calls:\n%s", tb.Proxy().Summary())
			}
			if !tc.noCalls && len(calls) == 0 {
				t.Errorf("no EC2 call at all: preflight did not run")
			}
			if _, err := os.Stat(filepath.Join(dir, "output-bad")); !os.IsNotExist(err) {
				t.Errorf("a refused build made its output directory (%v)", err)
			}
		})
	}
}

// TestBuilderSpotInterruption: EC2 takes the instance away while nix builds;
// the build stops soon, says the spot instance was interrupted, and cleans up.
func TestBuilderSpotInterruption(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	dir := t.TempDir()
	writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "spot", "  poll_interval = \"1s\"\n  spot_retries  = 0\n"))
	p := startPacker(t, tb, dir)
	h := slowBuildHost(t, tb, p)

	// EC2 reclaims the instance (straight to moto: not the plugin's call).
	if _, err := tb.MotoClient(bldRegion).TerminateInstances(motoCtx(t), &ec2.TerminateInstancesInput{InstanceIds: []string{h.ID}}); err != nil {
		t.Fatalf("terminating %s in moto: %v", h.ID, err)
	}
	out, code, ended := p.wait(60 * time.Second)
	if !ended {
		t.Fatalf("packer was still running 60 s after the instance was terminated:\n%s", out)
	}
	if code == 0 {
		t.Fatalf("packer build succeeded although its instance was terminated:\n%s", out)
	}
	checkBuildReport(t, out)
	flat := normalizeSpace(out)
	for _, want := range []string{"the spot instance was interrupted by EC2", "on_demand_fallback = true"} {
		if !strings.Contains(flat, want) {
			t.Errorf("packer's output lacks %q:\n%s", want, out)
		}
	}
	if got := dirEntries(t, filepath.Join(dir, "output-spot")); len(got) != 0 {
		t.Errorf("an interrupted build left %q in the output directory", got)
	}
}

// TestBuilderCtrlC: Ctrl-C while nix builds stops Packer, which terminates
// the instance and deletes everything it made.
func TestBuilderCtrlC(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	dir := t.TempDir()
	writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "ctrlc", ""))
	p := startPacker(t, tb, dir)
	h := slowBuildHost(t, tb, p)

	// The host let the build in with the temporary key of the user data,
	// the only key the build delivered (it imports no key pair).
	ud := userDataOf(t, onlyCall(t, tb, "CreateLaunchTemplate"))
	var m []string
	if keys := cloudConfigOf(t, ud).SSHAuthorizedKeys; len(keys) == 1 {
		m = regexp.MustCompile(`^(ssh-ed25519 [A-Za-z0-9+/=]+)`).FindStringSubmatch(keys[0])
	}
	if m == nil {
		t.Fatalf("no ed25519 key in the user data:\n%s", ud)
	}
	if keys, err := os.ReadFile(filepath.Join(h.Dir, "home", ".ssh", "authorized_keys")); err != nil || !strings.Contains(string(keys), m[1]) {
		t.Errorf("the host's authorized_keys (%v) lacks the user data's key %s:\n%s", err, m[1], keys)
	}
	if n := len(tb.Proxy().CallsOf("ImportKeyPair")) + len(tb.Proxy().CallsOf("CreateKeyPair")); n > 0 {
		t.Errorf("the build made %d EC2 key pair(s); the key goes in user data only", n)
	}

	if err := p.interrupt(); err != nil {
		t.Fatal(err)
	}
	out, code, ended := p.wait(2 * time.Minute)
	if !ended {
		t.Fatalf("packer was still running 2 minutes after Ctrl-C:\n%s", out)
	}
	if code == 0 {
		t.Fatalf("packer exited 0 after Ctrl-C:\n%s", out)
	}
	checkBuildReport(t, out)
	if want := "Terminating instance " + h.ID; !strings.Contains(out, want) {
		t.Errorf("packer's output lacks %q:\n%s", want, out)
	}
	terminated := false
	for _, c := range tb.Proxy().CallsOf("TerminateInstances") {
		if c.Params["InstanceId.1"] == h.ID && c.Status == 200 {
			terminated = true
		}
	}
	if !terminated {
		t.Errorf("no successful TerminateInstances call for %s:\n%s", h.ID, tb.Proxy().Summary())
	}
	if got := dirEntries(t, filepath.Join(dir, "output-ctrlc")); len(got) != 0 {
		t.Errorf("an interrupted build left %q in the output directory", got)
	}
}

// TestBuilderNoCapacity: when no spot pool has capacity the build fails and
// says what to change, or, with on_demand_fallback, launches on-demand.
func TestBuilderNoCapacity(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	const extra = `  instance_types = ["c7g.2xlarge", "m7g.2xlarge"]
  poll_interval  = "200ms"
`

	t.Run("no fallback", func(t *testing.T) {
		tb.Proxy().ResetCalls()
		tb.Proxy().ClearRules()
		// As EC2 answers an instant fleet: HTTP 200, an error per pool.
		tb.Proxy().AddRule(testbed.Rule{Action: "CreateFleet", PoolErrors: []testbed.PoolError{{ErrorCode: "InsufficientInstanceCapacity", Message: "There is no Spot capacity available that matches your request."}}})
		defer tb.Proxy().ClearRules()
		dir := t.TempDir()
		writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "nocap", extra+"  on_demand_fallback = false\n"))
		out, code := bldBuild(t, tb, dir)
		if code == 0 {
			t.Fatalf("packer build succeeded without capacity:\n%s", out)
		}
		flat := normalizeSpace(out)
		for _, want := range []string{"no spot capacity for c7g.2xlarge, m7g.2xlarge", "add more instance_types", "availability_zone", "on_demand_fallback = true"} {
			if !strings.Contains(flat, want) {
				t.Errorf("packer's output lacks %q:\n%s", want, out)
			}
		}
		fleets := tb.Proxy().CallsOf("CreateFleet")
		if len(fleets) == 0 {
			t.Fatalf("no CreateFleet call")
		}
		for _, c := range fleets {
			if got := c.Params["TargetCapacitySpecification.DefaultTargetCapacityType"]; got != "spot" {
				t.Errorf("CreateFleet #%d asks for %q capacity without on_demand_fallback", c.Seq, got)
			}
		}
		if len(tb.Proxy().CallsOf("DeleteLaunchTemplate")) == 0 || len(tb.Proxy().CallsOf("DeleteSecurityGroup")) == 0 {
			t.Errorf("the launch template or the security group was not deleted:\n%s", tb.Proxy().Summary())
		}
		checkNoLeaks(t, tb)
	})

	t.Run("on-demand fallback", func(t *testing.T) {
		tb.Proxy().ResetCalls()
		tb.Proxy().ClearRules()
		// Every spot attempt fails (stepFleet makes 3), the on-demand one is answered by moto.
		for n := 1; n <= 3; n++ {
			tb.Proxy().AddRule(testbed.Rule{Action: "CreateFleet", Nth: n, PoolErrors: []testbed.PoolError{{ErrorCode: "InsufficientInstanceCapacity"}}})
		}
		defer tb.Proxy().ClearRules()
		dir := t.TempDir()
		writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "ondemand", extra+"  on_demand_fallback = true\n"))
		out, code := bldBuild(t, tb, dir)
		if code != 0 {
			t.Fatalf("packer build exited %d:\n%s", code, out)
		}
		checkBuiltImage(t, filepath.Join(dir, "output-ondemand", bldImageName))
		if !strings.Contains(out, "falling back to on-demand") || !strings.Contains(out, "Launched on-demand instance") {
			t.Errorf("packer's output does not say it fell back to on-demand:\n%s", out)
		}
		fleets := tb.Proxy().CallsOf("CreateFleet")
		if len(fleets) != 4 {
			t.Fatalf("%d CreateFleet calls, want 3 spot and 1 on-demand:\n%s", len(fleets), tb.Proxy().Summary())
		}
		for i, c := range fleets {
			want := "spot"
			if i == 3 {
				want = "on-demand"
			}
			if got := c.Params["TargetCapacitySpecification.DefaultTargetCapacityType"]; got != want {
				t.Errorf("CreateFleet #%d asks for %q capacity, want %q", i+1, got, want)
			}
		}
		last := fleets[3]
		if last.Params["TargetCapacitySpecification.OnDemandTargetCapacity"] != "1" || last.Params["SpotOptions.AllocationStrategy"] != "" {
			t.Errorf("the on-demand request is not an on-demand request:\n%s", formatParams(last))
		}
		if last.Status != 200 {
			t.Errorf("the on-demand CreateFleet was answered %d %s", last.Status, last.ErrorCode)
		}
	})
}
