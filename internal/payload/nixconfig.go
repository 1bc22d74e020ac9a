package payload

import (
	"encoding/json"
	"path"
	"regexp"
	"sort"
	"strings"
)

// sdImageModule is nixpkgs' AArch64 SD card image module, imported by both the
// built-in configuration and the wrapper of a user's configuration.
const sdImageModule = "<nixpkgs/nixos/modules/installer/sd-card/sd-image-aarch64.nix>"

// configSource says where the NixOS configuration comes from: "built-in",
// "nixos_config" or "flake".
func configSource(cfg *Config) string {
	switch {
	case cfg.Flake != "":
		return "flake"
	case cfg.NixOSConfig != "":
		return "nixos_config"
	default:
		return "built-in"
	}
}

// stateVersion is the system.stateVersion of the built-in configuration: the
// release of a nixos-YY.MM channel, else the release of DefaultNixpkgs.
func stateVersion(nixpkgs string) string {
	re := regexp.MustCompile(`^nixos-([0-9]{2}\.[0-9]{2})(-.*)?$`)
	if m := re.FindStringSubmatch(nixpkgs); m != nil {
		return m[1]
	}
	if _, version, ok := releaseOfURL(nixpkgs); ok {
		return version[:5]
	}
	return re.FindStringSubmatch(DefaultNixpkgs)[1]
}

// settingsJSON is the settings.json read by the built-in default.nix.
func settingsJSON(cfg *Config) ([]byte, error) {
	keys := cfg.SSHAuthorizedKeys
	if keys == nil {
		keys = []string{}
	}
	host := cfg.Hostname
	if host == "" {
		host = "nixos"
	}
	nixpkgs := cfg.Nixpkgs
	if nixpkgs == "" {
		nixpkgs = DefaultNixpkgs
	}
	return json.MarshalIndent(struct {
		Hostname          string   `json:"hostname"`
		SSHAuthorizedKeys []string `json:"ssh_authorized_keys"`
		StateVersion      string   `json:"state_version"`
	}{host, keys, stateVersion(nixpkgs)}, "", "  ")
}

// nixpkgsURL is what `-I nixpkgs=` points at: the release a channel was
// pinned to, the channel, or the tarball of a nixpkgs revision.
func nixpkgsURL(cfg *Config) string {
	if cfg.pin != nil {
		return cfg.pin.URL
	}
	nixpkgs := cfg.Nixpkgs
	if nixpkgs == "" {
		nixpkgs = DefaultNixpkgs
	}
	if revisionPattern.MatchString(nixpkgs) {
		return "https://github.com/NixOS/nixpkgs/archive/" + nixpkgs + ".tar.gz"
	}
	if _, _, ok := releaseOfURL(nixpkgs); ok {
		return nixpkgs
	}
	return "channel:" + nixpkgs
}

// flakeTarget is the installable of a flake build: an uploaded local flake is
// built from its remote copy.
func flakeTarget(cfg *Config) string {
	ref, attr, _ := strings.Cut(cfg.Flake, "#")
	if _, local := LocalFlakeDir(cfg.Flake); local {
		ref = "path:" + path.Join(cfg.RemoteDirectory, remoteFlake)
	} else if cfg.flakeLock != nil {
		ref = cfg.flakeLock.URL
	}
	return ref + "#nixosConfigurations." + attr + ".config.system.build.sdImage"
}

// nixArgs are the arguments of the remote `nix` command, unquoted.
func nixArgs(cfg *Config) []string {
	rd := cfg.RemoteDirectory
	args := []string{"build",
		"--extra-experimental-features", "nix-command flakes",
		"--print-build-logs",
		"--out-link", path.Join(rd, remoteResult),
	}
	keys := make([]string, 0, len(cfg.NixOptions))
	for k := range cfg.NixOptions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--option", k, cfg.NixOptions[k])
	}
	args = append(args, cfg.extraArgs...)
	if cfg.Flake != "" {
		return append(append(args, referenceLockArgs(cfg)...), flakeTarget(cfg))
	}
	return append(args,
		"--file", "<nixpkgs/nixos>",
		"-I", "nixos-config="+path.Join(rd, remoteNixOS),
		"-I", "nixpkgs="+nixpkgsURL(cfg),
		"config.system.build.sdImage",
	)
}
