package testbed

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The stand-ins installed into every host: in /usr/local/lib/nixos-sd-standin
// the stand-in nix, the after-dpkg hook and the stand-in nixpkgs; in
// /usr/local/sbin shutdown, poweroff, halt and reboot.
var (
	//go:embed standin/nix.sh
	standinNix []byte
	//go:embed standin/after-dpkg.sh
	standinAfterDpkg []byte
	//go:embed standin/shutdown.sh
	standinShutdown []byte
	//go:embed standin/uname.sh
	standinUname []byte
	//go:embed standin/nixpkgs standin/nixos-hardware
	standinNixpkgs embed.FS
)

// StandInOptions configure the image the stand-in nix makes.
type StandInOptions struct {
	// ImageMiB is the size of the uncompressed image; 0 = 64. At least 56
	// (8 MiB gap, 34 MiB FAT32 firmware partition, the rest ext4).
	ImageMiB int
	// Uncompressed makes the stand-in leave the image as .img; by default it
	// is zstd-compressed to .img.zst, as NixOS's sdImage.compressImage does.
	Uncompressed bool
	// BuildInputs makes the stand-in realise the image derivation's inputs
	// with the host's real Nix before it fakes the image: the stand-in
	// nixpkgs' probe, a small input-addressed derivation that takes a few
	// seconds, which a binary cache can then hold.
	BuildInputs bool
	// Arch is the machine the host presents itself as (uname -m, and the
	// system its Nix builds for): "" or "aarch64" as the Graviton instances
	// are; "x86_64" as another builder's default instance is; or
	// "x86_64-binfmt", an x86_64 host with Debian's Nix preinstalled (at
	// start) that builds aarch64-linux through extra-platforms.
	Arch string
}

const defaultImageMiB = 64

func (o StandInOptions) imageMiB() int {
	if o.ImageMiB == 0 {
		return defaultImageMiB
	}
	return o.ImageMiB
}

func (o StandInOptions) validate() error {
	switch o.Arch {
	case "", "aarch64", "x86_64", "x86_64-binfmt":
	default:
		return fmt.Errorf("testbed: StandInOptions.Arch must be \"aarch64\" (or empty), \"x86_64\" or \"x86_64-binfmt\", got %q", o.Arch)
	}
	if n := o.imageMiB(); n < 56 || n > 64*1024 {
		return fmt.Errorf("testbed: StandInOptions.ImageMiB must be between 56 and 65536 (or 0 for %d), got %d", defaultImageMiB, o.ImageMiB)
	}
	return nil
}

// conf is standin.conf, read by the stand-in nix.
func (o StandInOptions) conf() string {
	compress := 1
	if o.Uncompressed {
		compress = 0
	}
	conf := fmt.Sprintf("IMAGE_MIB=%d\nCOMPRESS=%d\n", o.imageMiB(), compress)
	if o.BuildInputs {
		conf += "BUILD_INPUTS=1\n"
	}
	if o.Arch != "" {
		conf += "ARCH=" + o.Arch + "\n"
	}
	return conf
}

// realConf is standin.conf on a host whose root is of another architecture
// (o.Arch is empty there): ARCH=real, the machine is what the real programs
// say under emulation, and the stand-in nix records it at each build
// (Host.MachineRecords).
func (o StandInOptions) realConf() string {
	return o.conf() + "ARCH=real\n"
}

// installStandIns writes the stand-ins into a host's bin and sbin.
func installStandIns(binDir, sbinDir string) error {
	return installStandInsWithUname(binDir, sbinDir, "")
}

// installStandInsWithUname also writes the stand-in uname into localBinDir
// (the host's /usr/local/bin), unless it is empty.
func installStandInsWithUname(binDir, sbinDir, localBinDir string) error {
	write := func(path string, data []byte) error {
		if err := os.WriteFile(path, data, 0o755); err != nil {
			return err
		}
		return os.Chmod(path, 0o755)
	}
	if err := write(filepath.Join(binDir, "nix"), standinNix); err != nil {
		return fmt.Errorf("testbed: installing the stand-in nix: %w", err)
	}
	if err := os.Symlink("nix", filepath.Join(binDir, "nix-build")); err != nil {
		return fmt.Errorf("testbed: installing the stand-in nix-build: %w", err)
	}
	if err := write(filepath.Join(binDir, "after-dpkg"), standinAfterDpkg); err != nil {
		return fmt.Errorf("testbed: installing the after-dpkg hook: %w", err)
	}
	sub, err := fs.Sub(standinNixpkgs, "standin")
	if err == nil {
		err = os.CopyFS(binDir, sub)
	}
	if err != nil {
		return fmt.Errorf("testbed: installing the stand-in nixpkgs: %w", err)
	}
	if localBinDir != "" {
		if err := write(filepath.Join(localBinDir, "uname"), standinUname); err != nil {
			return fmt.Errorf("testbed: installing the stand-in uname: %w", err)
		}
	}
	for _, name := range []string{"shutdown", "poweroff", "halt", "reboot"} {
		if err := write(filepath.Join(sbinDir, name), standinShutdown); err != nil {
			return fmt.Errorf("testbed: installing the stand-in %s: %w", name, err)
		}
	}
	return nil
}
