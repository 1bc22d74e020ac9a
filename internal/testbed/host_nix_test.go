//go:build e2e

package testbed

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// TestHostNixIsStrict: on a host, the stand-in nix lets the real Nix 2.26 of
// Debian's nix-bin judge each command line before it fakes the build, so what
// real Nix refuses fails, with real Nix's words.
func TestHostNixIsStrict(t *testing.T) {
	p := newTestPool(t, HostPoolOptions{})
	signer, pub := newKey(t)
	h := startHost(t, p, "i-strictnix", pub)
	c := mustDial(t, h.Addr, h.Port, signer)
	mustRun(t, c, "sudo -n apt-get update -q >/dev/null && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=60 nix-bin >/dev/null")
	mustRun(t, c, "mkdir -p /tmp/b/cfg /tmp/b/flake && echo '{ ... }: { imports = [ <nixpkgs/nixos/modules/installer/sd-card/sd-image-aarch64.nix> ]; }' > /tmp/b/cfg/default.nix && mkdir -p /tmp/b/bad && echo '{ ... }: { imports = [ ' > /tmp/b/bad/default.nix")
	mustRun(t, c, `cat > /tmp/b/flake/flake.nix <<'EOF'
{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
  inputs.nixos-hardware.url = "github:NixOS/nixos-hardware";
  outputs = { nixpkgs, nixos-hardware, ... }: {
    nixosConfigurations.rpi4 = nixpkgs.lib.nixosSystem {
      modules = [
        "${nixpkgs}/nixos/modules/installer/sd-card/sd-image-aarch64.nix"
        { nixpkgs.hostPlatform = "aarch64-linux"; }
      ];
    };
    nixosConfigurations.pi5 = nixpkgs.lib.nixosSystem {
      modules = [
        "${nixpkgs}/nixos/modules/installer/sd-card/sd-image-aarch64.nix"
        nixos-hardware.nixosModules.raspberry-pi-5
        { nixpkgs.hostPlatform = "aarch64-linux"; }
      ];
    };
    nixosConfigurations.pi5-without-all-hardware = nixpkgs.lib.nixosSystem {
      modules = [
        "${nixpkgs}/nixos/modules/installer/sd-card/sd-image-aarch64.nix"
        nixos-hardware.nixosModules.raspberry-pi-5
        ({ lib, ... }: { nixpkgs.hostPlatform = "aarch64-linux"; hardware.enableAllHardware = lib.mkForce false; })
      ];
    };
    nixosConfigurations.noplatform = nixpkgs.lib.nixosSystem {
      modules = [ "${nixpkgs}/nixos/modules/installer/sd-card/sd-image-aarch64.nix" ];
    };
  };
}
EOF`)
	const base = "sudo -n -H env TMPDIR=/var/tmp nix build --extra-experimental-features 'nix-command flakes' --print-build-logs --out-link /tmp/b/result "
	const file = "--file '<nixpkgs/nixos>' -I nixos-config=/tmp/b/cfg -I nixpkgs=channel:nixos-26.05 "
	// nix-bin alone has no build users: root's Nix builds nothing until
	// nix-setup-systemd (which nix-bin only recommends) makes them.
	if _, stderr, err := sshRun(c, base+file+"config.system.build.sdImage"); err == nil || !strings.Contains(stderr, "the group 'nixbld' specified in 'build-users-group' does not exist") {
		t.Errorf("a build with nix-bin alone: %v, %q; want the missing build users", err, stderr)
	}
	mustRun(t, c, "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nix-setup-systemd >/dev/null")
	// The host presents itself as an AArch64 instance does (uname.sh; Nix's
	// system through the stand-in nix).
	if got := strings.Fields(mustRun(t, c, "uname -m; sudo -n uname -m; nix --extra-experimental-features nix-command config show system; sudo -n nix-instantiate --eval -E builtins.currentSystem")); strings.Join(got, " ") != `aarch64 aarch64 aarch64-linux "aarch64-linux"` {
		t.Errorf("the host's architecture: %q", got)
	}
	for _, tc := range []struct {
		name, args string
		ok         bool
		says       string
	}{
		{"the plugin's built-in command line", file + "config.system.build.sdImage", true, ""},
		{"a nixpkgs revision", "--file '<nixpkgs/nixos>' -I nixos-config=/tmp/b/cfg -I nixpkgs=https://github.com/NixOS/nixpkgs/archive/0123456789abcdef0123456789abcdef01234567.tar.gz config.system.build.sdImage", true, ""},
		{"a local flake", "path:/tmp/b/flake#nixosConfigurations.rpi4.config.system.build.sdImage", true, ""},
		{"a remote flake", "github:me/nixos-pi#nixosConfigurations.rpi4.config.system.build.sdImage", true, ""},
		{"an unknown flag", file + "--frobnicate config.system.build.sdImage", false, "unrecognised flag '--frobnicate'"},
		{"an -I entry naming no file", "--file '<nixpkgs/nixos>' -I nixos-config=/tmp/b/none -I nixpkgs=channel:nixos-26.05 config.system.build.sdImage", false, "nixos-config"},
		{"no nixpkgs on the search path", "--file '<nixpkgs/nixos>' -I nixos-config=/tmp/b/cfg config.system.build.sdImage", false, "nixpkgs"},
		{"a wrong --file", "--file '<nixpkgs/nixo>' -I nixos-config=/tmp/b/cfg -I nixpkgs=channel:nixos-26.05 config.system.build.sdImage", false, "nixo"},
		{"a wrong attribute path", file + "config.system.build.sdImag", false, "sdImag"},
		{"a flake without its output", "path:/tmp/b/flake", false, "does not provide attribute"},
		// sd-image.nix's hardware.enableAllHardware asks the initrd for
		// modules nixos-hardware's Raspberry Pi kernel lacks (example/flake).
		{"the Pi 5 kernel with all hardware's initrd modules", "path:/tmp/b/flake#nixosConfigurations.pi5.config.system.build.sdImage", false, "modprobe: FATAL: Module ahci not found"},
		{"the Pi 5 kernel without them", "path:/tmp/b/flake#nixosConfigurations.pi5-without-all-hardware.config.system.build.sdImage", true, ""},
		{"a flake configuration without a platform", "path:/tmp/b/flake#nixosConfigurations.noplatform.config.system.build.sdImage", false, "Neither nixpkgs.hostPlatform nor the legacy option nixpkgs.system has been set"},
		{"a flake's wrong configuration", "path:/tmp/b/flake#nixosConfigurations.rpi5.config.system.build.sdImage", false, "rpi5"},
		{"a remote flake without its output", "github:me/nixos-pi", false, "does not provide attribute"},
		{"a malformed flake reference", "'github:#nixosConfigurations.rpi4.config.system.build.sdImage'", false, "github:"},
		{"a module that does not parse", "--file '<nixpkgs/nixos>' -I nixos-config=/tmp/b/bad -I nixpkgs=channel:nixos-26.05 config.system.build.sdImage", false, "syntax error"},
		{"a known setting", file + "--option max-jobs 8 --option extra-substituters https://cache.example.org config.system.build.sdImage", true, ""},
		{"an unknown setting", file + "--option frobnicate 1 config.system.build.sdImage", true, "unknown setting 'frobnicate'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := sshRun(c, base+tc.args)
			t.Logf("%s%s: %v\nstdout: %s\nstderr: %s", base, tc.args, err, out, stderr)
			if (err == nil) != tc.ok {
				t.Fatalf("succeeded = %v, want %v", err == nil, tc.ok)
			}
			if tc.says != "" && !strings.Contains(stderr, tc.says) {
				t.Errorf("stderr lacks %q", tc.says)
			}
		})
	}
	// Real Nix writes the lock file of a local flake it builds; so does the
	// stand-in, whose --override-input keeps the real one from it.
	var lock struct {
		Nodes map[string]struct {
			Inputs map[string]any
			Locked map[string]any
		}
		Root    string
		Version int
	}
	raw := mustRun(t, c, "cat /tmp/b/flake/flake.lock")
	if err := json.Unmarshal([]byte(raw), &lock); err != nil {
		t.Fatalf("the local flake's flake.lock after its build: %v\n%s", err, raw)
	}
	np := lock.Nodes["nixpkgs"].Locked
	rev, _ := np["rev"].(string)
	nar, _ := np["narHash"].(string)
	if lock.Root != "root" || lock.Version != 7 || lock.Nodes["root"].Inputs["nixpkgs"] != "nixpkgs" ||
		np["type"] != "github" || np["owner"] != "NixOS" || np["repo"] != "nixpkgs" || np["ref"] != nil ||
		!regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(rev) || !strings.HasPrefix(nar, "sha256-") {
		t.Errorf("the local flake's flake.lock after its build: %s", raw)
	}
}
