//go:build e2e

package testbed

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"golang.org/x/crypto/ssh"
)

// One test bed for the package's end-to-end tests; each test leaves moto as
// it found it (TestLeaks checks that).
var tb *Testbed

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	var err error
	begin := time.Now()
	tb, err = Start(ctx, Options{Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the test bed: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "test bed started in %s\n", time.Since(begin).Round(time.Millisecond))
	code := m.Run()
	if err := tb.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "closing the test bed: %v\n", err)
		code = 1
	}
	os.Exit(code)
}

func dumpOnFailure(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			var b bytes.Buffer
			tb.DumpLogs(&b)
			t.Log(b.String())
		}
	})
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestDescribeImagesFindsSeededDebianImages(t *testing.T) {
	dumpOnFailure(t)
	ctx := testCtx(t)
	now := time.Now()
	for _, region := range CatalogueRegions {
		c := tb.EC2Client(region)
		for _, includeDeprecated := range []bool{false, true} {
			out, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{
				Owners:            []string{DebianOwner},
				Filters:           []types.Filter{{Name: aws.String("name"), Values: []string{"debian-12-arm64-*"}}},
				IncludeDeprecated: aws.Bool(includeDeprecated),
			})
			if err != nil {
				t.Fatalf("%s: DescribeImages: %v", region, err)
			}
			var got, want []string
			for _, im := range out.Images {
				got = append(got, aws.ToString(im.ImageId)+" "+aws.ToString(im.Name)+" "+aws.ToString(im.CreationDate)+" dep="+aws.ToString(im.DeprecationTime))
				if aws.ToString(im.OwnerId) != DebianOwner || string(im.Architecture) != "arm64" {
					t.Errorf("%s: image %s has owner %s, architecture %s", region, aws.ToString(im.ImageId), aws.ToString(im.OwnerId), im.Architecture)
				}
			}
			for _, ci := range Catalogue() {
				if ci.Region == region && ci.Owner == DebianOwner && strings.HasPrefix(ci.Name, "debian-12-arm64-") && (includeDeprecated || !ci.DeprecatedAt(now)) {
					dep := ""
					if ci.DeprecationTime != nil {
						dep = ci.DeprecationTime.UTC().Format(awsTime)
					}
					want = append(want, ci.ID+" "+ci.Name+" "+ci.CreationDate.Format(awsTime)+" dep="+dep)
				}
			}
			sort.Strings(got)
			sort.Strings(want)
			if len(want) == 0 || strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("%s (IncludeDeprecated=%v): DescribeImages found\n%s\nwant\n%s", region, includeDeprecated, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		}
	}
	// Ids differ per region, as on AWS.
	a, _ := tb.EC2Client("us-east-1").DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{DebianOwner}, Filters: []types.Filter{{Name: aws.String("name"), Values: []string{"debian-12-arm64-20250610-2137"}}}})
	b, _ := tb.EC2Client("us-east-2").DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{DebianOwner}, Filters: []types.Filter{{Name: aws.String("name"), Values: []string{"debian-12-arm64-20250610-2137"}}}})
	if len(a.Images) != 1 || len(b.Images) != 1 || aws.ToString(a.Images[0].ImageId) == aws.ToString(b.Images[0].ImageId) {
		t.Errorf("want one image per region with different ids, got %d and %d", len(a.Images), len(b.Images))
	}
}

func TestDescribeImagesWithoutOwnerFindsImpostor(t *testing.T) {
	dumpOnFailure(t)
	out, err := tb.EC2Client("us-east-2").DescribeImages(testCtx(t), &ec2.DescribeImagesInput{
		Filters: []types.Filter{{Name: aws.String("name"), Values: []string{"debian-13-arm64-*"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]bool{}
	for _, im := range out.Images {
		owners[aws.ToString(im.OwnerId)] = true
		if aws.ToString(im.OwnerId) == DebianOwner && aws.ToString(im.ImageOwnerAlias) != "" {
			t.Errorf("Debian's image %s has owner alias %q; Debian's images have none", aws.ToString(im.ImageId), aws.ToString(im.ImageOwnerAlias))
		}
	}
	if !owners[DebianOwner] || !owners[ImpostorOwner] {
		t.Errorf("want images of owners %s and %s, got %v", DebianOwner, ImpostorOwner, owners)
	}
	none, err := tb.EC2Client("us-east-2").DescribeImages(testCtx(t), &ec2.DescribeImagesInput{
		Owners: []string{DebianOwner}, Filters: []types.Filter{{Name: aws.String("name"), Values: []string{"debian-14-arm64-*"}}},
	})
	if err != nil || len(none.Images) != 0 {
		t.Errorf("us-east-2 has no Debian 14 images in the catalogue; got %d, %v", len(none.Images), err)
	}
}

func TestFaultRuleAnswersSecondDescribeImagesWithError(t *testing.T) {
	dumpOnFailure(t)
	ctx := testCtx(t)
	p := tb.Proxy()
	t.Cleanup(p.ClearRules)
	before := len(p.CallsOf("DescribeImages"))
	p.AddRule(Rule{Action: "DescribeImages", Nth: 2, ErrorCode: "AuthFailure", HTTPStatus: 401, Message: "not today"})
	c := tb.EC2Client("us-east-2")
	in := &ec2.DescribeImagesInput{Owners: []string{DebianOwner}}
	var errs []error
	for i := 0; i < 3; i++ {
		_, err := c.DescribeImages(ctx, in)
		errs = append(errs, err)
	}
	var apiErr smithy.APIError
	if errs[0] != nil || errs[2] != nil || !errors.As(errs[1], &apiErr) || apiErr.ErrorCode() != "AuthFailure" || apiErr.ErrorMessage() != "not today" {
		t.Fatalf("want only the 2nd call to fail with AuthFailure \"not today\", got %v", errs)
	}
	calls := p.CallsOf("DescribeImages")[before:]
	if len(calls) != 3 {
		t.Fatalf("want 3 recorded calls, got %d", len(calls))
	}
	if c := calls[1]; !c.Injected || c.ErrorCode != "AuthFailure" || c.Status != 401 || c.Region != "us-east-2" || c.Params["Owner.1"] != DebianOwner {
		t.Errorf("2nd call recorded as %+v", c)
	}
	if c := calls[2]; c.Injected || c.ErrorCode != "" || c.Status != 200 {
		t.Errorf("3rd call recorded as %+v", c)
	}

	// A dropped connection: the SDK retries and the retry succeeds.
	p.ClearRules()
	p.AddRule(Rule{Action: "DescribeRegions", Nth: 1, Drop: true, Delay: 50 * time.Millisecond})
	before = len(p.CallsOf("DescribeRegions"))
	if _, err := c.DescribeRegions(ctx, &ec2.DescribeRegionsInput{}); err != nil {
		t.Fatalf("DescribeRegions after a dropped connection: %v", err)
	}
	calls = p.CallsOf("DescribeRegions")[before:]
	if len(calls) != 2 || !calls[0].Dropped || calls[0].Duration < 50*time.Millisecond || calls[1].Status != 200 {
		t.Errorf("want a dropped call then a good one, got %+v", calls)
	}
	// moto's own errors are recorded too.
	_, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
	last := p.CallsOf("DescribeInstances")
	if err == nil || len(last) == 0 || last[len(last)-1].ErrorCode != "InvalidInstanceID.NotFound" || last[len(last)-1].Injected {
		t.Errorf("want moto's InvalidInstanceID.NotFound recorded, got err %v, calls %+v", err, last)
	}
}

// newestImage is the catalogue's newest non-deprecated Debian image.
func newestImage(t *testing.T, region, prefix string) string {
	var best CatalogueImage
	for _, ci := range Catalogue() {
		if ci.Region == region && ci.Owner == DebianOwner && strings.HasPrefix(ci.Name, prefix) && !ci.Deprecated() &&
			(best.ID == "" || ci.CreationDate.After(best.CreationDate) || ci.CreationDate.Equal(best.CreationDate) && ci.Name > best.Name) {
			best = ci
		}
	}
	if best.ID == "" {
		t.Fatalf("no %s image in %s", prefix, region)
	}
	return best.ID
}

func TestSpotFleetInstanceGetsSSHHost(t *testing.T) {
	dumpOnFailure(t)
	ctx := testCtx(t)
	region := "us-east-2"
	c := tb.EC2Client(region)

	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, _ := ssh.NewPublicKey(pub)
	authorized := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " testbed-e2e"
	userData := "#cloud-config\nssh_authorized_keys:\n  - \"" + authorized + "\"\n"

	// A second key, as an imported key pair named in the launch template.
	pub2, priv2, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer2, _ := ssh.NewSignerFromKey(priv2)
	sshPub2, _ := ssh.NewPublicKey(pub2)
	keyName := "nixos-sd-testbed-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if _, err := c.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String(keyName), PublicKeyMaterial: ssh.MarshalAuthorizedKey(sshPub2)}); err != nil {
		t.Fatalf("ImportKeyPair: %v", err)
	}
	t.Cleanup(func() {
		if _, err := c.DeleteKeyPair(context.Background(), &ec2.DeleteKeyPairInput{KeyName: aws.String(keyName)}); err != nil {
			t.Errorf("DeleteKeyPair: %v", err)
		}
	})

	// A group admitting SSH from this machine: the host enforces it (the
	// VPC's default group admits only its own members).
	sg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(keyName), Description: aws.String("testbed")})
	if err != nil {
		t.Fatalf("CreateSecurityGroup: %v", err)
	}
	t.Cleanup(func() { deleteGroupEventually(t, c, aws.ToString(sg.GroupId)) })
	if _, err := c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: sg.GroupId, IpPermissions: []types.IpPermission{{
		IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22), IpRanges: []types.IpRange{{CidrIp: aws.String(tb.PublicIP() + "/32")}}}}}); err != nil {
		t.Fatalf("AuthorizeSecurityGroupIngress: %v", err)
	}

	lt, err := c.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String("nixos-sd-testbed-" + strconv.FormatInt(time.Now().UnixNano(), 36)),
		LaunchTemplateData: &types.RequestLaunchTemplateData{
			SecurityGroupIds: []string{aws.ToString(sg.GroupId)},
			ImageId:          aws.String(newestImage(t, region, "debian-13-arm64-")),
			KeyName:          aws.String(keyName),
			InstanceType:     types.InstanceTypeC7g2xlarge,
			UserData:         aws.String(base64.StdEncoding.EncodeToString([]byte(userData))),
			InstanceMarketOptions: &types.LaunchTemplateInstanceMarketOptionsRequest{
				MarketType: types.MarketTypeSpot,
			},
		},
	})
	if err != nil {
		t.Fatalf("CreateLaunchTemplate: %v", err)
	}
	ltID := lt.LaunchTemplate.LaunchTemplateId
	t.Cleanup(func() {
		if _, err := c.DeleteLaunchTemplate(context.Background(), &ec2.DeleteLaunchTemplateInput{LaunchTemplateId: ltID}); err != nil {
			t.Errorf("DeleteLaunchTemplate: %v", err)
		}
	})

	wantHost, wantPort := tb.NextSSHEndpoint()
	fleet, err := c.CreateFleet(ctx, &ec2.CreateFleetInput{
		Type: types.FleetTypeInstant,
		TargetCapacitySpecification: &types.TargetCapacitySpecificationRequest{
			TotalTargetCapacity: aws.Int32(1), DefaultTargetCapacityType: types.DefaultTargetCapacityTypeSpot,
		},
		LaunchTemplateConfigs: []types.FleetLaunchTemplateConfigRequest{{
			LaunchTemplateSpecification: &types.FleetLaunchTemplateSpecificationRequest{LaunchTemplateId: ltID, Version: aws.String("$Latest")},
			Overrides:                   []types.FleetLaunchTemplateOverridesRequest{{InstanceType: types.InstanceTypeC7g2xlarge, AvailabilityZone: aws.String("us-east-2a")}},
		}},
		SpotOptions: &types.SpotOptionsRequest{AllocationStrategy: types.SpotAllocationStrategyPriceCapacityOptimized},
	})
	if err != nil {
		t.Fatalf("CreateFleet: %v", err)
	}
	if len(fleet.Instances) != 1 || len(fleet.Instances[0].InstanceIds) != 1 {
		t.Fatalf("CreateFleet launched %+v, want one instance", fleet.Instances)
	}
	id := fleet.Instances[0].InstanceIds[0]
	terminated := false
	t.Cleanup(func() {
		if !terminated {
			c.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		}
		if _, err := c.DeleteFleets(context.Background(), &ec2.DeleteFleetsInput{FleetIds: []string{aws.ToString(fleet.FleetId)}, TerminateInstances: aws.Bool(true)}); err != nil {
			t.Errorf("DeleteFleets after the instance terminated: %v", err)
		}
	})

	var h *Host
	deadline := time.Now().Add(90 * time.Second)
	for {
		// The instance runs once its host is up with its security group.
		if hh, ok := tb.Hosts().Host(id); ok && describeInstance(t, tb.MotoClient(region), id).State.Name == types.InstanceStateNameRunning {
			h = hh
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no host for instance %s after 90 s; watcher errors: %v", id, tb.WatcherErrors())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if h.Addr != wantHost || h.Port != wantPort {
		t.Errorf("host at %s:%d, NextSSHEndpoint said %s:%d", h.Addr, h.Port, wantHost, wantPort)
	}

	cfg := &ssh.ClientConfig{User: "admin", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second}
	addr := net.JoinHostPort(h.Addr, strconv.Itoa(h.Port))
	var client *ssh.Client
	for {
		client, err = ssh.Dial("tcp", addr, cfg)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("ssh admin@%s: %v", addr, err)
	}
	sess, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.CombinedOutput("echo hello-from-$(id -un); sudo -n true && echo sudo-ok")
	sess.Close()
	client.Close()
	if err != nil || string(out) != "hello-from-admin\nsudo-ok\n" {
		t.Fatalf("command on the host: %v, output %q", err, out)
	}
	// The key pair's key works too.
	cfg2 := *cfg
	cfg2.Auth = []ssh.AuthMethod{ssh.PublicKeys(signer2)}
	client2, err := ssh.Dial("tcp", addr, &cfg2)
	if err != nil {
		t.Fatalf("ssh with the key pair's key: %v", err)
	}
	client2.Close()

	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatalf("TerminateInstances: %v", err)
	}
	terminated = true
	for {
		if _, ok := tb.Hosts().Host(id); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host of instance %s still there after TerminateInstances", id)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The pool forgets the host before its namespace is torn down; wait for
	// that. (No dialing the old address: it is no longer ours, so traffic to
	// it would leave the machine.)
	for {
		if _, err := os.Stat("/run/netns/" + h.Namespace); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("network namespace %s of instance %s still exists after TerminateInstances", h.Namespace, id)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// AWS closes an instant fleet's spot request when its instance ends
	// (moto_launcher.py makes moto do the same).
	spot, err := tb.MotoClient(region).DescribeSpotInstanceRequests(ctx, &ec2.DescribeSpotInstanceRequestsInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range spot.SpotInstanceRequests {
		if aws.ToString(s.InstanceId) == id && s.State != types.SpotInstanceStateClosed {
			t.Errorf("spot request %s of terminated %s is %s, want closed", aws.ToString(s.SpotInstanceRequestId), id, s.State)
		}
	}
}

// The builder's preflight calls these; they must answer for Graviton types.
func TestPreflightCallsAnswerForGraviton(t *testing.T) {
	dumpOnFailure(t)
	ctx := testCtx(t)
	c := tb.EC2Client("us-east-2")
	it, err := c.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{types.InstanceTypeC7g2xlarge}})
	if err != nil || len(it.InstanceTypes) != 1 {
		t.Fatalf("DescribeInstanceTypes c7g.2xlarge: %v, %d types", err, len(it.InstanceTypes))
	}
	if archs := it.InstanceTypes[0].ProcessorInfo.SupportedArchitectures; len(archs) != 1 || archs[0] != types.ArchitectureTypeArm64 {
		t.Errorf("c7g.2xlarge architectures %v", archs)
	}
	off, err := c.DescribeInstanceTypeOfferings(ctx, &ec2.DescribeInstanceTypeOfferingsInput{
		LocationType: types.LocationTypeAvailabilityZone,
		Filters:      []types.Filter{{Name: aws.String("instance-type"), Values: []string{"c7g.2xlarge"}}},
	})
	if err != nil || len(off.InstanceTypeOfferings) != 3 {
		t.Errorf("DescribeInstanceTypeOfferings: %v, %+v", err, off)
	}
	sp, err := c.DescribeSpotPriceHistory(ctx, &ec2.DescribeSpotPriceHistoryInput{InstanceTypes: []types.InstanceType{types.InstanceTypeC7g2xlarge}})
	if err != nil || len(sp.SpotPriceHistory) == 0 {
		t.Errorf("DescribeSpotPriceHistory: %v, %+v", err, sp)
	}
	az, err := c.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{})
	if err != nil || len(az.AvailabilityZones) != 3 {
		t.Errorf("DescribeAvailabilityZones: %v, %+v", err, az)
	}
}

func TestLeaksFindsLeftSecurityGroupAndNothingAfterCleanup(t *testing.T) {
	dumpOnFailure(t)
	ctx := testCtx(t)
	c := tb.EC2Client("eu-west-1")
	name := "nixos-sd-tmp-leak-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	sg, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String(name), Description: aws.String("left behind on purpose")})
	if err != nil {
		t.Fatal(err)
	}
	leaks, err := tb.Leaks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("eu-west-1: security group %s (%s)", aws.ToString(sg.GroupId), name)
	if len(leaks) != 1 || leaks[0] != want {
		t.Errorf("Leaks() = %q, want just %q", leaks, want)
	}
	if _, err := c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: sg.GroupId}); err != nil {
		t.Fatal(err)
	}
	if leaks, err = tb.Leaks(ctx); err != nil || len(leaks) != 0 {
		t.Errorf("after cleanup Leaks() = %q, %v; want none", leaks, err)
	}
}
