//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// The fault matrix: every scenario of docs/reliability.md through the real
// Packer against one shared test bed, one after the other. Each scenario
// sets fault rules in the proxy (or acts on Packer, the instance or the
// host while Packer runs), checks the outcome it expects (the build
// succeeded, succeeded after a retry, moved to another pool, fell back to
// on-demand, or failed with a message saying what to do), and ends with the
// leak checker finding nothing in EC2.

// outcome is what a scenario expects of the build.
type outcome string

const (
	succeeded      outcome = "succeeded"
	retried        outcome = "succeeded after a retry"
	movedPool      outcome = "moved to another pool"
	fellBack       outcome = "fell back to on-demand"
	failedSayingSo outcome = "failed with a message that says what to do"
)

// scenario is one row of the matrix.
type scenario struct {
	name string
	// bench is what the row builds with: nil = the builder on the test
	// bed's EC2; onHost = the provisioner on a host the row starts; lookup =
	// the data source.
	bench bench
	extra string            // source attributes (builder rows)
	files map[string]string // files beside the template
	args  []string          // extra packer build arguments (builder rows)
	build string            // provisioners of the build block (builder rows)
	// killed: during kills the plugin, which then cannot print its phase
	// table and cost report.
	killed bool
	// terminal runs Packer on a terminal whose keys during presses
	// (p.keys): Packer asks nothing without one.
	terminal bool
	rules    []testbed.Rule
	// setup changes the test bed for this row only (t.Cleanup undoes it).
	setup func(t *testing.T, tb *testbed.Testbed)
	// during, when set, runs while Packer builds (Packer runs in the
	// background); it may interrupt Packer, terminate the instance, ...
	// (builder rows; a provisioner row's is its onHost's).
	during func(t *testing.T, tb *testbed.Testbed, p *bgPacker)
	want   outcome
	// within bounds how long Packer may run; 0 = no bound.
	within time.Duration
	// output are texts Packer's output must hold (white space collapsed);
	// absent texts it must not.
	output, absent []string
	// called are EC2 actions the plugin must have called successfully (a
	// failed build's cleanup, mostly).
	called []string
	// check looks at the proxy's record or EC2 after the build.
	check func(t *testing.T, tb *testbed.Testbed, out string)
	// after runs before the leak check (a later build, the user's removal).
	after func(t *testing.T, tb *testbed.Testbed, dir, out string)
	// region is the source's region; empty = bldRegion.
	region string
}

// mxTypes are the instance types of every matrix build: two types in the
// region's zones make several pools.
const mxTypes = `  instance_types = ["c7g.2xlarge", "m7g.2xlarge"]
  poll_interval  = "100ms"
`

func TestFaultMatrix(t *testing.T) {
	inShard, err := matrixShard(os.Getenv(matrixShardEnv))
	if err != nil {
		t.Fatal(err)
	}
	tb := startTestbed(t, testbed.Options{})
	start := time.Now()
	var ran int
	for i, sc := range faultMatrix() {
		if !inShard(i) {
			continue
		}
		t.Run(sc.name, func(t *testing.T) {
			ran++
			runScenario(t, tb, sc)
		})
	}
	t.Logf("fault matrix: %d scenarios in %s", ran, time.Since(start).Round(time.Second))
}

// matrixShardEnv selects the rows one process runs when the suite is split
// across processes (scripts/e2e-suite.sh): "K/N" or "K,L/N" runs the rows
// whose index modulo N is K (or L); unset runs them all.
const matrixShardEnv = "NIXOS_SD_MATRIX_SHARD"

// matrixShard parses a matrixShardEnv value.
func matrixShard(v string) (func(int) bool, error) {
	if v == "" {
		return func(int) bool { return true }, nil
	}
	bad := fmt.Errorf("%s=%q: want K/N or K,L/N with 0 <= K < N", matrixShardEnv, v)
	ks, ns, ok := strings.Cut(v, "/")
	n, err := strconv.Atoi(ns)
	if !ok || err != nil || n < 1 {
		return nil, bad
	}
	var keep []int
	for _, f := range strings.Split(ks, ",") {
		k, err := strconv.Atoi(f)
		if err != nil || k < 0 || k >= n {
			return nil, bad
		}
		keep = append(keep, k)
	}
	return func(i int) bool { return slices.Contains(keep, i%n) }, nil
}

// TestMatrixShard: the shards of a split run cover every row once.
func TestMatrixShard(t *testing.T) {
	a, errA := matrixShard("0,1/3")
	b, errB := matrixShard("2/3")
	all, errAll := matrixShard("")
	if errA != nil || errB != nil || errAll != nil {
		t.Fatal(errA, errB, errAll)
	}
	for i := range 10 {
		if a(i) == b(i) || !all(i) {
			t.Errorf("row %d: in 0,1/3 %v, in 2/3 %v, in all %v", i, a(i), b(i), all(i))
		}
	}
	for _, v := range []string{"3/3", "1", "a/2", "0/0", "-1/2", "0,/2"} {
		if _, err := matrixShard(v); err == nil {
			t.Errorf("matrixShard(%q) accepted", v)
		}
	}
}

// TestFaultMatrixDocumented: docs/reliability.md names every scenario.
func TestFaultMatrixDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "reliability.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range faultMatrix() {
		if !strings.Contains(string(doc), "| "+sc.name+" |") {
			t.Errorf("docs/reliability.md has no row for scenario %q", sc.name)
		}
	}
}

// runScenario runs one row on its bench, then checks what every row
// states: the outcome, the messages, the calls, and that nothing is left.
func runScenario(t *testing.T, tb *testbed.Testbed, sc scenario) {
	p := tb.Proxy()
	p.ClearRules()
	p.ResetCalls()
	defer p.ClearRules()
	// The IAM policy check (iam_policy_test.go) sees every row's calls:
	// the next row starts from an empty record.
	defer recordCalls(t.Name(), tb)
	for _, r := range sc.rules {
		p.AddRule(r)
	}
	if sc.setup != nil {
		sc.setup(t, tb)
	}
	dir := t.TempDir()
	for f, content := range sc.files {
		writeTemplate(t, dir, f, content)
	}
	b := sc.bench
	if b == nil {
		b = onEC2{}
	}
	started := time.Now()
	r := b.run(t, tb, sc, dir)
	if took := time.Since(started); sc.within > 0 && took > sc.within {
		t.Errorf("packer ran %s; the row allows %s", took.Round(time.Second), sc.within)
	}
	checkOutcome(t, sc, r)
	flat := normalizeSpace(r.out)
	for _, w := range sc.output {
		if !strings.Contains(flat, normalizeSpace(w)) {
			t.Errorf("packer's output lacks %q", w)
		}
	}
	for _, w := range sc.absent {
		if strings.Contains(flat, normalizeSpace(w)) {
			t.Errorf("packer's output holds %q", w)
		}
	}
	for _, action := range sc.called {
		ok := false
		for _, c := range pluginCalls(tb, action) {
			ok = ok || c.Status == 200
		}
		if !ok {
			t.Errorf("the build made no successful %s call", action)
		}
	}
	if sc.check != nil {
		sc.check(t, tb, r.out)
	}
	if sc.after != nil {
		sc.after(t, tb, dir, r.out)
	}
	// Nothing may stay: the leak checker looks at all of EC2.
	checkNoLeaks(t, tb)
	if t.Failed() {
		t.Logf("packer output (exit %d):\n%s\nEC2 calls:\n%s", r.code, r.out, p.Summary())
	}
}

// checkOutcome checks the exit code, the image or what a failed build left
// in its output directory, and what the build said of a retry or fallback.
func checkOutcome(t *testing.T, sc scenario, r ran) {
	t.Helper()
	if !sc.killed && (strings.Contains(r.out, "panic:") || strings.Contains(r.out, "plugin exited before we could connect")) {
		t.Errorf("the plugin crashed")
	}
	switch sc.want {
	case failedSayingSo:
		if r.code == 0 {
			t.Errorf("packer succeeded; the scenario expects it to fail")
		}
		// -on-error=abort and run-cleanup-provisioner keep what the build
		// made, the image too.
		keeps := slices.Contains(sc.args, "-on-error=abort") || slices.Contains(sc.args, "-on-error=run-cleanup-provisioner")
		// A failed build leaves only its log (payload.BuildLogName).
		if r.outputDir != "" && !keeps {
			if got := slices.DeleteFunc(dirEntries(t, r.outputDir), func(n string) bool { return n == payload.BuildLogName }); len(got) > 0 {
				t.Errorf("a failed build left %q in its output directory", got)
			}
		}
		if strings.Contains(r.out, "The artifacts of successful builds are") {
			t.Errorf("packer lists an artifact of the failed build")
		}
	default:
		if r.code != 0 {
			t.Errorf("packer exited %d; the scenario expects: %s", r.code, sc.want)
		} else if r.outputDir != "" {
			checkBuiltImage(t, filepath.Join(r.outputDir, bldImageName))
		}
	}
	flat := normalizeSpace(r.out)
	switch sc.want {
	case retried:
		if !strings.Contains(flat, "Starting the build again on a new instance") && sc.check == nil {
			t.Errorf("the build does not say it started again")
		}
	case fellBack:
		if !strings.Contains(flat, "falling back to on-demand") || !strings.Contains(flat, "Launched on-demand instance") {
			t.Errorf("the build does not say it fell back to on-demand")
		}
	}
}

// mxAttributes are the source attributes of a row: mxTypes, less those the
// row's extra sets itself.
func mxAttributes(extra string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(mxTypes, "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		if name == "" || regexp.MustCompile(`(?m)^\s*`+regexp.QuoteMeta(name)+`\s*=`).MatchString(extra) {
			continue
		}
		b.WriteString(line)
	}
	return b.String() + extra + "\n"
}

// failOnce answers the first call of action with code (HTTP status).
func failOnce(action, code string, status int) testbed.Rule {
	return testbed.Rule{Action: action, Nth: 1, ErrorCode: code, HTTPStatus: status}
}

// failAlways answers every call of action with code.
func failAlways(action, code string) testbed.Rule {
	return testbed.Rule{Action: action, ErrorCode: code, Message: "injected: " + code}
}

// callCount checks the number of calls of action (by the plugin).
func callCount(action string, want func(n int) bool, what string) func(*testing.T, *testbed.Testbed, string) {
	return func(t *testing.T, tb *testbed.Testbed, _ string) {
		t.Helper()
		if n := len(pluginCalls(tb, action)); !want(n) {
			t.Errorf("%d %s calls, want %s", n, action, what)
		}
	}
}

// pluginCalls are the calls of action the plugin made (not the test bed).
func pluginCalls(tb *testbed.Testbed, action string) []testbed.Call {
	var out []testbed.Call
	for _, c := range tb.Proxy().CallsOf(action) {
		if !c.FromTestbed() {
			out = append(out, c)
		}
	}
	return out
}

// noCreates checks the build created nothing.
func noCreates(t *testing.T, tb *testbed.Testbed, _ string) {
	t.Helper()
	for _, c := range tb.Proxy().MutatingCalls() {
		if strings.HasPrefix(c.Action, "Create") && c.Status == 200 {
			t.Errorf("the build created something (%s) before failing", c.Action)
		}
	}
}

// fleetTypes are the lifecycle and instance types of the plugin's
// successful CreateFleet calls' launched instance ("spot c7g.2xlarge").
func launchedLine(out string) string {
	m := regexp.MustCompile(`Launched (spot|on-demand) instance (i-[0-9a-f]+) \(([a-z0-9.]+) in`).FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1] + " " + m[3]
}

// waitCall waits until the plugin made a call of action (and Packer runs).
func waitCall(t *testing.T, tb *testbed.Testbed, p *bgPacker, action string) {
	t.Helper()
	if !p.waitFor(2*time.Minute, func() bool { return len(pluginCalls(tb, action)) > 0 }) {
		t.Fatalf("the build made no %s call", action)
	}
}

// waitOutput waits until Packer's output holds text.
func waitOutput(t *testing.T, p *bgPacker, text string) {
	t.Helper()
	if !p.waitFor(3*time.Minute, func() bool { return strings.Contains(p.out.String(), text) }) {
		t.Fatalf("packer's output never showed %q:\n%s", text, p.out.String())
	}
}

// sigint presses Ctrl-C.
func sigint(t *testing.T, p *bgPacker) {
	t.Helper()
	if err := p.interrupt(); err != nil {
		t.Fatal(err)
	}
}

// launchedInstance is the builder's line naming the instance it launched.
var launchedInstance = regexp.MustCompile(`Launched (?:spot|on-demand) instance (i-[0-9a-f]+)`)

// firstHost waits for the host of the first instance the build launched to
// come up. A host of an earlier row may still be running (its teardown is
// asynchronous), so the host is picked by the instance id the build names.
func firstHost(t *testing.T, tb *testbed.Testbed, p *bgPacker) *testbed.Host {
	t.Helper()
	var h *testbed.Host
	if !p.waitFor(2*time.Minute, func() bool {
		m := launchedInstance.FindStringSubmatch(p.out.String())
		if m == nil || !slices.Contains(tb.Hosts().Running(), m[1]) {
			return false
		}
		hh, ok := tb.Hosts().Host(m[1])
		h = hh
		return ok
	}) {
		t.Fatalf("the host of the build's first instance did not come up:\n%s", p.out.String())
	}
	return h
}

// reclaim terminates the instance as EC2 does when it takes a spot instance
// back: state reason Server.SpotInstanceTermination, spot request status
// instance-terminated-no-capacity (straight to moto: not the plugin's call).
func reclaim(t *testing.T, tb *testbed.Testbed, id string) {
	t.Helper()
	if err := tb.Interrupt(motoCtx(t), bldRegion, id); err != nil {
		t.Fatalf("interrupting %s in moto: %v", id, err)
	}
}

// hostScript installs an executable in the host's /usr/local/bin.
func hostScript(t *testing.T, h *testbed.Host, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(h.Dir, "localbin", name), []byte(body), 0o755); err != nil {
		t.Fatalf("installing %s on host %s: %v", name, h.ID, err)
	}
}

// hostFlag waits until the host's /tmp holds file (the SSH user's scripts
// cannot write the stand-in's state folder).
func hostFlag(t *testing.T, h *testbed.Host, p *bgPacker, file string) {
	t.Helper()
	path := filepath.Join(h.Dir, "tmp", file)
	if !p.waitFor(2*time.Minute, func() bool { _, err := os.Stat(path); return err == nil }) {
		t.Fatalf("host %s never touched %s:\n%s", h.ID, file, p.out.String())
	}
}

// slowDD makes the host's dd (the download's reader) pause 3 s per range
// and mark that the download started.
const slowDD = `#!/bin/bash
touch /tmp/.dd-started
sleep 3
exec /bin/dd "$@"
`

// dropDD drops the build's SSH connection at the download's first range: it
// kills the sshd process serving this connection (its own ancestor), once.
const dropDD = `#!/bin/bash
f=/tmp/.dd-dropped
if [ ! -e "$f" ]; then
  touch "$f"
  p=$PPID
  while [ "$p" -gt 1 ]; do
    case "$(cat /proc/$p/comm)" in sshd*) kill -9 "$p"; exit 1;; esac
    p=$(awk '{print $4}' /proc/$p/stat)
  done
fi
exec /bin/dd "$@"
`

// expireLeftovers moves the expiry tag of every resource still in EC2 into
// the past, as if instance_max_lifetime had passed (straight to moto).
func expireLeftovers(t *testing.T, tb *testbed.Testbed) []string {
	t.Helper()
	ctx := motoCtx(t)
	c := tb.MotoClient(bldRegion)
	var ids []string
	inst, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{
		{Name: aws.String("tag-key"), Values: []string{buildIDTag}},
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range inst.Reservations {
		for _, i := range r.Instances {
			ids = append(ids, aws.ToString(i.InstanceId))
		}
	}
	// No fleets: the build's are instant ones, which AWS lists only by id.
	lt, err := c.DescribeLaunchTemplates(ctx, &ec2.DescribeLaunchTemplatesInput{})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lt.LaunchTemplates {
		ids = append(ids, aws.ToString(l.LaunchTemplateId))
	}
	sg, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{{Name: aws.String("tag-key"), Values: []string{buildIDTag}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range sg.SecurityGroups {
		ids = append(ids, aws.ToString(g.GroupId))
	}
	if len(ids) == 0 {
		return nil
	}
	_, err = c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: ids, Tags: []types.Tag{{Key: aws.String(expiresTag), Value: aws.String(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339))}}})
	if err != nil {
		t.Fatalf("moving the expiry of %v into the past: %v", ids, err)
	}
	return ids
}

// expiresTag is builder.ExpiresTag.
const expiresTag = "nixos-sd:expires"

// sweepWithNextBuild runs the next build with cleanup_leftovers = true: it
// must name and remove every leftover of the killed one, and succeed.
func sweepWithNextBuild(t *testing.T, tb *testbed.Testbed, leftover []string) {
	t.Helper()
	if len(leftover) == 0 {
		t.Fatal("the killed build left nothing to find; the scenario shows nothing")
	}
	dir := t.TempDir()
	writeTemplate(t, dir, "build.pkr.hcl", netTemplate(tb, "next", mxTypes+"  cleanup_leftovers = true\n"))
	out, code := bldBuild(t, tb, dir)
	if code != 0 {
		t.Fatalf("the next build (cleanup_leftovers = true) failed:\n%s", out)
	}
	for _, id := range leftover {
		if !strings.Contains(out, id) {
			t.Errorf("the next build does not name leftover %s:\n%s", id, out)
		}
	}
	if !strings.Contains(out, "Removing") {
		t.Errorf("the next build does not say it removes the leftovers:\n%s", out)
	}
}

// killedBuildLeftovers waits for the killed Packer, checks what it left is
// listed by a build without cleanup_leftovers (ids and commands), then
// removed by one with it.
func killedBuildLeftovers(t *testing.T, tb *testbed.Testbed, _ string, _ string) {
	t.Helper()
	left := expireLeftovers(t, tb)
	// A build without cleanup_leftovers only warns.
	dir := t.TempDir()
	writeTemplate(t, dir, "build.pkr.hcl", netTemplate(tb, "warn", mxTypes))
	out, code := bldBuild(t, tb, dir)
	if code != 0 {
		t.Fatalf("a build after the killed one failed:\n%s", out)
	}
	flat := normalizeSpace(out)
	for _, w := range []string{"past their expiry", "cleanup_leftovers = true", "aws ec2 delete-security-group --region " + bldRegion, "aws ec2 delete-launch-template --region " + bldRegion} {
		if !strings.Contains(flat, w) {
			t.Errorf("the warning lacks %q:\n%s", w, out)
		}
	}
	for _, id := range left {
		if !strings.Contains(out, id) {
			t.Errorf("the warning does not name leftover %s", id)
		}
	}
	sweepWithNextBuild(t, tb, left)
}

// pools of the matrix builds: the region's zones offer both types.
var (
	capacity = "InsufficientInstanceCapacity"
)

func poolErr(itype, code string) testbed.PoolError {
	return testbed.PoolError{InstanceType: itype, ErrorCode: code}
}

// failingConfig is a NixOS configuration the stand-in nix fails to build.
var failingConfig = map[string]string{"configuration.nix": bldFailingConfig}

func faultMatrix() []scenario {
	term := func(action string) func(*testing.T, *testbed.Testbed, string) {
		return callCount(action, func(n int) bool { return n >= 2 }, "a failed call and its retry")
	}
	rows := []scenario{
		// --- An error from each EC2 call the builder makes. ---
		{name: "DescribeRegions refused", rules: []testbed.Rule{failAlways("DescribeRegions", "AuthFailure"), failAlways("GetCallerIdentity", "InvalidClientTokenId")},
			want: failedSayingSo, output: []string{"AWS rejected the credentials", "check your credentials or profile"}, check: noCreates},
		{name: "DescribeInstanceTypes refused", rules: []testbed.Rule{failAlways("DescribeInstanceTypes", "UnauthorizedOperation")},
			want: failedSayingSo, output: []string{"instance_types: DescribeInstanceTypes failed", "UnauthorizedOperation"}, check: noCreates},
		{name: "DescribeInstanceTypeOfferings refused", rules: []testbed.Rule{failAlways("DescribeInstanceTypeOfferings", "UnauthorizedOperation")},
			want: failedSayingSo, output: []string{"DescribeInstanceTypeOfferings failed"}, check: noCreates},
		{name: "DescribeImages refused", rules: []testbed.Rule{failAlways("DescribeImages", "UnauthorizedOperation")},
			want: failedSayingSo, output: []string{"UnauthorizedOperation"}, check: noCreates},
		{name: "DescribeAvailabilityZones refused", extra: "  availability_zone = \"us-east-2a\"\n", rules: []testbed.Rule{failAlways("DescribeAvailabilityZones", "UnauthorizedOperation")},
			want: failedSayingSo, output: []string{"availability_zone: listing the zones of us-east-2 failed", "UnauthorizedOperation"}, check: noCreates},
		{name: "DescribeVpcs refused", rules: []testbed.Rule{failAlways("DescribeVpcs", "UnauthorizedOperation")},
			want: failedSayingSo, output: []string{"UnauthorizedOperation"}, check: noCreates},
		{name: "DescribeSubnets refused", rules: []testbed.Rule{failAlways("DescribeSubnets", "UnauthorizedOperation")},
			want: failedSayingSo, output: []string{"UnauthorizedOperation"}, check: noCreates},
		// --- Names that look right but the region does not know. ---
		{name: "instance type unknown in the region", extra: `  instance_types = ["c7g.huge"]`,
			want: failedSayingSo, output: []string{"instance_types", `"c7g.huge"`}, after: refusedBeforeCreating(true)},
		{name: "availability zone unknown in the region", extra: `  availability_zone = "us-east-2z"`,
			want: failedSayingSo, output: []string{"availability_zone", `"us-east-2z"`, "us-east-2a"}, after: refusedBeforeCreating(true)},
		{name: "source AMI unknown in the region", extra: `  source_ami = "ami-0123456789abcdef0"`,
			want: failedSayingSo, output: []string{"source_ami", `"ami-0123456789abcdef0"`, "does not exist"}, after: refusedBeforeCreating(true)},
		{name: "x86 instance type", extra: `  instance_types = ["c5.2xlarge"]`,
			want: failedSayingSo, output: []string{"instance_types", `"c5.2xlarge"`, "AArch64"}, after: refusedBeforeCreating(false)},
		{name: "leftover search refused", rules: []testbed.Rule{failAlways("DescribeLaunchTemplates", "UnauthorizedOperation")},
			want: succeeded, output: []string{"Warning: could not look for leftovers of earlier builds"}},
		{name: "leftover group search refused", rules: []testbed.Rule{failAlways("DescribeSecurityGroups", "UnauthorizedOperation")},
			want: succeeded, output: []string{"Warning: could not look for leftovers of earlier builds", "DescribeSecurityGroups"}},
		{name: "CreateSecurityGroup refused", rules: []testbed.Rule{failAlways("CreateSecurityGroup", "UnauthorizedOperation")},
			want: failedSayingSo, output: []string{"creating the temporary security group", "UnauthorizedOperation"}, check: noCreates},
		{name: "AuthorizeSecurityGroupIngress refused", rules: []testbed.Rule{failAlways("AuthorizeSecurityGroupIngress", "UnauthorizedOperation")},
			want: failedSayingSo, output: []string{"allowing SSH (tcp 22", "Deleting temporary security group"}},
		{name: "CreateLaunchTemplate refused", rules: []testbed.Rule{failAlways("CreateLaunchTemplate", "UnauthorizedOperation")},
			want: failedSayingSo, output: []string{"creating the launch template", "Deleting temporary security group"}},
		{name: "CreateFleet refused", rules: []testbed.Rule{failAlways("CreateFleet", "UnauthorizedOperation")},
			want: failedSayingSo, output: []string{"requesting the instance (CreateFleet)", "UnauthorizedOperation", "Deleting temporary launch template"},
			check: callCount("CreateFleet", func(n int) bool { return n == 1 }, "1: a permission error is not retried")},
		{name: "DescribeSpotPriceHistory refused", rules: []testbed.Rule{failAlways("DescribeSpotPriceHistory", "UnauthorizedOperation")},
			want: succeeded, output: []string{"price unknown"}},
		{name: "DescribeInstances fails while waiting to run", rules: []testbed.Rule{{Action: "DescribeInstances", HasParam: "InstanceId.1", Nth: 1, ErrorCode: "InternalError", HTTPStatus: 500}, {Action: "DescribeInstances", HasParam: "InstanceId.1", Nth: 2, ErrorCode: "UnauthorizedOperation"}},
			want: succeeded, check: callCount("DescribeInstances", func(n int) bool { return n >= 3 }, "the waiter to go on after errors")},
		{name: "DescribeInstances fails while waiting for termination", rules: []testbed.Rule{
			{Action: "DescribeInstances", HasParam: "InstanceId.1", After: "TerminateInstances", Nth: 1, ErrorCode: "InternalError", HTTPStatus: 500},
			{Action: "DescribeInstances", HasParam: "InstanceId.1", After: "TerminateInstances", Nth: 2, ErrorCode: "UnauthorizedOperation"},
		}, want: succeeded, check: func(t *testing.T, tb *testbed.Testbed, _ string) {
			n := 0
			for _, c := range pluginCalls(tb, "DescribeInstances") {
				if c.Injected && c.Params["InstanceId.1"] != "" {
					n++
				}
			}
			if n < 2 {
				t.Errorf("%d injected errors in the termination wait, want 2", n)
			}
		}},
		{name: "TerminateInstances fails once", rules: []testbed.Rule{failOnce("TerminateInstances", "InternalError", 500)},
			want: succeeded, check: term("TerminateInstances")},
		{name: "DeleteFleets fails once", rules: []testbed.Rule{failOnce("DeleteFleets", "InternalError", 500)},
			want: succeeded, check: term("DeleteFleets")},
		{name: "DeleteLaunchTemplate fails once", rules: []testbed.Rule{failOnce("DeleteLaunchTemplate", "InternalError", 500)},
			want: succeeded, check: term("DeleteLaunchTemplate")},
		{name: "DeleteSecurityGroup fails once", rules: []testbed.Rule{failOnce("DeleteSecurityGroup", "InternalError", 500)},
			want: succeeded, check: term("DeleteSecurityGroup")},
		{name: "DescribeSpotInstanceRequests refused", rules: []testbed.Rule{failAlways("DescribeSpotInstanceRequests", "UnauthorizedOperation")},
			want: succeeded, check: callCount("DescribeSpotInstanceRequests", func(n int) bool { return n > 0 }, "some (the interruption watcher's)")},
		{name: "instance search by tag fails at cleanup", rules: []testbed.Rule{{Action: "DescribeInstances", HasParam: "Filter.1.Name", After: "CreateFleet", ErrorCode: "UnauthorizedOperation"}},
			want: succeeded, output: []string{"Could not look for instances launched by this build", "aws ec2 describe-instances"}},

		// --- Throttling and 5xx: the SDK's retryer. ---
		{name: "CreateFleet throttled", rules: []testbed.Rule{failOnce("CreateFleet", "RequestLimitExceeded", 0), {Action: "CreateFleet", Nth: 2, ErrorCode: "RequestLimitExceeded"}},
			want: succeeded, check: func(t *testing.T, tb *testbed.Testbed, out string) {
				calls := pluginCalls(tb, "CreateFleet")
				if len(calls) != 3 || calls[0].Params["ClientToken"] != calls[2].Params["ClientToken"] {
					t.Errorf("want 3 CreateFleet calls with one client token (the SDK's retries); got %d", len(calls))
				}
			}},
		{name: "CreateSecurityGroup 503", rules: []testbed.Rule{failOnce("CreateSecurityGroup", "Unavailable", 503)},
			want: succeeded, check: term("CreateSecurityGroup")},
		{name: "DescribeRegions throttled to the end", extra: "  max_retries = 2\n", rules: []testbed.Rule{failAlways("DescribeRegions", "RequestLimitExceeded")},
			want: failedSayingSo, output: []string{"RequestLimitExceeded"}, check: noCreates},

		// --- Per-pool fleet errors, mixed across pools. ---
		{name: "capacity in one type: the other pool", rules: []testbed.Rule{{Action: "CreateFleet", PoolErrors: []testbed.PoolError{poolErr("c7g.2xlarge", capacity)}}},
			want: movedPool, check: func(t *testing.T, tb *testbed.Testbed, out string) {
				if got := launchedLine(out); got != "spot m7g.2xlarge" {
					t.Errorf("launched %q, want spot m7g.2xlarge (the pool with capacity)", got)
				}
				if n := len(pluginCalls(tb, "CreateFleet")); n != 1 {
					t.Errorf("%d CreateFleet calls, want 1: the fleet itself picks the pool that works", n)
				}
			}},
		{name: "odd pool error beside no capacity", rules: []testbed.Rule{{Action: "CreateFleet", Nth: 1, PoolErrors: []testbed.PoolError{poolErr("m7g.2xlarge", "InvalidParameterValue"), poolErr("", capacity)}}},
			// One odd pool must not hide the others' lack of capacity: that
			// is worth another request, not a refusal.
			want: succeeded, output: []string{"InvalidParameterValue"},
			check: callCount("CreateFleet", func(n int) bool { return n == 2 }, "2 (the refusal, then the retry)")},
		{name: "unsupported in one type, capacity short in the other", rules: []testbed.Rule{{Action: "CreateFleet", Nth: 1, PoolErrors: []testbed.PoolError{poolErr("c7g.2xlarge", "Unsupported"), poolErr("m7g.2xlarge", capacity)}}},
			want: movedPool, output: []string{"Leaving out", "No spot capacity"}, check: func(t *testing.T, tb *testbed.Testbed, out string) {
				calls := pluginCalls(tb, "CreateFleet")
				if len(calls) != 2 {
					t.Fatalf("%d CreateFleet calls, want 2", len(calls))
				}
				for k, v := range calls[1].Params {
					if strings.HasSuffix(k, "InstanceType") && v == "c7g.2xlarge" {
						t.Errorf("the second request still asks the unsupported c7g.2xlarge pools")
					}
				}
			}},
		{name: "invalid parameter in one type, capacity in the other", rules: []testbed.Rule{{Action: "CreateFleet", Nth: 1, PoolErrors: []testbed.PoolError{poolErr("m7g.2xlarge", "InvalidParameterValue")}}},
			want: movedPool, check: func(t *testing.T, tb *testbed.Testbed, out string) {
				if got := launchedLine(out); got != "spot c7g.2xlarge" {
					t.Errorf("launched %q, want spot c7g.2xlarge", got)
				}
			}},
		{name: "spot vCPU quota", rules: []testbed.Rule{{Action: "CreateFleet", PoolErrors: []testbed.PoolError{poolErr("", "VcpuLimitExceeded")}}},
			want: failedSayingSo, output: []string{"VcpuLimitExceeded", `"All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"`, "Service Quotas", "L-34B43A08", "--desired-value 8", "on_demand_fallback = true"},
			check: callCount("CreateFleet", func(n int) bool { return n == 1 }, "1: a quota is not retried")},
		{name: "spot count quota, on-demand fallback", extra: "  on_demand_fallback = true\n", rules: []testbed.Rule{{Action: "CreateFleet", Nth: 1, PoolErrors: []testbed.PoolError{poolErr("", "MaxSpotInstanceCountExceeded")}}},
			want: fellBack, output: []string{"quota", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"},
			check: fleetLifecycles("spot", "on-demand")},
		{name: "quota in one type, unsupported in the other", rules: []testbed.Rule{{Action: "CreateFleet", PoolErrors: []testbed.PoolError{poolErr("c7g.2xlarge", "MaxSpotInstanceCountExceeded"), poolErr("m7g.2xlarge", "Unsupported")}}},
			want: failedSayingSo, output: []string{"quota", "Service Quotas"}},
		{name: "no capacity anywhere, on-demand fallback", extra: "  on_demand_fallback = true\n", rules: []testbed.Rule{
			{Action: "CreateFleet", Nth: 1, PoolErrors: []testbed.PoolError{poolErr("c7g.2xlarge", capacity), poolErr("m7g.2xlarge", "InvalidParameterValue")}},
			{Action: "CreateFleet", Nth: 2, PoolErrors: []testbed.PoolError{poolErr("", capacity)}},
			{Action: "CreateFleet", Nth: 3, ErrorCode: capacity},
		}, want: fellBack, check: func(t *testing.T, tb *testbed.Testbed, out string) {
			fleetLifecycles("spot", "spot", "spot", "on-demand")(t, tb, out)
			calls := pluginCalls(tb, "CreateFleet")
			if len(calls) != 4 {
				return
			}
			last := calls[3]
			if last.Params["TargetCapacitySpecification.OnDemandTargetCapacity"] != "1" || last.Params["SpotOptions.AllocationStrategy"] != "" {
				t.Errorf("the on-demand request is not an on-demand request:\n%s", formatParams(last))
			}
			if last.Status != 200 {
				t.Errorf("the on-demand CreateFleet was answered %d %s", last.Status, last.ErrorCode)
			}
		}},
		{name: "no capacity anywhere, no fallback", extra: "  on_demand_fallback = false\n", rules: []testbed.Rule{{Action: "CreateFleet", PoolErrors: []testbed.PoolError{{ErrorCode: capacity, Message: "There is no Spot capacity available that matches your request."}}}},
			want: failedSayingSo, output: []string{"no spot capacity for c7g.2xlarge, m7g.2xlarge", "add more instance_types", "availability_zone", "on_demand_fallback = true"},
			called: []string{"DeleteLaunchTemplate", "DeleteSecurityGroup"}, check: fleetLifecycles("spot", "spot", "spot")},
		{name: "no pool supported", rules: []testbed.Rule{{Action: "CreateFleet", PoolErrors: []testbed.PoolError{poolErr("", "Unsupported")}}},
			want: failedSayingSo, output: []string{"cannot launch the instance in any pool", "instance_types"}},

		// --- A resource not visible yet right after it was created. ---
		{name: "instance not visible yet", rules: []testbed.Rule{{Action: "CreateFleet", NotFoundCalls: 3}},
			want: succeeded, check: notFoundAnswered},
		{name: "security group not visible yet", rules: []testbed.Rule{{Action: "CreateSecurityGroup", NotFoundCalls: 2}},
			want: succeeded, check: notFoundAnswered},
		{name: "launch template not visible yet", rules: []testbed.Rule{{Action: "CreateLaunchTemplate", NotFoundCalls: 2}},
			want: succeeded, check: notFoundAnswered},

		{name: "group, template and instance not visible yet", rules: []testbed.Rule{
			{Action: "CreateSecurityGroup", NotFoundCalls: 2}, {Action: "CreateLaunchTemplate", NotFoundCalls: 2}, {Action: "CreateFleet", NotFoundCalls: 2},
		}, want: succeeded, check: func(t *testing.T, tb *testbed.Testbed, _ string) {
			hidden := tb.Proxy().Hidden()
			if len(hidden) < 3 {
				t.Fatalf("the proxy hid %v, want a group, a template and an instance", hidden)
			}
			for _, id := range hidden {
				if n := tb.Proxy().NotFoundAnswers(id); n != 2 {
					t.Errorf("%s answered NotFound %d times, want 2 (the build named it less often than that)", id, n)
				}
			}
		}},
		// Invisible for 3 s; the build gives up waiting after 2 s; cleanup
		// must still terminate the instance, not take its NotFound for
		// "already gone" (it retries NotFound for about 10 polls).
		{name: "instance invisible past state_timeout", extra: "  poll_interval = \"1s\"\n  state_timeout = \"2s\"\n",
			rules: []testbed.Rule{{Action: "CreateFleet", NotFoundFor: 3 * time.Second}},
			want:  failedSayingSo, absent: []string{"Could not delete"}, check: func(t *testing.T, tb *testbed.Testbed, _ string) {
				terms := pluginCalls(tb, "TerminateInstances")
				if len(terms) == 0 || terms[len(terms)-1].Status != 200 {
					t.Errorf("the instance was never terminated (TerminateInstances calls %d):\n%s", len(terms), tb.Proxy().Summary())
				}
			}},

		// --- Answers that never arrive. ---
		{name: "CreateFleet answer lost", rules: []testbed.Rule{{Action: "CreateFleet", Nth: 1, DropAnswer: true}},
			want: succeeded, check: func(t *testing.T, tb *testbed.Testbed, out string) {
				calls := pluginCalls(tb, "CreateFleet")
				if len(calls) != 2 || calls[0].Params["ClientToken"] != calls[1].Params["ClientToken"] {
					t.Errorf("want the SDK's retry of the lost request with the same client token; got %d CreateFleet calls", len(calls))
				}
				onlyOneInstance(t, tb, calls)
			}},

		// --- SSH, the remote build, the download. ---
		{name: "SSH never answers", extra: "  ssh_source_cidrs = [\"203.0.113.0/24\"]\n  ssh_timeout = \"10s\"\n",
			want: failedSayingSo, output: []string{"Timeout waiting for SSH", "the security group admits SSH to", "only from 203.0.113.0/24", "ssh_source_cidrs", "Terminating instance"}},
		// ssh_interface = "private_ip" in a VPC this machine is not inside (no
		// VPN or peering leads there): the build warns before it launches,
		// naming ssh_source_cidrs, and SSH to the private address times out,
		// as AWS has no route for it.
		{name: "private address from outside the VPC", files: map[string]string{"subnet.pkr.hcl": "variable \"mx_subnet\" {\n  type = string\n}\n"},
			extra: "  subnet_id     = var.mx_subnet\n  ssh_interface = \"private_ip\"\n  ssh_timeout   = \"5s\"\n",
			setup: otherVPCSubnet,
			want:  failedSayingSo, output: []string{`Warning: ssh_interface = "private_ip", and this machine`, "set ssh_source_cidrs",
				"Timeout waiting for SSH", "only from 10.77.0.0/16", "Terminating instance"}},
		{name: "remote build fails", extra: "  nixos_config = \"${path.root}/configuration.nix\"\n", files: failingConfig,
			want: failedSayingSo, output: []string{"building the NixOS SD image on instance i-", "error: builder for '/nix/store/", "failed with exit code 1", "Terminating instance"},
			called: []string{"TerminateInstances", "DeleteFleets", "DeleteLaunchTemplate", "DeleteSecurityGroup"}},
		{name: "download drops", during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
			h := firstHost(t, tb, p)
			hostScript(t, h, "dd", dropDD)
			hostFlag(t, h, p, ".dd-dropped")
		}, want: succeeded},

		// --- Ctrl-C in each phase. ---
		{name: "SIGINT in preflight", rules: []testbed.Rule{{Action: "DescribeRegions", Delay: 3 * time.Second}},
			during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
				waitCall(t, tb, p, "DescribeRegions")
				sigint(t, p)
			},
			want: failedSayingSo, check: noCreates},
		{name: "SIGINT while CreateFleet is in flight", rules: []testbed.Rule{{Action: "CreateFleet", Nth: 1, AnswerDelay: 20 * time.Second}},
			during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
				waitCall(t, tb, p, "CreateFleet")
				time.Sleep(time.Second) // moto launches the instance; its answer is held
				sigint(t, p)
			}, want: failedSayingSo, output: []string{"launched by a request whose answer never arrived", "Terminating instance"}},
		{name: "SIGINT while waiting for the instance", rules: []testbed.Rule{{Action: "DescribeInstances", HasParam: "InstanceId.1", Delay: 2 * time.Second}},
			during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) { waitOutput(t, p, "to run..."); sigint(t, p) },
			want:   failedSayingSo, output: []string{"Terminating instance"}},
		{name: "SIGINT while connecting", extra: "  ssh_source_cidrs = [\"203.0.113.0/24\"]\n",
			during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
				firstHost(t, tb, p)
				time.Sleep(2 * time.Second)
				sigint(t, p)
			},
			want: failedSayingSo, output: []string{"Terminating instance"}},
		{name: "SIGINT during the build", during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
			h := slowBuildHost(t, tb, p)
			checkLoginKeyOnly(t, tb, h)
			sigint(t, p)
			out, _, _ := p.wait(2 * time.Minute)
			if !strings.Contains(out, "Terminating instance "+h.ID) {
				t.Errorf("packer's output does not say it terminates %s", h.ID)
			}
			terminated := false
			for _, c := range pluginCalls(tb, "TerminateInstances") {
				terminated = terminated || (c.Params["InstanceId.1"] == h.ID && c.Status == 200)
			}
			if !terminated {
				t.Errorf("no successful TerminateInstances call for %s", h.ID)
			}
		}, want: failedSayingSo, output: []string{"Terminating instance"}},
		{name: "SIGINT during the download", during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
			h := firstHost(t, tb, p)
			hostScript(t, h, "dd", slowDD)
			hostFlag(t, h, p, ".dd-started")
			sigint(t, p)
		}, want: failedSayingSo, output: []string{"Terminating instance"}},

		// --- Packer killed: the next build finds and removes what is left. ---
		{name: "plugin killed before SSH connects", rules: []testbed.Rule{{Action: "DescribeInstances", HasParam: "InstanceId.1", Delay: 2 * time.Second}},
			during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
				firstHost(t, tb, p)
				killPlugin(t, p)
				if strings.Contains(p.out.String(), "Arming the instance's watchdog") {
					t.Errorf("SSH had connected before the plugin was killed; the scenario shows nothing")
				}
			},
			killed: true, want: failedSayingSo, after: killedBuildLeftovers},
		{name: "plugin killed after SSH connects", during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
			slowBuildHost(t, tb, p)
			killPlugin(t, p)
		}, killed: true, want: failedSayingSo, after: killedBuildLeftovers},

		// --- Spot interruption. ---
		{name: "spot interruption during the build", during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
			h := slowBuildHost(t, tb, p)
			reclaim(t, tb, h.ID)
		}, want: retried, output: []string{"was interrupted by EC2", "retry 1 of 1, spot_retries = 1"}},
		{name: "spot interruption during the download", during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
			h := firstHost(t, tb, p)
			hostScript(t, h, "dd", slowDD)
			hostFlag(t, h, p, ".dd-started")
			reclaim(t, tb, h.ID)
		}, want: retried, output: []string{"was interrupted by EC2"}},
		{name: "spot interruption, no retries left", extra: "  spot_retries = 0\n", during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
			h := slowBuildHost(t, tb, p)
			reclaim(t, tb, h.ID)
			if _, _, ended := p.wait(60 * time.Second); !ended {
				t.Errorf("packer was still running 60 s after the instance was terminated")
			}
		}, want: failedSayingSo, output: []string{"the spot instance was interrupted by EC2", "raise spot_retries", "on_demand_fallback = true"}},

		// --- Packer's -on-error modes and -debug, with a failing provisioner. ---
		{name: "provisioner fails", build: failingProvisioners,
			want: failedSayingSo, output: []string{provisionerFailed, "Running the cleanup provisioner", "Removing the image of the failed build", "Terminating instance"},
			after: markerWritten(true)},
		{name: "provisioner fails, on-error=run-cleanup-provisioner", args: []string{"-on-error=run-cleanup-provisioner"}, build: failingProvisioners,
			want: failedSayingSo, output: []string{provisionerFailed, "Running the cleanup provisioner", "-on-error=run-cleanup-provisioner: the build left 4 resource(s)"},
			after: keptAndListed(true)},
		{name: "provisioner fails, on-error=abort", args: []string{"-on-error=abort"}, build: failingProvisioners,
			want: failedSayingSo, output: []string{provisionerFailed, "-on-error=abort: the build left 4 resource(s)"},
			after: keptAndListed(false)},
		{name: "provisioner fails under -debug", args: []string{"-debug"}, build: failingProvisioners, terminal: true,
			during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
				answerDebugPauses(t, p, map[string]func(){
					"Pausing after run of step 'stepLaunchTemplate'": func() {
						if n := len(pluginCalls(tb, "CreateFleet")); n > 0 {
							t.Errorf("the fleet was requested (%d CreateFleet calls) while -debug paused before it", n)
						}
					},
					"Pausing after run of step 'stepWatchdog'": func() {
						if strings.Contains(p.out.String(), "Uploading the build script") {
							t.Errorf("the build step ran while -debug paused before it")
						}
					},
				})
			},
			want: failedSayingSo, output: []string{"Pausing after run of step 'stepFleet'", "Pausing after run of step 'stepBuild'", provisionerFailed, "Running the cleanup provisioner", "Terminating instance"},
			after: markerWritten(true)},

		// --- -on-error=abort keeps what it made and says how to remove it. ---
		{name: "on-error=abort keeps and lists", args: []string{"-on-error=abort"}, extra: "  nixos_config = \"${path.root}/configuration.nix\"\n", files: failingConfig,
			want: failedSayingSo, output: []string{"-on-error=abort: the build left 4 resource(s)", "aws ec2 terminate-instances", "aws ec2 delete-security-group"},
			after: removeAsPrinted},
	}
	return slices.Concat(rows, awsScenarios(), instanceScenarios(), provisionerScenarios(), lookupScenarios())
}

// notFoundAnswered checks the proxy did answer NotFound for what it hid.
func notFoundAnswered(t *testing.T, tb *testbed.Testbed, _ string) {
	t.Helper()
	hidden := tb.Proxy().Hidden()
	if len(hidden) == 0 {
		t.Fatal("the rule hid nothing")
	}
	n := 0
	for _, id := range hidden {
		n += tb.Proxy().NotFoundAnswers(id)
	}
	if n == 0 {
		t.Errorf("no call saw %v as not visible yet; the scenario shows nothing", hidden)
	}
}

// removeAsPrinted removes, straight in moto, exactly the resources the
// -on-error=abort message named, after checking they are all EC2 holds: the
// user following the message leaves nothing.
func removeAsPrinted(t *testing.T, tb *testbed.Testbed, _ string, out string) {
	t.Helper()
	re := regexp.MustCompile(`aws ec2 (terminate-instances|delete-fleets|delete-launch-template|delete-security-group) --region \S+ --\S+ (\S+)`)
	printed := map[string][]string{}
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		if !slices.Contains(printed[m[1]], m[2]) {
			printed[m[1]] = append(printed[m[1]], m[2])
		}
	}
	leaks, err := tb.Leaks(motoCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(leaks, "\n")
	for _, ids := range printed {
		for _, id := range ids {
			if !strings.Contains(all, id) {
				t.Errorf("the message names %s, which EC2 does not hold", id)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := tb.MotoClient(bldRegion)
	if ids := printed["terminate-instances"]; len(ids) > 0 {
		if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids}); err != nil {
			t.Fatal(err)
		}
	}
	if ids := printed["delete-fleets"]; len(ids) > 0 {
		if _, err := c.DeleteFleets(ctx, &ec2.DeleteFleetsInput{FleetIds: ids, TerminateInstances: aws.Bool(true)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range printed["delete-launch-template"] {
		if _, err := c.DeleteLaunchTemplate(ctx, &ec2.DeleteLaunchTemplateInput{LaunchTemplateId: aws.String(id)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range printed["delete-security-group"] {
		deadline := time.Now().Add(time.Minute)
		for {
			_, err := c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(id)})
			if err == nil || time.Now().After(deadline) {
				if err != nil {
					t.Errorf("deleting %s as printed: %v", id, err)
				}
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
}

// fleetLifecycles checks the plugin's CreateFleet calls asked for these
// capacity types, in order.
func fleetLifecycles(want ...string) func(*testing.T, *testbed.Testbed, string) {
	return func(t *testing.T, tb *testbed.Testbed, _ string) {
		t.Helper()
		calls := pluginCalls(tb, "CreateFleet")
		var got []string
		for _, c := range calls {
			got = append(got, c.Params["TargetCapacitySpecification.DefaultTargetCapacityType"])
		}
		if !slices.Equal(got, want) {
			t.Errorf("CreateFleet calls asked for %v capacity, want %v:\n%s", got, want, tb.Proxy().Summary())
		}
	}
}

// refusedBeforeCreating checks a build refused in preflight (calls: after
// Describe* calls; else by Packer's validation, before any EC2 call) changed
// nothing in EC2 and made no output directory.
func refusedBeforeCreating(calls bool) func(t *testing.T, tb *testbed.Testbed, dir, out string) {
	return func(t *testing.T, tb *testbed.Testbed, dir, _ string) {
		t.Helper()
		if m := tb.Proxy().MutatingCalls(); len(m) > 0 {
			t.Errorf("the build made %d changing EC2 call(s) before failing:\n%s", len(m), tb.Proxy().Summary())
		}
		n := len(tb.Proxy().Calls())
		if calls && n == 0 {
			t.Errorf("no EC2 call at all: preflight did not run")
		}
		if !calls && n > 0 {
			t.Errorf("packer's validation should refuse this before any EC2 call; calls:\n%s", tb.Proxy().Summary())
		}
		if _, err := os.Stat(filepath.Join(dir, "output-mx")); !os.IsNotExist(err) {
			t.Errorf("a refused build made its output directory (%v)", err)
		}
	}
}

// checkLoginKeyOnly checks the host let the build in with the temporary key
// of the user data, the only key the build delivered (it imports no key
// pair).
func checkLoginKeyOnly(t *testing.T, tb *testbed.Testbed, h *testbed.Host) {
	t.Helper()
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
}

// otherVPCSubnet makes a VPC (10.77.0.0/16) other than the default one, the
// only VPC this machine is inside, with a subnet the row's template takes as
// var.mx_subnet.
func otherVPCSubnet(t *testing.T, tb *testbed.Testbed) {
	ctx := motoCtx(t)
	c := tb.MotoClient(bldRegion)
	vpc, err := c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.77.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	sn, err := c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: vpc.Vpc.VpcId, CidrBlock: aws.String("10.77.1.0/24"), AvailabilityZone: aws.String(bldRegion + "a")})
	t.Cleanup(func() {
		bg := context.Background()
		if err == nil {
			if _, err := c.DeleteSubnet(bg, &ec2.DeleteSubnetInput{SubnetId: sn.Subnet.SubnetId}); err != nil {
				t.Errorf("deleting the other VPC's subnet: %v", err)
			}
		}
		if _, err := c.DeleteVpc(bg, &ec2.DeleteVpcInput{VpcId: vpc.Vpc.VpcId}); err != nil {
			t.Errorf("deleting the other VPC: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PKR_VAR_mx_subnet", aws.ToString(sn.Subnet.SubnetId))
}
