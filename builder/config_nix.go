package builder

import (
	"fmt"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/debianami"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
)

// prepareReleaseNix checks that the Nix that debian_release's nix-bin
// installs can evaluate the chosen nixpkgs: Debian 12's Nix 2.8 is older than
// current nixpkgs needs (lib/minver.nix), and Debian 10 and 11 have no
// nix-bin. With source_ami the plugin cannot know the AMI's Nix.
func (c *Config) prepareReleaseNix(add func(...error), warnings *[]string) {
	if c.SourceAMI != "" || c.release.Number == 0 {
		return
	}
	have := c.release.NixBin()
	if have == "" {
		add(fmt.Errorf("debian_release: %q has no nix-bin package, so Nix cannot be installed on its AMI; use debian_release = \"trixie\" (Nix %s), or a source_ami with Nix preinstalled", c.DebianRelease, trixieNix()))
		return
	}
	if c.Flake != "" {
		if payload.VersionLess(have, "2.18") {
			*warnings = append(*warnings, fmt.Sprintf("debian_release: %s installs Nix %s; a flake pinning nixpkgs 25.11 or newer needs Nix 2.18 and would fail on the instance. Use debian_release = \"trixie\" unless the flake pins an older nixpkgs.", c.release, have))
		}
		return
	}
	need, known := payload.MinNix(c.Nixpkgs)
	switch {
	case !known && payload.VersionLess(have, "2.18"):
		*warnings = append(*warnings, fmt.Sprintf("debian_release: %s installs Nix %s; a nixpkgs revision from 25.11 on needs Nix 2.18 and would fail on the instance. Use debian_release = \"trixie\" unless the revision is older.", c.release, have))
	case known && payload.VersionLess(have, need):
		add(fmt.Errorf("debian_release: %s installs Nix %s, older than nixpkgs %q needs (Nix >= %s, its lib/minver.nix), so the build would fail on the instance; use debian_release = \"trixie\" (Nix %s), or nixpkgs = \"nixos-25.05\" or older", c.release, have, c.Nixpkgs, need, trixieNix()))
	}
}

// trixieNix is the Nix of Debian 13's nix-bin.
func trixieNix() string {
	r, _ := debianami.ParseRelease("trixie")
	return r.NixBin()
}
