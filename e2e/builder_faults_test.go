//go:build e2e

package e2e

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// The builder against the ways AWS answers that plain moto never does: an
// instant fleet whose pools fail one by one (HTTP 200 with per-pool Errors,
// internal/testbed/proxy_fleet.go), and resources that answer NotFound right
// after they were created (internal/testbed/proxy_consistency.go).

const faultTypes = `  instance_types = ["c7g.2xlarge", "m7g.2xlarge"]
  poll_interval  = "200ms"
`

// TestBuilderPoolErrors: what the builder makes of per-pool errors.
func TestBuilderPoolErrors(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	p := tb.Proxy()

	// One type has no capacity anywhere: EC2 launches the other type in the
	// same request.
	t.Run("some pools fail", func(t *testing.T) {
		p.ResetCalls()
		p.ClearRules()
		defer p.ClearRules()
		p.AddRule(testbed.Rule{Action: "CreateFleet", PoolErrors: []testbed.PoolError{{InstanceType: "c7g.2xlarge", ErrorCode: "InsufficientInstanceCapacity"}}})
		dir := t.TempDir()
		writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "pools", faultTypes))
		out, code := bldBuild(t, tb, dir)
		if code != 0 {
			t.Fatalf("packer build exited %d:\n%s", code, out)
		}
		checkBuiltImage(t, filepath.Join(dir, "output-pools", bldImageName))
		if !regexp.MustCompile(`Launched spot instance i-[0-9a-f]+ \(m7g\.2xlarge`).MatchString(out) {
			t.Errorf("the build did not launch the pool that had capacity (m7g.2xlarge):\n%s", out)
		}
		if n := len(p.CallsOf("CreateFleet")); n != 1 {
			t.Errorf("%d CreateFleet calls, want 1: the fleet itself picks the pool that works", n)
		}
	})

	// Every pool fails, one of them with an odd error (a type EC2 will not
	// launch there) and the others for capacity: that is "no capacity now",
	// worth another request, not a refusal.
	t.Run("odd pool error beside no capacity", func(t *testing.T) {
		p.ResetCalls()
		p.ClearRules()
		defer p.ClearRules()
		p.AddRule(testbed.Rule{Action: "CreateFleet", Nth: 1, PoolErrors: []testbed.PoolError{
			{InstanceType: "m7g.2xlarge", ErrorCode: "InvalidParameterValue"},
			{ErrorCode: "InsufficientInstanceCapacity"},
		}})
		dir := t.TempDir()
		writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "odd", faultTypes))
		out, code := bldBuild(t, tb, dir)
		if code != 0 {
			t.Fatalf("packer build exited %d; one pool's InvalidParameterValue hid the others' lack of capacity:\n%s", code, out)
		}
		checkBuiltImage(t, filepath.Join(dir, "output-odd", bldImageName))
		if n := len(p.CallsOf("CreateFleet")); n != 2 {
			t.Errorf("%d CreateFleet calls, want 2 (the refusal, then the retry)", n)
		}
		if !strings.Contains(out, "InvalidParameterValue") {
			t.Errorf("packer's output does not show the odd pool's error:\n%s", out)
		}
	})

	// The spot quota is full: retrying spot cannot help; on-demand can.
	t.Run("spot quota", func(t *testing.T) {
		p.ResetCalls()
		p.ClearRules()
		defer p.ClearRules()
		p.AddRule(testbed.Rule{Action: "CreateFleet", Nth: 1, PoolErrors: []testbed.PoolError{{ErrorCode: "MaxSpotInstanceCountExceeded"}}})
		dir := t.TempDir()
		writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "quota", faultTypes+"  on_demand_fallback = true\n"))
		out, code := bldBuild(t, tb, dir)
		if code != 0 {
			t.Fatalf("packer build exited %d:\n%s", code, out)
		}
		checkBuiltImage(t, filepath.Join(dir, "output-quota", bldImageName))
		fleets := p.CallsOf("CreateFleet")
		if len(fleets) != 2 || fleets[0].Params["TargetCapacitySpecification.DefaultTargetCapacityType"] != "spot" ||
			fleets[1].Params["TargetCapacitySpecification.DefaultTargetCapacityType"] != "on-demand" {
			t.Errorf("CreateFleet calls %d, want one spot refused for the quota, then one on-demand:\n%s", len(fleets), p.Summary())
		}
		if !strings.Contains(out, "quota") || !strings.Contains(out, "Launched on-demand instance") {
			t.Errorf("packer's output does not say the quota sent it to on-demand:\n%s", out)
		}
	})

	// The quota without a fallback: fails at once, saying which quota.
	t.Run("vCPU quota without fallback", func(t *testing.T) {
		p.ResetCalls()
		p.ClearRules()
		defer p.ClearRules()
		p.AddRule(testbed.Rule{Action: "CreateFleet", PoolErrors: []testbed.PoolError{{ErrorCode: "VcpuLimitExceeded"}}})
		dir := t.TempDir()
		writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "vcpu", faultTypes))
		out, code := bldBuild(t, tb, dir)
		if code == 0 {
			t.Fatalf("packer build succeeded over a full vCPU quota:\n%s", out)
		}
		if n := len(p.CallsOf("CreateFleet")); n != 1 {
			t.Errorf("%d CreateFleet calls, want 1: a quota is not retried", n)
		}
		for _, want := range []string{"VcpuLimitExceeded", "Service Quotas", "on_demand_fallback = true"} {
			if !strings.Contains(normalizeSpace(out), want) {
				t.Errorf("packer's output lacks %q:\n%s", want, out)
			}
		}
		checkNoLeaks(t, tb)
	})
}

// TestBuilderNotYetVisible: resources the build just created answer
// NotFound for a while, as EC2 does.
func TestBuilderNotYetVisible(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	p := tb.Proxy()

	// Each of the group, the template and the instance answers NotFound to
	// the next two calls naming it: the build goes on.
	t.Run("build", func(t *testing.T) {
		p.ResetCalls()
		p.ClearRules()
		defer p.ClearRules()
		for _, a := range []string{"CreateSecurityGroup", "CreateLaunchTemplate", "CreateFleet"} {
			p.AddRule(testbed.Rule{Action: a, NotFoundCalls: 2})
		}
		dir := t.TempDir()
		writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "late", faultTypes))
		out, code := bldBuild(t, tb, dir)
		if code != 0 {
			t.Fatalf("packer build exited %d; a just-created resource's NotFound was taken for an error:\n%s", code, out)
		}
		checkBuiltImage(t, filepath.Join(dir, "output-late", bldImageName))
		hidden := p.Hidden()
		if len(hidden) < 3 {
			t.Fatalf("the proxy hid %v, want a group, a template and an instance", hidden)
		}
		for _, id := range hidden {
			if n := p.NotFoundAnswers(id); n != 2 {
				t.Errorf("%s answered NotFound %d times, want 2 (the build named it less often than that)", id, n)
			}
		}
	})

	// The instance stays invisible past state_timeout, so the build fails
	// while waiting for it; cleanup must still terminate it, not take its
	// NotFound for "already gone" and leave it running.
	t.Run("cleanup", func(t *testing.T) {
		p.ResetCalls()
		p.ClearRules()
		defer p.ClearRules()
		// Invisible for 3 s; the build gives up waiting after 2 s; cleanup
		// retries NotFound for about 10 polls of poll_interval (1 s here).
		p.AddRule(testbed.Rule{Action: "CreateFleet", NotFoundFor: 3 * time.Second})
		dir := t.TempDir()
		writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "gone", `  instance_types = ["c7g.2xlarge", "m7g.2xlarge"]
  poll_interval  = "1s"
  state_timeout  = "2s"
`))
		out, code := bldBuild(t, tb, dir)
		if code == 0 {
			t.Fatalf("packer build succeeded although the instance was invisible past state_timeout:\n%s", out)
		}
		terms := p.CallsOf("TerminateInstances")
		if len(terms) == 0 || terms[len(terms)-1].Status != 200 {
			t.Errorf("the instance was never terminated (TerminateInstances calls %d):\n%s", len(terms), p.Summary())
		}
		if strings.Contains(out, "Could not delete") {
			t.Errorf("cleanup reports a resource it could not delete:\n%s", out)
		}
		checkNoLeaks(t, tb)
	})
}
