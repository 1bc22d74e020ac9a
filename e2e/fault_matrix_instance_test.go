//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// Rows of the fault matrix about the instance itself: who answers at its
// address, and how it ends when the plugin that rented it is gone.

func instanceScenarios() []scenario {
	return []scenario{
		// Another machine's sshd answers at the instance's address. The build
		// must not log in, let alone build there: it refuses the host at once
		// with the reason, and cleans up everything.
		{name: "another machine answers at the instance's address", extra: "  ssh_timeout = \"5m\"\n",
			setup: func(t *testing.T, tb *testbed.Testbed) {
				tb.Hosts().SetImpostor(true)
				t.Cleanup(func() { tb.Hosts().SetImpostor(false) })
			},
			want: failedSayingSo, within: 3 * time.Minute,
			output: []string{"refusing the SSH host at", "it presented host key SHA256:", "but the instance was given SHA256:",
				"Another machine answers at this address", "nothing was sent to it"},
			// Waiting until ssh_timeout would mean the wrong key was retried.
			absent: []string{"Timeout waiting for SSH", "Arming the instance's watchdog"},
			called: []string{"TerminateInstances", "DeleteLaunchTemplate", "DeleteSecurityGroup"},
			check: func(t *testing.T, tb *testbed.Testbed, out string) {
				callCount("CreateFleet", func(n int) bool { return n == 1 }, "1: an impostor is no reason to rent another instance")(t, tb, out)
				h := stoppedHost(t, tb, launchedID(t, out))
				if calls, err := h.StandInCalls(); err != nil || len(calls) != 0 {
					t.Errorf("nix ran on the impostor: %q (%v)", calls, err)
				}
			}},
		// The plugin is killed after the instance launched, before SSH could
		// connect (the security group admits SSH only from elsewhere), so no
		// watchdog was ever armed. The user data's own lifetime cap
		// (cloud-init's runcmd, played by the test bed) powers the instance
		// off and its shutdown behaviour terminates it. A test bed minute
		// lasts a second here: instance_max_lifetime 16m is 16 s.
		{name: "plugin killed before SSH: the lifetime cap ends the instance",
			extra: "  ssh_source_cidrs = [\"203.0.113.0/24\"]\n  build_timeout = \"1m\"\n  instance_max_lifetime = \"16m\"\n",
			setup: func(t *testing.T, tb *testbed.Testbed) {
				tb.SetShutdownMinute(time.Second)
				t.Cleanup(func() { tb.SetShutdownMinute(0) })
			},
			during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
				firstHost(t, tb, p)
				killPlugin(t, p)
			},
			killed: true, want: failedSayingSo, absent: []string{"Connected to SSH", "Arming the instance's watchdog"},
			check: func(t *testing.T, tb *testbed.Testbed, out string) {
				id := launchedID(t, out)
				waitTerminated(t, tb, id, 16*time.Second+time.Minute)
				checkShutdowns(t, tb, id, `shutdown -P +16 packer-nixos-sd:\ instance_max_lifetime\ reached`)
			},
			after: removeKilledLeftovers},
		// The plugin is killed while nix builds: the instance's watchdog stops
		// hearing the heartbeat and powers the instance off within
		// orphan_timeout; the launch template's shutdown behaviour
		// terminates it.
		{name: "plugin killed during the build: the watchdog ends the instance", extra: "  orphan_timeout = \"1m\"\n",
			during: func(t *testing.T, tb *testbed.Testbed, p *bgPacker) {
				slowBuildHost(t, tb, p)
				killPlugin(t, p)
			},
			killed: true, want: failedSayingSo, output: []string{"Arming the instance's watchdog"},
			check: func(t *testing.T, tb *testbed.Testbed, out string) {
				id := launchedID(t, out)
				waitTerminated(t, tb, id, 3*time.Minute)
				// The user data's lifetime cap (+180), then the watchdog's power-off.
				checkShutdowns(t, tb, id, `shutdown -P +180 packer-nixos-sd:\ instance_max_lifetime\ reached`, "shutdown -P now")
			},
			after: removeKilledLeftovers},
	}
}

// launchedID is the id of the instance the build says it launched.
func launchedID(t *testing.T, out string) string {
	t.Helper()
	m := regexp.MustCompile(`Launched (?:spot|on-demand) instance (i-[0-9a-f]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the build never says it launched an instance")
	}
	return m[1]
}

// waitTerminated waits until moto shows instance id terminated; nobody but
// the instance itself (and EC2 on its behalf) may end it.
func waitTerminated(t *testing.T, tb *testbed.Testbed, id string, within time.Duration) {
	t.Helper()
	start := time.Now()
	state := ""
	for time.Since(start) < within {
		out, err := tb.MotoClient(bldRegion).DescribeInstances(motoCtx(t), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatalf("DescribeInstances %s: %v", id, err)
		}
		if state = string(out.Reservations[0].Instances[0].State.Name); state == "terminated" {
			t.Logf("instance %s terminated %s after the plugin was gone", id, time.Since(start).Round(time.Second))
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("instance %s is %q %s after the plugin was killed; it did not end itself", id, state, within)
}

// stoppedHost is the host of instance id once it stopped with its instance
// (the watcher stops it within a poll or two).
func stoppedHost(t *testing.T, tb *testbed.Testbed, id string) *testbed.Host {
	t.Helper()
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if h, ok := tb.Hosts().Stopped(id); ok {
			return h
		}
	}
	t.Fatalf("host %s never ran or did not stop with its instance", id)
	return nil
}

// checkShutdowns checks the shutdown calls host id recorded.
func checkShutdowns(t *testing.T, tb *testbed.Testbed, id string, want ...string) {
	t.Helper()
	calls, err := stoppedHost(t, tb, id).ShutdownCalls()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(calls, want) {
		t.Errorf("the host's shutdown record = %q, want %q", calls, want)
	}
}

// removeKilledLeftovers checks a killed build whose instance ended by itself
// left exactly its launch template and security group (no instance, volume
// or spot request: nothing billed), then removes them straight in moto. The
// rows "plugin killed before/after SSH connects" show the next build finding
// and removing such leftovers.
func removeKilledLeftovers(t *testing.T, tb *testbed.Testbed, _, _ string) {
	t.Helper()
	leaks, err := tb.Leaks(motoCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^` + bldRegion + `: (launch template|security group) (\S+) `)
	left := map[string][]string{}
	for _, l := range leaks {
		m := re.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("the killed build left %s; only its launch template and security group may stay", l)
			continue
		}
		left[m[1]] = append(left[m[1]], m[2])
	}
	if len(left["launch template"]) != 1 || len(left["security group"]) != 1 {
		t.Errorf("the killed build left %v; want its launch template and its security group", left)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := tb.MotoClient(bldRegion)
	for _, id := range left["launch template"] {
		if _, err := c.DeleteLaunchTemplate(ctx, &ec2.DeleteLaunchTemplateInput{LaunchTemplateId: aws.String(id)}); err != nil {
			t.Errorf("deleting %s: %v", id, err)
		}
	}
	// EC2 may still count the terminated instance in the group a moment.
	for _, id := range left["security group"] {
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(500 * time.Millisecond) {
			_, err := c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: aws.String(id)})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("deleting %s: %v", id, err)
				break
			}
		}
	}
}

// killPlugin SIGKILLs the plugin (Packer loses it: no cleanup at all).
func killPlugin(t *testing.T, p *bgPacker) {
	t.Helper()
	if killPlugins(t, p.cmd.Process.Pid) == 0 {
		t.Fatal("found no plugin process to kill")
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
