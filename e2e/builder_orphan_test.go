//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// TestBuilderOrphanedInstanceTerminatesItself: when the plugin dies mid-build
// (SIGKILL: no cleanup runs at all), the instance's watchdog stops hearing the
// heartbeat and shuts the instance down within orphan_timeout; the launch
// template's shutdown behaviour terminates it. The test bed plays EC2's part
// of that last step (watcher_shutdown.go).
func TestBuilderOrphanedInstanceTerminatesItself(t *testing.T) {
	tb := startTestbed(t, testbed.Options{})
	allowLeaks(t, "the plugin is killed, so its security group, launch template and fleet record stay; the test checks the instance itself")
	dir := t.TempDir()
	writeTemplate(t, dir, "build.pkr.hcl", bldTemplate(t, tb, "orphan", "  orphan_timeout = \"1m\"\n"))
	p := startPacker(t, tb, dir)
	h := slowBuildHost(t, tb, p)
	if !strings.Contains(p.out.String(), "Arming the instance's watchdog") {
		t.Fatalf("the build reached nix without arming the watchdog:\n%s", p.out.String())
	}

	killed := killPlugins(t, p.cmd.Process.Pid)
	if killed == 0 {
		t.Fatal("found no plugin process to kill")
	}
	killedAt := time.Now()
	if _, _, ended := p.wait(2 * time.Minute); !ended {
		t.Fatal("packer still ran 2 minutes after its plugin was killed")
	}

	// Nothing cleaned up: the instance must end by itself.
	client := tb.MotoClient(bldRegion)
	deadline := killedAt.Add(3 * time.Minute)
	state := ""
	for time.Now().Before(deadline) {
		out, err := client.DescribeInstances(motoCtx(t), &ec2.DescribeInstancesInput{InstanceIds: []string{h.ID}})
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
		t.Fatalf("instance %s is %q 3 minutes after the plugin was killed; the watchdog did not end it", h.ID, state)
	}
	t.Logf("instance terminated %s after the plugin was killed (orphan_timeout 1m)", time.Since(killedAt).Round(time.Second))

	calls, err := h.ShutdownCalls()
	if err != nil {
		t.Fatal(err)
	}
	// The user data's lifetime cap (+180), then the watchdog's power-off.
	if want := []string{`shutdown -P +180 packer-nixos-sd:\ instance_max_lifetime\ reached`, "shutdown -P now"}; !slices.Equal(calls, want) {
		t.Errorf("the host's shutdown record = %q, want %q", calls, want)
	}
	// Only free resources stay behind, each tagged with the build id.
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

// killPlugins SIGKILLs every nixos-sd plugin process in Packer's process
// group and returns how many it killed.
func killPlugins(t *testing.T, pgid int) int {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, dir := range procs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), "packer-plugin-nixos-sd") {
			continue
		}
		if g, err := syscall.Getpgid(pid); err != nil || g != pgid {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			n++
		}
	}
	return n
}
