package payload

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// imageSystem is the only platform the SD image may be built for.
const imageSystem = "aarch64-linux"

// platformExpr reads, from a nixosConfigurations entry, the platform its
// packages are built for and on: the pkgs NixOS builds the system with
// (lib.nixosSystem's result carries it; otherwise the module argument), so
// nixpkgs.hostPlatform, the legacy system argument and nixpkgs.pkgs all count.
const platformExpr = `c: let s = (c.pkgs or c._module.args.pkgs).stdenv; in { host = s.hostPlatform.system; build = s.buildPlatform.system; }`

// flakeConfigAttr is the flake's nixosConfigurations entry, as the build
// names it.
func flakeConfigAttr(cfg *Config) string {
	return strings.TrimSuffix(flakeTarget(cfg), ".config.system.build.sdImage")
}

// platformArgs are the arguments of the remote `nix eval` of the flake
// configuration's platform: the build's settings, the flake's entry.
func platformArgs(cfg *Config) []string {
	args := []string{"eval", "--extra-experimental-features", "nix-command flakes", "--json"}
	for _, k := range slices.Sorted(maps.Keys(cfg.NixOptions)) {
		args = append(args, "--option", k, cfg.NixOptions[k])
	}
	for i := 0; i+2 < len(cfg.extraArgs); i++ {
		if cfg.extraArgs[i] == "--option" {
			args = append(args, cfg.extraArgs[i:i+3]...)
			i += 2
		}
	}
	args = append(args, referenceLockArgs(cfg)...)
	return append(args, flakeConfigAttr(cfg), "--apply", platformExpr)
}

// platformCommand runs the evaluation through build.sh, as the build's own
// user and within build_timeout.
func platformCommand(cfg *Config) string {
	secs := max(int64(cfg.BuildTimeoutDuration()/time.Second), 1)
	rd := cfg.RemoteDirectory
	return "bash " + remotecmd.Quote(path.Join(rd, remoteScript)) + " eval " + remotecmd.Quote(rd) + " " +
		strconv.FormatInt(secs, 10) + " " + remotecmd.Join(append([]string{"nix"}, platformArgs(cfg)...))
}

// checkPlatform reads the evaluation's answer and refuses a configuration
// that is not built natively for aarch64-linux.
func checkPlatform(cfg *Config, out []byte) error {
	var p struct{ Host, Build string }
	if err := json.Unmarshal(lastJSON(out), &p); err != nil || p.Host == "" {
		return fmt.Errorf("flake: the platform of nixosConfigurations.%s could not be read (nix eval printed %q); check that it is a lib.nixosSystem configuration", flakeAttrName(cfg), strings.TrimSpace(string(out)))
	}
	attr := fmt.Sprintf("nixosConfigurations.%s of %q", flakeAttrName(cfg), flakeRefName(cfg))
	if p.Host != imageSystem {
		return fmt.Errorf("flake: %s is built for %s (its pkgs.stdenv.hostPlatform.system), not %s: the image would not boot an AArch64 board, and this host cannot build it. Set nixpkgs.hostPlatform = %q in that configuration", attr, p.Host, imageSystem, imageSystem)
	}
	if p.Build != "" && p.Build != imageSystem {
		return fmt.Errorf("flake: %s cross-compiles from %s (its pkgs.stdenv.buildPlatform.system), which this %s host cannot build; remove nixpkgs.buildPlatform from that configuration to build natively", attr, p.Build, imageSystem)
	}
	return nil
}

func flakeAttrName(cfg *Config) string {
	_, attr, _ := strings.Cut(cfg.Flake, "#")
	return attr
}

func flakeRefName(cfg *Config) string {
	ref, _, _ := strings.Cut(cfg.Flake, "#")
	return ref
}

// checkFlakePlatform evaluates, before the build, the platform of the flake's
// configuration on the host and refuses one that is not aarch64-linux.
func (r *run) checkFlakePlatform(ctx context.Context) ([]string, error) {
	r.ui.Say(fmt.Sprintf("Checking that nixosConfigurations.%s is built for %s", flakeAttrName(r.cfg), imageSystem))
	r.log.section("build.sh eval: " + remotecmd.Join(append([]string{"nix"}, platformArgs(r.cfg)...)))
	tail := newLogTail(r.ui, "nix: ", logLines).into(r.log, newSummary(r.cfg.FullOutput))
	var stdout strings.Builder
	st, err := remotecmd.Run(ctx, r.comm, platformCommand(r.cfg), &stdout, tail.Writer(1))
	tail.Flush()
	if err != nil {
		return tail.Tail(), err
	}
	if st != 0 {
		return tail.Tail(), evalFailed(r.cfg, st, tail.Tail())
	}
	return nil, checkPlatform(r.cfg, []byte(stdout.String()))
}

// noPlatform is what nixpkgs says of a configuration that sets no platform
// (nixos/modules/misc/nixpkgs.nix): a flake's lib.nixosSystem does not
// default to the evaluating machine's.
const noPlatform = "Neither nixpkgs.hostPlatform nor the legacy option nixpkgs.system has been set"

// evalFailed says why the evaluation of the platform failed, from the last
// lines Nix printed.
func evalFailed(cfg *Config, st int, lines []string) error {
	if slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, noPlatform) }) {
		attr := fmt.Sprintf("nixosConfigurations.%s of %q", flakeAttrName(cfg), flakeRefName(cfg))
		return fmt.Errorf("flake: %s sets no platform (Nix: %q), and a flake's lib.nixosSystem does not default to the host's. Set nixpkgs.hostPlatform = %q in that configuration", attr, noPlatform, imageSystem)
	}
	return fmt.Errorf("flake: evaluating nixosConfigurations.%s failed (nix eval exited %d); see the errors above and fix the flake", flakeAttrName(cfg), st)
}
