//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// TestBuilderRefusesImpostorHost: another machine's sshd answers at the
// instance's address. The build must not log in, let alone build there: it
// refuses the host at once with the reason and cleans up everything.
func TestBuilderRefusesImpostorHost(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	tb.Hosts().SetImpostor(true)
	dir := t.TempDir()
	writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "impostor", "  ssh_timeout = \"5m\"\n"))
	started := time.Now()
	out, code := bldBuild(t, tb, dir)
	took := time.Since(started)
	if code == 0 {
		t.Fatalf("the build succeeded on an impostor host:\n%s", out)
	}
	for _, want := range []string{"refusing the SSH host at", "it presented host key SHA256:", "but the instance was given SHA256:",
		"Another machine answers at this address", "nothing was sent to it"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Timeout waiting for SSH") || took > 3*time.Minute {
		t.Errorf("the refusal took %v: the wrong key was retried until ssh_timeout", took.Round(time.Second))
	}
	if strings.Contains(out, "Arming the instance's watchdog") {
		t.Errorf("the build ran commands on the impostor:\n%s", out)
	}
	ids := instanceIDs(t, tb)
	if len(ids) != 1 {
		t.Fatalf("instances launched: %v", ids)
	}
	h, ok := tb.Hosts().Stopped(ids[0])
	if !ok {
		t.Fatalf("the impostor host %s is not stopped after the build", ids[0])
	}
	if calls, err := h.StandInCalls(); err != nil || len(calls) != 0 {
		t.Errorf("nix ran on the impostor: %q (%v)", calls, err)
	}
	t.Logf("refused the impostor in %v", took.Round(time.Second))
}

// TestBuilderLifetimeCapWithoutSSH: the plugin is killed after the instance
// launched but before its host accepts SSH, so no watchdog was ever armed.
// The user data's own lifetime cap (cloud-init's runcmd, played by the test
// bed) powers the instance off, and its shutdown behaviour terminates it.
// A test bed minute lasts a second here: instance_max_lifetime 16m is 16 s.
func TestBuilderLifetimeCapWithoutSSH(t *testing.T) {
	const bootDelay = 20 * time.Second
	tb := startTestbed(t, testbed.Options{BootDelay: bootDelay, ShutdownMinute: time.Second})
	allowLeaks(t, "the plugin is killed, so its security group, launch template and fleet record stay; the test checks the instance itself")
	dir := t.TempDir()
	writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "lifetime",
		"  build_timeout         = \"1m\"\n  instance_max_lifetime = \"16m\"\n"))
	p := startPacker(t, tb, dir)
	var id string
	if !p.waitFor(2*time.Minute, func() bool {
		ids := instanceIDs(t, tb)
		if len(ids) > 0 {
			id = ids[0]
		}
		return id != ""
	}) {
		t.Fatalf("no instance was launched:\n%s", p.out.String())
	}
	if running := tb.Hosts().Running(); len(running) != 0 {
		t.Fatalf("the host is up already (%v); the plugin must die before SSH can connect", running)
	}
	if n := killPlugins(t, p.cmd.Process.Pid); n == 0 {
		t.Fatal("found no plugin process to kill")
	}
	killedAt := time.Now()
	if _, _, ended := p.wait(2 * time.Minute); !ended {
		t.Fatal("packer still ran 2 minutes after its plugin was killed")
	}
	if strings.Contains(p.out.String(), "Connected to SSH") {
		t.Fatalf("SSH connected before the plugin was killed:\n%s", p.out.String())
	}

	client := tb.MotoClient(bldRegion)
	deadline := killedAt.Add(bootDelay + 16*time.Second + time.Minute)
	state := ""
	for time.Now().Before(deadline) {
		out, err := client.DescribeInstances(motoCtx(t), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatalf("DescribeInstances: %v", err)
		}
		state = string(out.Reservations[0].Instances[0].State.Name)
		if state == "terminated" {
			break
		}
		time.Sleep(time.Second)
	}
	if state != "terminated" {
		t.Fatalf("instance %s is %q %v after the plugin was killed; the user data's lifetime cap did not end it",
			id, state, time.Since(killedAt).Round(time.Second))
	}
	t.Logf("instance terminated %v after the plugin was killed (boot %v, cap +16 test bed minutes of 1 s)",
		time.Since(killedAt).Round(time.Second), bootDelay)
	var h *testbed.Host
	for end := time.Now().Add(15 * time.Second); h == nil && time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		h, _ = tb.Hosts().Stopped(id)
	}
	if h == nil {
		t.Fatalf("host %s never ran or did not stop with its instance", id)
	}
	calls, err := h.ShutdownCalls()
	if err != nil {
		t.Fatal(err)
	}
	if want := `shutdown -P +16 packer-nixos-sd:\ instance_max_lifetime\ reached`; len(calls) != 1 || calls[0] != want {
		t.Errorf("the host's shutdown record = %q, want only the user data's %q", calls, want)
	}
	leaks, err := tb.Leaks(motoCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leaks {
		if strings.Contains(l, "instance") || strings.Contains(l, "volume") || strings.Contains(l, "spot request") {
			t.Errorf("a billed resource is left after the instance ended: %s", l)
		}
	}
}

// instanceIDs lists the instances moto holds in bldRegion.
func instanceIDs(t *testing.T, tb *testbed.Testbed) []string {
	t.Helper()
	out, err := tb.MotoClient(bldRegion).DescribeInstances(motoCtx(t), &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatalf("DescribeInstances: %v", err)
	}
	var ids []string
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			ids = append(ids, *i.InstanceId)
		}
	}
	return ids
}
