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

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
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
// template, SSH open to this machine only, everything tagged, no AMI. The
// nixpkgs channel moves to a new release while the image builds: the build
// uses, and the manifest names, the release the channel pointed at before.
func TestBuilderMinimal(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	dir := t.TempDir()
	writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "min", ""))
	before := tb.Channels().ReleaseURL(payload.DefaultNixpkgs)
	pk := startPacker(t, tb, dir)
	h := firstHost(t, tb, pk)
	building := func() bool {
		calls, _ := h.StandInCalls()
		for _, c := range calls {
			if strings.HasPrefix(c, "nix build ") {
				return true
			}
		}
		return false
	}
	if !pk.waitFor(3*time.Minute, building) {
		t.Fatal("the build never ran nix build on the host")
	}
	moved := tb.Channels().Advance(payload.DefaultNixpkgs)
	out, code, ok := pk.wait(5 * time.Minute)
	checkBuildReport(t, out)
	if !ok || code != 0 {
		t.Fatalf("packer build exited %d (ended: %v):\n%s", code, ok, out)
	}
	calls, _ := h.StandInCalls()
	if joined := strings.Join(calls, "\n"); !strings.Contains(joined, "nixpkgs="+before+"/nixexprs.tar.xz") {
		t.Errorf("the build did not use the release %s the channel named before it:\n%s", before, joined)
	}

	image := filepath.Join(dir, "output-min", bldImageName)
	sum := checkBuiltImage(t, image)
	checkBuilderManifest(t, tb, image, sum, before)
	if m := readManifest(t, image); m["nixpkgs_revision"] == moved {
		t.Errorf("the manifest names the release the channel moved to during the build (%s), not the one built", moved)
	}
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
    nixpkgs_channels_url = %q
  }
}
`, lines[0], host, port, tb.PublicIPURL(), tb.Channels().URL()))

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
	checkBuilderManifest(t, tb, image, sum, tb.Channels().ReleaseURL(payload.DefaultNixpkgs))
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

// demoMaxLines is the most a build of the example may print before its phase
// table and cost report (make demo runs the example).
const demoMaxLines = 60

// checkQuietOutput: the build's output up to the phase table is at most
// demoMaxLines lines, holds no package-manager noise, names the build log,
// and the log in out holds everything the instance printed: apt-get's and
// Nix's output.
func checkQuietOutput(t *testing.T, output, out string) {
	t.Helper()
	before, _, found := strings.Cut(output, "Phases:")
	if !found {
		t.Fatalf("the output has no phase table:\n%s", output)
	}
	lines := strings.Split(strings.TrimRight(before, "\n "), "\n")
	if len(lines) > demoMaxLines {
		t.Errorf("the build printed %d lines before its phase table, want at most %d:\n%s", len(lines), demoMaxLines, before)
	}
	logFile := filepath.Join(out, payload.BuildLogName)
	for _, noise := range []string{"Unpacking ", "Setting up ", "Get:", "Reading package lists"} {
		if strings.Contains(before, noise) {
			t.Errorf("the output shows apt-get's %q lines; they belong in %s", noise, logFile)
		}
	}
	for _, want := range []string{"Everything the build host prints goes to " + filepath.Join(filepath.Base(out), payload.BuildLogName), "installed from Debian's packages in ", "nix: building "} {
		if !strings.Contains(before, want) {
			t.Errorf("the output lacks %q:\n%s", want, before)
		}
	}
	log, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatalf("the build log: %v", err)
	}
	for _, want := range []string{"==> ", "build.sh ensure-nix", "Setting up nix-bin", "nixos-sd: installed ", "building '/nix/store/"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the build log lacks %q:\n%s", want, log)
		}
	}
	t.Logf("the build printed %d lines before its phase table; the log holds %d", len(lines), strings.Count(string(log), "\n"))
}

// TestBuilderExample: the checked-in example builds in a chosen region and
// zone; the fleet is offered only that zone's subnets, and the manifest
// post-processor lists the image.
func TestBuilderExample(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	dir, out := buildExample(t, tb, "region=eu-west-1", "availability_zone=eu-west-1b")
	image := filepath.Join(dir, "output-rpi", bldImageName)
	checkBuiltImage(t, image)
	checkQuietOutput(t, out, filepath.Join(dir, "output-rpi"))

	// The template's hostname reaches the nixos_config through the plugin's
	// module, which the manifest shows.
	if m := readManifest(t, image); !strings.Contains(fmt.Sprint(m["plugin_module"]), `networking.hostName = lib.mkForce "rpi";`) || m["hostname"] != "rpi" {
		t.Errorf("the manifest's plugin_module %q (hostname %v) does not set the template's hostname", m["plugin_module"], m["hostname"])
	}

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

	// On the same test bed, example/flake and example/datasource.
	buildFlakeExample(t, tb)
	buildDatasourceExample(t, tb)
}

// withTestbedConnection replaces a copied example's closing build block,
// which must list only source, with one that adds the test bed's ssh_host,
// ssh_port and public_ip_url to that source (on AWS the build finds the
// instance's address and this machine's on its own).
func withTestbedConnection(t *testing.T, tb *testbed.Testbed, file, source string) {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	head, build, ok := strings.Cut(string(src), "\nbuild {")
	if !ok || strings.TrimSpace(build) != fmt.Sprintf("sources = [%q]\n}", source) {
		t.Fatalf("%s does not end in the build block this test replaces:\n%s", file, src)
	}
	host, port := tb.NextSSHEndpoint()
	writeTemplate(t, filepath.Dir(file), filepath.Base(file), fmt.Sprintf(`%s
build {
  source %q {
    ssh_host      = %q
    ssh_port      = %d
    public_ip_url = %q
  }
}
`, head, source, host, port, tb.PublicIPURL()))
}

// buildDatasourceExample builds example/datasource as shipped in its default
// region: the data source's AMI is the one the instance boots.
func buildDatasourceExample(t *testing.T, tb *testbed.Testbed) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "datasource")
	copyTree(t, filepath.Join(repoRoot(t), "example", "datasource"), dir)
	withTestbedConnection(t, tb, filepath.Join(dir, "debian-ami.pkr.hcl"), "source.nixos-sd.rpi")
	tb.Proxy().ResetCalls()
	out, code := packerRun(t, dir, tb.Env(), "build", "-color=false", ".")
	if code != 0 {
		t.Fatalf("packer build of example/datasource exited %d:\n%s", code, out)
	}
	checkBuiltImage(t, filepath.Join(dir, "output-rpi", bldImageName))
	lookups := tb.Proxy().CallsOf("DescribeImages")
	fleet := onlyCall(t, tb, "CreateFleet")
	lt := onlyCall(t, tb, "CreateLaunchTemplate")
	if len(lookups) == 0 || fleet.Region != "us-east-2" || !strings.HasPrefix(lt.Params["LaunchTemplateData.ImageId"], "ami-") {
		t.Errorf("the example did not look the AMI up and launch it in us-east-2: %d lookups, fleet in %s, image %q", len(lookups), fleet.Region, lt.Params["LaunchTemplateData.ImageId"])
	}
}

// buildFlakeExample builds example/flake as shipped, with the region from
// AWS_REGION: its source line and its flake are kept; the build block adds
// the test bed's ssh_host and public_ip_url to the source, as
// TestBuilderMinimalExample does. The host cannot fetch the flake's inputs:
// the stand-in nix evaluates it with the stand-in nixpkgs and nixos-hardware
// (internal/testbed/README.md).
func buildFlakeExample(t *testing.T, tb *testbed.Testbed) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "flake")
	copyTree(t, filepath.Join(repoRoot(t), "example", "flake"), dir)
	withTestbedConnection(t, tb, filepath.Join(dir, "build.pkr.hcl"), "source.nixos-sd.rpi5")
	out, code := packerRun(t, dir, tb.Env(), "build", "-color=false", ".")
	if code != 0 {
		t.Fatalf("packer build of example/flake exited %d:\n%s", code, out)
	}
	image := filepath.Join(dir, "output-rpi5", bldImageName)
	checkBuiltImage(t, image)
	m := readManifest(t, image)
	if m["config_source"] != "flake" {
		t.Errorf("example/flake's image was built from %v, want the flake", m["config_source"])
	}
	// The example has no flake.lock: the one Nix wrote on the instance is
	// copied beside the image, and the manifest records its inputs and the
	// nixpkgs revision it locked.
	lock, err := os.ReadFile(image + ".flake.lock")
	var l struct {
		Nodes map[string]struct{ Locked struct{ Rev string } }
	}
	if err != nil || json.Unmarshal(lock, &l) != nil || l.Nodes["nixpkgs"].Locked.Rev == "" || l.Nodes["nixos-hardware"].Locked.Rev == "" {
		t.Errorf("the flake.lock beside the image: %v\n%s", err, lock)
	}
	inputs, _ := m["flake_inputs"].(map[string]any)
	if m["flake_lock"] != bldImageName+".flake.lock" || m["nixpkgs_source"] != "flake.lock" || m["nixpkgs_revision"] != l.Nodes["nixpkgs"].Locked.Rev ||
		inputs["nixos-hardware"] == nil {
		t.Errorf("the manifest does not record the flake.lock Nix wrote: flake_lock %v, nixpkgs %v (%v), flake_inputs %v", m["flake_lock"], m["nixpkgs_revision"], m["nixpkgs_source"], m["flake_inputs"])
	}
	if !strings.Contains(out, "Checking that nixosConfigurations.rpi5 is built for aarch64-linux") {
		t.Errorf("the flake's platform was not checked:\n%s", out)
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
