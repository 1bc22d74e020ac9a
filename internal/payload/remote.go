package payload

import (
	"embed"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remote"
)

// remoteFiles are the files uploaded to the build host.
//
//go:embed remote/build.sh remote/default.nix remote/entry.nix
var remoteFiles embed.FS

// sdImageModule is nixpkgs' AArch64 SD card image module, imported by both the
// built-in configuration and the wrapper of a user's configuration.
const sdImageModule = "<nixpkgs/nixos/modules/installer/sd-card/sd-image-aarch64.nix>"

// Names inside remote_directory. The NixOS configuration is one directory,
// remoteNixOS, that `-I nixos-config=` names: its default.nix is either the
// built-in configuration (with settings.json next to it) or entry.nix, which
// wraps the user's configuration uploaded into its config/ folder. Naming the
// directory makes the whole configuration the build's input.
const (
	remoteScript   = "build.sh"
	remoteNixOS    = "nixos"
	remoteDefault  = "nixos/default.nix"
	remoteSettings = "nixos/settings.json"
	remoteConfig   = "nixos/config"
	remoteFlake    = "flake"
	remoteResult   = "result"
	remotePID      = "build.pid"
)

// remoteEntries are every name the plugin creates in remote_directory; only
// these are removed, never the directory's other contents.
var remoteEntries = []string{remoteScript, remoteNixOS, remoteFlake, remoteResult, remotePID}

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

// nixpkgsURL is what `-I nixpkgs=` points at: a channel, or the tarball of a
// nixpkgs revision.
func nixpkgsURL(nixpkgs string) string {
	if nixpkgs == "" {
		nixpkgs = DefaultNixpkgs
	}
	if revisionPattern.MatchString(nixpkgs) {
		return "https://github.com/NixOS/nixpkgs/archive/" + nixpkgs + ".tar.gz"
	}
	return "channel:" + nixpkgs
}

// flakeTarget is the installable of a flake build: an uploaded local flake is
// built from its remote copy.
func flakeTarget(cfg *Config) string {
	ref, attr, _ := strings.Cut(cfg.Flake, "#")
	if _, local := LocalFlakeDir(ref); local {
		ref = "path:" + path.Join(cfg.RemoteDirectory, remoteFlake)
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
	if cfg.Flake != "" {
		return append(args, flakeTarget(cfg))
	}
	return append(args,
		"--file", "<nixpkgs/nixos>",
		"-I", "nixos-config="+path.Join(rd, remoteNixOS),
		"-I", "nixpkgs="+nixpkgsURL(cfg.Nixpkgs),
		"config.system.build.sdImage",
	)
}

// buildCommand is the remote `nix build` command line, shell-quoted.
func buildCommand(cfg *Config) string {
	return remote.Join(append([]string{"nix"}, nixArgs(cfg)...))
}

// remoteBuildCommand runs buildCommand through build.sh, which chooses the
// user to build as and enforces the timeout on the host itself.
func remoteBuildCommand(cfg *Config) string {
	secs := int64(cfg.BuildTimeoutDuration() / time.Second)
	if secs < 1 {
		secs = 1
	}
	rd := cfg.RemoteDirectory
	return "bash " + remote.Quote(path.Join(rd, remoteScript)) + " build " + remote.Quote(rd) + " " +
		strconv.FormatInt(secs, 10) + " " + buildCommand(cfg)
}

// ensureNixCommand installs Nix on the host when it is missing.
func ensureNixCommand(cfg *Config) string {
	return "bash " + remote.Quote(path.Join(cfg.RemoteDirectory, remoteScript)) + " ensure-nix"
}

// prepareCommand creates remote_directory and clears what an earlier build
// left in it.
func prepareCommand(cfg *Config) string {
	return "mkdir -p " + remote.Quote(cfg.RemoteDirectory) + " && " + removeEntriesCommand(cfg)
}

// cleanupCommand removes what the build put in remote_directory, and the
// directory itself when that leaves it empty. A build that ran as root may
// have left files only root can remove (a flake's new flake.lock): sudo
// removes those.
func cleanupCommand(cfg *Config) string {
	rm := removeEntriesCommand(cfg)
	return "{ " + rm + " 2>/dev/null || sudo -n " + rm + "; } && { rmdir " + remote.Quote(cfg.RemoteDirectory) + " 2>/dev/null || true; }"
}

func removeEntriesCommand(cfg *Config) string {
	parts := []string{"rm", "-rf", "--"}
	for _, e := range remoteEntries {
		parts = append(parts, path.Join(cfg.RemoteDirectory, e))
	}
	return remote.Join(parts)
}

// stopCommand asks a running build.sh to stop its build.
func stopCommand(cfg *Config) string {
	pid := remote.Quote(path.Join(cfg.RemoteDirectory, remotePID))
	return fmt.Sprintf("test -f %s && kill -TERM \"$(cat %s)\"", pid, pid)
}

// locateCommand lists the images in the build result, one store path per
// line.
func locateCommand(cfg *Config) string {
	dir := remote.Quote(path.Join(cfg.RemoteDirectory, remoteResult, "sd-image") + "/")
	return "find -L " + dir + " -maxdepth 1 -type f \\( -name '*.img.zst' -o -name '*.img' \\) -exec readlink -f {} \\;"
}

// probeCommand reports the image's size, whether zstd exists on the host and
// how many sessions sshd allows per connection (when it can be read).
func probeCommand(image string) string {
	q := remote.Quote(image)
	return "stat -L -c 'size=%s' " + q + " && " +
		"{ command -v zstd >/dev/null 2>&1 && echo zstd=yes || echo zstd=no; } && " +
		"{ sudo -n sshd -T 2>/dev/null | grep -i '^maxsessions ' | sed 's/^[^ ]* /maxsessions=/' || true; }"
}

// sha256Command prints the image's SHA-256 as sha256sum does.
func sha256Command(image string) string {
	return "sha256sum " + remote.Quote(image)
}

// rangeCommand prints length bytes of the remote file from offset, compressed
// with zstd when compress is set.
func rangeCommand(file string, offset, length int64, compress bool) string {
	cmd := fmt.Sprintf("dd if=%s bs=1M iflag=skip_bytes,count_bytes skip=%d count=%d status=none", remote.Quote(file), offset, length)
	if compress {
		cmd += " | zstd -1 -q -c"
	}
	return cmd
}
