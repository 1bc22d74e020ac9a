//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// Rows of the fault matrix for the provisioner, on a host each row starts
// (onHost), and for the data source (lookup). Every provisioner row checks
// the host keeps no working directory of the build, unless the row says why.

func provisionerScenarios() []scenario {
	slowBuild := func(t *testing.T, h *provHost) { useSlowNix(t, h.host.Dir) }
	return []scenario{
		{name: "provisioner: remote build fails", files: failingConfig,
			bench: onHost{body: `    nixos_config = "configuration.nix"`, check: nixBuilt},
			want:  failedSayingSo, output: []string{"nixos-sd build failed", "nix build exited with status 1", "error: builder for '/nix/store/", "failed with exit code 1"}},
		// The host's dd flips one byte of the range starting at offset 0, as
		// a faulty transfer would; its sha256sum is untouched.
		{name: "provisioner: download corrupted in transit",
			bench: onHost{prepare: func(t *testing.T, h *provHost) { hostScript(t, h.host, "dd", corruptingDD) }, check: nixBuilt},
			want:  failedSayingSo, output: []string{"nixos-sd verify failed", "SHA-256", "the partial file was removed"}},
		// The build runs as root through sudo: the host's own timeout stops it.
		{name: "provisioner: build outlives build_timeout",
			bench: onHost{body: `    build_timeout = "3s"`, prepare: slowBuild, check: slowNixStopped(10 * time.Second)},
			want:  failedSayingSo, within: 90 * time.Second, output: []string{"ran longer than build_timeout (3s)"}},
		// Ctrl-C (SIGINT to Packer's process group). Packer does not wait for
		// a provisioner when interrupted (the SDK's StepProvision returns at
		// once and Packer exits), so the plugin cannot run its stop command:
		// build.sh notices that the SSH session that started it is gone and
		// stops the build itself.
		{name: "provisioner: Ctrl-C during the build",
			bench: onHost{prepare: slowBuild,
				during: func(t *testing.T, h *provHost, p *bgPacker) {
					started, _ := slowNixMarkers(h.host.Dir)
					if !p.waitFor(2*time.Minute, func() bool { _, err := os.Stat(started); return err == nil }) {
						t.Fatalf("the slow build never started:\n%s", p.out.String())
					}
					sigint(t, p)
				},
				check:        slowNixStopped(15 * time.Second),
				keepsWorkDir: "Packer does not wait for an interrupted provisioner, so nothing is left to remove the working directory"},
			want: failedSayingSo},
		// On Debian 12, apt-get installs Nix 2.8, and nixpkgs' own check
		// (lib/minver.nix: 2.18.0) stops the evaluation.
		{name: "provisioner: Nix of Debian 12 too old for nixpkgs",
			bench: onHost{pool: testbed.HostPoolOptions{DebianSuite: "bookworm"}},
			want:  failedSayingSo, output: []string{"nix (Nix) 2.8.0 installed from Debian's packages in ", "This version of Nixpkgs requires Nix >= 2.18.0",
				"this host's Nix (nix (Nix) 2.8.0) is older than the requested nixpkgs needs (Nix >= 2.18.0)", "Debian 13 AMI"}},
		// The host's real Nix only warns about a misspelt setting and would
		// build without it; the plugin stops.
		{name: "provisioner: nix_options names no setting of the host's Nix",
			bench: onHost{body: `    nix_options = { "max-job" = "8", "extra-substituters" = "https://cache.example.org" }`,
				check: func(t *testing.T, h *provHost, _ string) {
					if strings.Contains(h.standInCalls(t), "max-job") {
						t.Errorf("nix built with the unknown setting")
					}
				}},
			want: failedSayingSo, output: []string{`nix_options: "max-job" is not a setting of this host's Nix (nix (Nix) 2.26.3)`}},
		// On an x86_64 host (another builder's default instance type) the
		// build stops before Nix is installed.
		{name: "provisioner: x86_64 host",
			bench: onHost{pool: testbed.HostPoolOptions{StandIn: testbed.StandInOptions{Arch: "x86_64"}},
				check: func(t *testing.T, h *provHost, _ string) {
					for _, f := range []string{"upper/usr/bin/nix.real", "upper/var/lib/dpkg/info/nix-bin.list"} {
						if _, err := os.Stat(filepath.Join(h.host.Dir, f)); err == nil {
							t.Errorf("Nix was installed on the host: %s exists", f)
						}
					}
					if calls := h.standInCalls(t); calls != "" {
						t.Errorf("nix ran on the host:\n%s", calls)
					}
				}},
			want: failedSayingSo, output: []string{"this host is x86_64 (uname -m), not AArch64", "arm64 instance type", "Nothing was installed",
				"the host cannot build the aarch64-linux image"}},
		{name: "provisioner: working directory planted by another user", bench: plantedWorkDir(), want: succeeded},
		// The real Nix evaluates the flake configuration's platform; the
		// plugin refuses it before any build.
		{name: "provisioner: flake configuration for another platform", files: map[string]string{"pi-flake/flake.nix": x86Flake},
			bench: onHost{body: `    flake = "./pi-flake#pc"`,
				check: func(t *testing.T, h *provHost, _ string) {
					if calls := h.standInCalls(t); !strings.Contains(calls, "nixosConfigurations.pc --apply") || strings.Contains(calls, "nix build") {
						t.Errorf("the platform was not evaluated, or a build ran:\n%s", calls)
					}
				}},
			want: failedSayingSo, output: []string{`flake: nixosConfigurations.pc of "./pi-flake" is built for x86_64-linux (its pkgs.stdenv.hostPlatform.system), not aarch64-linux`,
				`Set nixpkgs.hostPlatform = "aarch64-linux"`}},
		// Every SSH connection of the download is cut twice while it runs
		// (see dropConnections); 256 MiB (about 85 MB compressed) at
		// 100 Mbit/s lasts long enough.
		{name: "provisioner: download connections dropped",
			bench: onHost{body: "    download_connections = 3\n    download_channels    = 2",
				pool: testbed.HostPoolOptions{
					Link:    &testbed.LinkProfile{RateMbit: 100, RTT: 40 * time.Millisecond, TCPWindow: 4 << 20},
					StandIn: testbed.StandInOptions{ImageMiB: 256},
				},
				during: dropConnections(0.25, 0.6)},
			want: succeeded, output: []string{"moving the download to 3 SSH connections of its own with 2 channels each",
				"resumed after a dropped channel or connection", "SHA-256 verified"}},
	}
}

// x86Flake is a flake whose only configuration is built for x86_64-linux.
const x86Flake = `{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
  outputs = { nixpkgs, ... }: {
    nixosConfigurations.pc = nixpkgs.lib.nixosSystem {
      modules = [ { nixpkgs.hostPlatform = "x86_64-linux"; } ];
    };
  };
}
`

// nixBuilt checks the host's nix was asked for the image.
func nixBuilt(t *testing.T, h *provHost, _ string) {
	t.Helper()
	if calls := h.standInCalls(t); !strings.Contains(calls, "config.system.build.sdImage") {
		t.Errorf("nix was never asked for the image:\n%s", calls)
	}
}

// slowNixStopped checks the host's slow nix was stopped within d.
func slowNixStopped(d time.Duration) func(t *testing.T, h *provHost, out string) {
	return func(t *testing.T, h *provHost, _ string) {
		t.Helper()
		_, stopped := slowNixMarkers(h.host.Dir)
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			if _, err := os.Stat(stopped); err == nil {
				return
			}
		}
		t.Errorf("the remote nix was not stopped within %s", d)
	}
}

// dropConnections cuts every SSH connection of the download once each share
// of it arrived: the host's sshd loses the processes serving each connection
// (its per-connection children, SIGKILLed with what they run), as when a NAT
// or a flaky link drops them. The download must reconnect (the
// communicator's connection and the provisioner's own), go on from what it
// has, and deliver the image the host built, verified (onHost checks it).
func dropConnections(shares ...float64) func(t *testing.T, h *provHost, p *bgPacker) {
	return func(t *testing.T, h *provHost, p *bgPacker) {
		t.Helper()
		out := filepath.Join(p.cmd.Dir, "out") // onHost's output_directory
		for _, share := range shares {
			if !p.waitFor(3*time.Minute, func() bool { return downloaded(out) >= share }) {
				t.Errorf("the download ended before %.0f%% of it was seen arriving: the row proves nothing; make the image larger or the link slower", share*100)
				return
			}
			// The communicator's connection and at least one of the download's own.
			n, err := killSSHDConnections(h.host)
			t.Logf("at %.0f%%: %d connections cut", share*100, n)
			if err != nil || n < 2 {
				t.Errorf("the cut at %.0f%% dropped %d connection(s) (%v), want several", share*100, n, err)
			}
		}
	}
}

// downloaded is the share of the partial download in out that arrived (its
// allocated blocks: the file is sparse until ranges land); 0 when there is
// none.
func downloaded(out string) float64 {
	matches, _ := filepath.Glob(filepath.Join(out, "*.zst.partial"))
	share := 0.0
	for _, m := range matches {
		var st syscall.Stat_t
		if syscall.Stat(m, &st) == nil && st.Size > 0 {
			share = max(share, float64(st.Blocks*512)/float64(st.Size))
		}
	}
	return share
}

// killSSHDConnections SIGKILLs the processes serving each SSH connection of
// the host's sshd (its children and theirs) and returns how many connections
// it cut.
func killSSHDConnections(h *testbed.Host) (int, error) {
	b, err := os.ReadFile(filepath.Join(h.Dir, "state", "sshd", "sshd.pid"))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, err
	}
	conns := children(pid)
	for _, c := range conns {
		killTree(c)
	}
	return len(conns), nil
}

func children(pid int) []int {
	var out []int
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

func killTree(pid int) {
	// Stop it first so that its children cannot be reparented away.
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	for _, c := range children(pid) {
		killTree(c)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

// corruptingDD replaces dd on the host's PATH (its private /usr/local/bin,
// ahead of /usr/bin): it flips one byte of the range starting at offset 0.
const corruptingDD = `#!/bin/bash
# Test bed: a dd that corrupts byte 1000 of the range starting at offset 0.
case " $* " in
*" skip=0 "*)
	tmp=$(mktemp)
	/bin/dd "$@" of="$tmp"
	b=$(od -An -tu1 -j1000 -N1 "$tmp" | tr -d ' ')
	printf "\\$(printf %03o $((255 - b)))" | /bin/dd of="$tmp" bs=1 seek=1000 conv=notrunc status=none
	cat "$tmp"
	rm -f "$tmp"
	;;
*) exec /bin/dd "$@" ;;
esac
`

// plantedWorkDir: another local user of the host prepared the old
// predictable path /tmp/nixos-sd in advance, as a symlink to a directory of
// their own (where they could swap the configuration or the result between
// upload and build). The build must work in a fresh private directory and
// put nothing there.
func plantedWorkDir() onHost {
	var planted atomic.Int32
	var stop context.CancelFunc
	done := make(chan struct{})
	return onHost{
		prepare: func(t *testing.T, h *provHost) {
			hostTmp := filepath.Join(h.host.Dir, "tmp")
			attacker := filepath.Join(hostTmp, "attacker")
			link := filepath.Join(hostTmp, "nixos-sd")
			for _, err := range []error{os.Mkdir(attacker, 0o777), os.Chmod(attacker, 0o777), os.Chown(attacker, 65534, 65534), // nobody
				os.Symlink("/tmp/attacker", link), os.Lchown(link, 65534, 65534)} {
				if err != nil {
					t.Fatal(err)
				}
			}
			// Watch the attacker's directory for the whole build.
			var ctx context.Context
			ctx, stop = context.WithCancel(context.Background())
			t.Cleanup(stop)
			go func() {
				defer close(done)
				for ctx.Err() == nil {
					if entries, _ := os.ReadDir(attacker); len(entries) > 0 {
						planted.Add(1)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}()
		},
		check: func(t *testing.T, h *provHost, _ string) {
			stop()
			<-done
			if n := planted.Load(); n != 0 {
				t.Errorf("the build wrote into the directory planted at /tmp/nixos-sd (seen %d times)", n)
			}
			if calls := h.standInCalls(t); !workDirPath.MatchString(calls) {
				t.Errorf("nix did not run in a mktemp -d working directory:\n%s", calls)
			}
			if target, err := os.Readlink(filepath.Join(h.host.Dir, "tmp", "nixos-sd")); err != nil || target != "/tmp/attacker" {
				t.Errorf("the planted symlink was changed: %q %v", target, err)
			}
		},
	}
}

func lookupScenarios() []scenario {
	// The data source failed: the build's provisioner never printed an AMI.
	noAMI := []string{"AMI="}
	return []scenario{
		{name: "data source: unknown release at validate", bench: lookup{command: "validate", vars: []string{"region=us-east-2", "release=stretch"}},
			want: failedSayingSo, absent: noAMI, check: noCalls,
			output: []string{`release: unknown Debian release "stretch"; use one of "buster" (10), "bullseye" (11), "bookworm" (12), "trixie" (13), "forky" (14)`}},
		{name: "data source: no region at validate", bench: lookup{command: "validate", vars: []string{"region="}, noRegion: true},
			want: failedSayingSo, absent: noAMI, check: noCalls,
			output: []string{`region: required, and the AWS SDK's configuration gives none`, `for example region = "us-east-2" in the source, or export AWS_REGION=us-east-2`}},
		{name: "data source: no region at build", bench: lookup{command: "build", vars: []string{"region="}, noRegion: true},
			want: failedSayingSo, absent: noAMI, check: noCalls, output: []string{`region: required`}},
		{name: "data source: no image in the region", bench: lookup{command: "build", vars: []string{"region=us-east-2", "release=forky"}},
			want: failedSayingSo, absent: noAMI, called: []string{"DescribeImages"},
			output: []string{"no Debian 14 (forky) arm64 AMI owned by 136693071363 in region us-east-2 matches",
				"name=debian-14-arm64-*", "check the region, or set include_deprecated = true, or widen owners/filters"}},
		{name: "data source: only deprecated images", bench: lookup{command: "build", vars: []string{"region=eu-west-1", "release=bullseye"}},
			want: failedSayingSo, absent: noAMI, called: []string{"DescribeImages"},
			output: []string{"no Debian 11 (bullseye) arm64 AMI owned by 136693071363 in region eu-west-1 matches", "2 deprecated", "set include_deprecated = true"}},
		{name: "data source: EC2 refuses the credentials", bench: lookup{command: "build", vars: []string{"region=us-east-1"}},
			rules: []testbed.Rule{{Action: "DescribeImages", ErrorCode: "AuthFailure", HTTPStatus: 401, Message: "AWS was not able to validate the provided access credentials"}},
			want:  failedSayingSo, absent: noAMI,
			output: []string{"DescribeImages in us-east-1 failed: AuthFailure: AWS was not able to validate the provided access credentials", "check your credentials"},
			check:  callCount("DescribeImages", func(n int) bool { return n > 0 }, "at least one (refused)")},
	}
}
