package payload

import (
	"embed"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/nixcache"
)

// hostFiles are the scripts and Nix files uploaded to the build host.
//
//go:embed hostfiles/build.sh hostfiles/default.nix hostfiles/entry.nix
var hostFiles embed.FS

// Names inside remote_directory. The NixOS configuration is one directory,
// remoteNixOS, that `-I nixos-config=` names: its default.nix is either the
// built-in configuration (with settings.json next to it) or entry.nix, which
// wraps the user's configuration uploaded into its config/ folder and the
// plugin's module, plugin.nix. Naming the
// directory makes the whole configuration the build's input.
const (
	remoteScript   = "build.sh"
	remoteNixOS    = "nixos"
	remoteDefault  = "nixos/default.nix"
	remoteSettings = "nixos/settings.json"
	remoteConfig   = "nixos/config"
	remotePlugin   = "nixos/plugin.nix"
	remoteFlake    = "flake"
	// remoteFlakeLock is a remote flake's lock as `nix flake metadata`
	// made it, which the build reads (--reference-lock-file).
	remoteFlakeLock = "flake-metadata.lock"
	remoteResult    = "result"
	remotePID       = "build.pid"
	// remoteSumsFile holds the image's SHA-256 sums build.sh computed after
	// the build (written through remoteSumsFile + ".tmp").
	remoteSumsFile = "image.sums"
)

// remoteEntries are every name the plugin creates in remote_directory; only
// these are removed, never the directory's other contents.
var remoteEntries = []string{remoteScript, remoteNixOS, remoteFlake, remoteFlakeLock, remoteResult, remotePID,
	remoteSumsFile, remoteSumsFile + ".tmp", nixcache.RemoteScript}
