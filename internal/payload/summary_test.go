package payload

import (
	"strings"
	"testing"
)

// installOutput is build.sh ensure-nix on a Debian 13 host without Nix, as
// apt-get prints it.
const installOutput = `nixos-sd: Nix is not installed; installing Debian's nix-bin package with apt-get
Hit:1 http://deb.debian.org/debian trixie InRelease
Get:2 http://deb.debian.org/debian trixie-updates InRelease [47.3 kB]
Fetched 47.3 kB in 0s (199 kB/s)
Reading package lists...
Building dependency tree...
The following NEW packages will be installed:
  libnixmain2.26 nix-bin nix-setup-systemd
Get:3 http://deb.debian.org/debian trixie/main arm64 nix-bin arm64 2.26.3+dfsg-1 [480 kB]
W: Some index files failed to download. They have been ignored, or old ones used instead.
Selecting previously unselected package nix-bin.
Preparing to unpack .../nix-bin_2.26.3+dfsg-1_arm64.deb ...
Unpacking nix-bin (2.26.3+dfsg-1) ...
Setting up nix-bin (2.26.3+dfsg-1) ...
Processing triggers for man-db (2.13.0-1) ...
nixos-sd: installed nix (Nix) 2.26.3`

// buildOutput is a build of two derivations with paths fetched, as Nix and
// --print-build-logs print it, then a failure.
const buildOutput = `nixos-sd: running: nix build --print-build-logs ...
these 2 derivations will be built:
  /nix/store/0s6b2zq6d3l3f7kdjsq0ql3z0z6jvxmn-linux-6.12.drv
  /nix/store/1s6b2zq6d3l3f7kdjsq0ql3z0z6jvxmn-nixos-image-sd-card.drv
these 3 paths will be fetched (120.50 MiB download, 600.10 MiB unpacked):
  /nix/store/2s6b2zq6d3l3f7kdjsq0ql3z0z6jvxmn-gcc-14
  /nix/store/3s6b2zq6d3l3f7kdjsq0ql3z0z6jvxmn-binutils
  /nix/store/4s6b2zq6d3l3f7kdjsq0ql3z0z6jvxmn-zstd
copying path '/nix/store/2s6b2zq6d3l3f7kdjsq0ql3z0z6jvxmn-gcc-14' from 'https://cache.nixos.org'...
copying path '/nix/store/3s6b2zq6d3l3f7kdjsq0ql3z0z6jvxmn-binutils' from 'https://cache.nixos.org'...
copying path '/nix/store/4s6b2zq6d3l3f7kdjsq0ql3z0z6jvxmn-zstd' from 'https://cache.nixos.org'...
building '/nix/store/0s6b2zq6d3l3f7kdjsq0ql3z0z6jvxmn-linux-6.12.drv'...
linux> unpacking sources
linux>   CC      kernel/fork.o
warning: unknown setting 'max-job'
building '/nix/store/1s6b2zq6d3l3f7kdjsq0ql3z0z6jvxmn-nixos-image-sd-card.drv'...
nixos-image-sd-card> Running phase: buildPhase
error: builder for '/nix/store/1s6b2zq6d3l3f7kdjsq0ql3z0z6jvxmn-nixos-image-sd-card.drv' failed with exit code 1;
       last 10 log lines:
       > mkfs.ext4: No space left on device
nixos-sd: error: nix build failed with exit status 1; see nix's output above and fix the configuration`

// TestSummary: the normal output level keeps the script's lines (the
// install as one line with its duration), warnings and errors with what
// follows them, Nix's plan and one line per derivation built, and the count
// of fetched paths; full_output keeps everything.
func TestSummary(t *testing.T) {
	shown := func(sum *summary, out string) []string {
		var got []string
		for _, l := range strings.Split(out, "\n") {
			if s, ok := sum.show(l); ok {
				got = append(got, s)
			}
		}
		if d := sum.done(); d != "" {
			got = append(got, d)
		}
		return got
	}
	t.Setenv("PACKER_LOG", "")
	got := shown(newSummary(false), installOutput)
	want := []string{
		"Nix is not installed; installing Debian's nix-bin package with apt-get",
		"W: Some index files failed to download. They have been ignored, or old ones used instead.",
		"nix (Nix) 2.26.3 installed from Debian's packages in 0s",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("install summary:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	got = shown(newSummary(false), buildOutput)
	want = []string{
		"plan: 2 derivations to build",
		"plan: 3 paths to fetch (120.50 MiB download, 600.10 MiB unpacked)",
		"building linux-6.12",
		"warning: unknown setting 'max-job'",
		"building nixos-image-sd-card",
		"error: builder for '/nix/store/1s6b2zq6d3l3f7kdjsq0ql3z0z6jvxmn-nixos-image-sd-card.drv' failed with exit code 1;",
		"       last 10 log lines:",
		"       > mkfs.ext4: No space left on device",
		"nixos-sd: error: nix build failed with exit status 1; see nix's output above and fix the configuration",
		"fetched 3 store paths in 0s",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("build summary:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, full := range []struct {
		name string
		sum  func() *summary
	}{
		{"full_output", func() *summary { return newSummary(true) }},
		{"PACKER_LOG=1", func() *summary { t.Setenv("PACKER_LOG", "1"); return newSummary(false) }},
	} {
		if got := shown(full.sum(), buildOutput); strings.Join(got, "\n") != buildOutput {
			t.Errorf("%s: the output is not the whole stream:\n%s", full.name, strings.Join(got, "\n"))
		}
	}
}
