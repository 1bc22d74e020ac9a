//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// TestBuilderArm64: the checked-in example builds on an instance that is
// AArch64 for real. Its host runs a Debian 13 arm64 root, every program of
// which (sshd, apt, dpkg, Nix, the stand-in nix's tools) the kernel runs
// through binfmt_misc and qemu-user-static; nothing plays the machine. The
// plugin installs Debian's arm64 nix-bin with apt from the test bed's mirror,
// and the real Nix evaluates the build as aarch64-linux on its own. Only the
// realisation is the stand-in's, as on every host. Without binfmt the test
// bed does not start and the test fails saying so.
func TestBuilderArm64(t *testing.T) {
	start := time.Now()
	tb := startTestbed(t, testbed.Options{DebianArch: "arm64"})
	dir, out := buildExample(t, tb)
	checkBuildReport(t, out)
	checkBuiltImage(t, filepath.Join(dir, "output-rpi", bldImageName))

	m := launchedInstance.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the output names no launched instance:\n%s", out)
	}
	h, ok := tb.Hosts().Stopped(m[1])
	if !ok {
		t.Fatalf("the instance %s's host is not among the stopped hosts", m[1])
	}
	// Real emulation: the kernel runs the host's sshd through the binfmt_misc
	// interpreter.
	if !strings.Contains(filepath.Base(h.Emulator), "qemu-aarch64") {
		t.Errorf("the host's sshd runs as %q, not through qemu-aarch64", h.Emulator)
	}
	// Nix came from the plugin: apt installed Debian's arm64 package.
	log, err := os.ReadFile(filepath.Join(dir, "output-rpi", payload.BuildLogName))
	if err != nil {
		t.Fatalf("the build log: %v", err)
	}
	for _, want := range []string{"nixos-sd: Nix is not installed; installing Debian's nix-bin package with apt-get",
		"Setting up nix-bin (2.26.3", "nixos-sd: installed nix (Nix) 2.26.3"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the build log lacks %q:\n%s", want, log)
		}
	}
	// What the machine is, as the build saw it: Debian's own uname (no
	// stand-in), and the real arm64 Nix's system, with no setting making it.
	records, err := h.MachineRecords()
	if err != nil {
		t.Fatal(err)
	}
	const want = `uname=/usr/bin/uname:aarch64 system=aarch64-linux currentSystem="aarch64-linux"`
	if len(records) != 1 || records[0] != want {
		t.Errorf("the host's machine as the build saw it: %q, want one build with %q", records, want)
	}
	_, phases, _ := strings.Cut(out, "Phases:")
	phases, _, _ = strings.Cut(phases, "Cost")
	t.Logf("the example built on an emulated arm64 host in %s; its phases:%s", time.Since(start).Round(time.Second), phases)
}
