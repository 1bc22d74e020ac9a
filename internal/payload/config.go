//go:generate go tool packer-sdc struct-markdown
//go:generate go tool packer-sdc mapstructure-to-hcl2 -type Config

package payload

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/nixcache"
)

// DefaultNixpkgs is the newest stable NixOS channel the plugin knows. When
// `nixpkgs` is not set the build asks the channel server for the newest
// stable channel alive that day and uses this one only when the server
// cannot tell (see PinNixpkgs). A `nixos-*` channel
// is served from the binary cache; `release-*` branches are not (builds then
// take hours).
const DefaultNixpkgs = "nixos-26.05"

// Config is the NixOS build and the download of its image.
type Config struct {
	// A NixOS `configuration.nix` file, or a directory holding one (uploaded
	// whole, so it may import other files). It is combined with nixpkgs'
	// `sd-image-aarch64` module. When neither this nor `flake` is set, the
	// plugin's built-in configuration builds a generic AArch64 SD image that
	// boots Raspberry Pi 3 and 4, with SSH enabled for `ssh_authorized_keys`.
	NixOSConfig string `mapstructure:"nixos_config" required:"false"`
	// A flake reference with the `nixosConfigurations` attribute to build, for
	// example `github:me/nixos-pi#rpi4`, or a local directory and attribute such
	// as `./pi-flake#rpi4`, `${path.root}/pi-flake#rpi4` or `path:pi-flake#rpi4`.
	// A reference is local, and its directory uploaded, when it starts with
	// `path:`, `/`, `./` or `../`, or names a directory that exists (relative
	// to where packer runs); other references (`github:...`, `nixpkgs#...`) are
	// fetched by the build host. The build targets
	// `nixosConfigurations.<attr>.config.system.build.sdImage`, as written: it
	// is refused with `nixos_config`, `nixpkgs`, `hostname`,
	// `ssh_authorized_keys` and `use_local_ssh_keys = true`, which the plugin
	// could not apply. Before the build, the host's Nix evaluates the
	// configuration's platform (`pkgs.stdenv.hostPlatform.system`, set with
	// `nixpkgs.hostPlatform`); anything but `aarch64-linux`, or a cross
	// build from another platform, is refused.
	Flake string `mapstructure:"flake" required:"false"`
	// The nixpkgs to build against: a channel name such as `nixos-26.05`, a
	// 40-hex-digit nixpkgs git revision (GitHub's archive of it), or a NixOS
	// release's `nixexprs.tar.xz` URL, such as the `nixpkgs_url` a manifest
	// records (`https://releases.nixos.org/nixos/26.05/nixos-26.05.806273.650e572363c0/nixexprs.tar.xz`).
	// A channel is fixed to the release it points at before the build (see
	// `nixpkgs_channels_url`). Defaults to the newest stable channel alive on
	// the day of the build, as the channel server has it (`nixos-26.05` when
	// the server cannot be asked, with a warning). Refused with
	// `flake`, which pins its own inputs.
	Nixpkgs string `mapstructure:"nixpkgs" required:"false"`
	// The NixOS channel server a `nixpkgs` channel is resolved on before the
	// build: the channel's URL there redirects to the release it points at
	// (for example `https://releases.nixos.org/nixos/26.05/nixos-26.05.806273.650e572363c0`),
	// whose `nixexprs.tar.xz` the build uses and whose `git-revision` the
	// manifest records. A channel it does not have fails before anything is
	// created; a server that cannot be asked is a warning. Defaults to
	// `https://channels.nixos.org`.
	NixpkgsChannelsURL string `mapstructure:"nixpkgs_channels_url" required:"false"`
	// SSH public keys allowed to log in as `root` and `nixos` on the built image
	// of the built-in configuration, and as `root` on a `nixos_config` build
	// (through a module the plugin adds, with `services.openssh.enable`; the
	// manifest shows it). Each must be a whole OpenSSH public key line. When
	// not set, your own public keys are used (see `use_local_ssh_keys`).
	// Refused with `flake`.
	SSHAuthorizedKeys []string `mapstructure:"ssh_authorized_keys" required:"false"`
	// When `ssh_authorized_keys` is not set, let your own public keys into the
	// built-in configuration: every `~/.ssh/*.pub` and the keys the SSH agent
	// holds (`SSH_AUTH_SOCK`), so that you can log in to the board at first
	// boot. The build says which keys it added. Defaults to true for the
	// built-in configuration; set false to leave them out (an image nobody can
	// log in to over SSH gets a warning before the build starts). With
	// `nixos_config` only `true` adds them (as `ssh_authorized_keys` would be);
	// `true` is refused with `flake`.
	UseLocalSSHKeys *bool `mapstructure:"use_local_ssh_keys" required:"false"`
	// The host name of the built system. Defaults to `nixos` for the built-in
	// configuration; with `nixos_config`, when set, it overrides the
	// configuration's `networking.hostName` (through the module the plugin
	// adds). Refused with `flake`.
	Hostname string `mapstructure:"hostname" required:"false"`
	// Extra Nix settings passed to the build as `--option NAME VALUE`, for
	// example `{ "extra-substituters" = "https://cache.example.org",
	// "extra-trusted-public-keys" = "cache.example.org-1:...", "max-jobs" = "8" }`.
	NixOptions map[string]string `mapstructure:"nix_options" required:"false"`
	// The local file name of the image, without directory. Defaults to the
	// name the NixOS build gives it (for example
	// `nixos-image-sd-card-26.05.20260601.abcdef0-aarch64-linux.img`).
	ImageName string `mapstructure:"image_name" required:"false"`
	// The local directory the image, its `.sha256`, its manifest and the build
	// log are written to. Defaults to `output-<build name>`. It must not exist
	// unless Packer runs with `-force`, which empties it first, or it holds
	// only the build log a failed build left.
	OutputDirectory string `mapstructure:"output_directory" required:"false"`
	// Decompress the downloaded `.img.zst` into a plain, sparse `.img`.
	// Defaults to true; set false to keep the compressed file.
	Decompress *bool `mapstructure:"decompress" required:"false"`
	// Hash the decompressed image locally as it is written, for its
	// `.sha256` and manifest, and compare it with the host's. By default the
	// host computes the image's SHA-256 right after the build (decompressing
	// its copy on its own cores) and this machine checks the compressed bytes against the
	// host's SHA-256 as they arrive and relies on zstd's frame checksum for
	// the decoding, which saves about 0.6 CPU-seconds per GiB here. Hosts
	// without `zstd` always have the image hashed locally.
	HashImageLocally bool `mapstructure:"hash_image_locally" required:"false"`
	// Show everything the build host prints (apt-get's output, every line
	// of Nix's and of the builders') instead of a summary: the script's own
	// lines, one line per package-manager step, Nix's plan, one `building
	// NAME` per derivation, warnings and errors. The build log
	// (`nixos-sd-build.log` beside the image, `build_log` in the manifest)
	// holds everything either way, and `PACKER_LOG=1` shows it too. Defaults
	// to false.
	FullOutput bool `mapstructure:"full_output" required:"false"`
	// Keep the uploaded configuration and the build result on the remote host
	// after the download, for debugging. Defaults to false.
	KeepRemoteFiles bool `mapstructure:"keep_remote_files" required:"false"`
	// How many SSH channels download the image on each SSH connection, each
	// fetching its own range. One channel carries at most 2 MiB per round
	// trip (about 26 MB/s at 80 ms). Defaults to choosing from the round
	// trip the download measures (2 on a LAN and about 3 at 80 ms on each
	// connection of its own, 4 on the communicator's); 0 is the same as
	// unset. 1 to 32; sshd's
	// MaxSessions caps it (at 7 on the communicator's connection, 9 on the
	// others, with the usual 10).
	DownloadChannels int `mapstructure:"download_channels" required:"false"`
	// How many SSH connections download the image. With more than one, the
	// download moves from the communicator's connection to that many
	// connections of its own, which log in as the communicator does (same
	// host, port, user and key) and stream range after range. One TCP
	// connection carries at most its window per round trip (about 50 MB/s at
	// 80 ms with Linux's default buffers), so a long, fast link needs
	// several. Defaults to choosing from the measured round trip (1 on a LAN,
	// 5 at 80 ms); setting 1 keeps the download on the communicator's
	// connection; 0 is the same as unset. 1 to 16.
	DownloadConnections int `mapstructure:"download_connections" required:"false"`
	// How long the remote build may run before it is stopped. Defaults to `2h`.
	BuildTimeout string `mapstructure:"build_timeout" required:"false"`
	// The directory on the remote host that receives the configuration and
	// holds the build. It must not exist: the build creates it, private to
	// the user (mode 0700), and removes it afterwards. Defaults to a new
	// directory per build from `mktemp -d` in the host's `$TMPDIR` or `/tmp`,
	// a path nobody can prepare in advance.
	RemoteDirectory string `mapstructure:"remote_directory" required:"false"`
	// A Nix binary cache in an S3 bucket of your own: the build substitutes
	// what an earlier build put there and uploads what it built. See
	// docs/guides/binary-cache.md and the `cache` block below.
	Cache *nixcache.Config `mapstructure:"cache" required:"false"`

	buildTimeout  time.Duration
	force         bool
	hostnameSet   bool
	sshKeySources []string
	warnings      []string
	// extraArgs are arguments of this run's nix build (the cache's).
	extraArgs []string
	// pinned is set once PinNixpkgs ran; pin is the release it fixed.
	pinned bool
	pin    *ChannelPin
	// nixpkgsDefault is set when nixpkgs was not given; now is the clock
	// the default channel and end-of-life checks read (time.Now if nil).
	nixpkgsDefault bool
	now            func() time.Time
	// flakeLock is a remote flake as locked before the build;
	// referenceLock the host's copy of its lock file the build reads, empty
	// when the host's Nix cannot read one.
	flakeLock     *FlakeLock
	referenceLock string
}

var (
	revisionPattern = regexp.MustCompile(`^[0-9a-f]{40}$`)
	channelPattern  = regexp.MustCompile(`^(nixos|nixpkgs)-[0-9a-z.\-]+$`)
	hostnamePattern = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$`)
)

// Prepare validates the options and fills in defaults. buildName is Packer's
// build name (for the output directory) and force is Packer's -force flag.
func (c *Config) Prepare(buildName string, force bool) []error {
	var errs []error
	add := func(es ...error) { errs = append(errs, es...) }
	c.force = force
	set := explicit{hostname: c.Hostname != "", nixpkgs: c.Nixpkgs != "", localKeys: c.UseLocalSSHKeys != nil && *c.UseLocalSSHKeys}
	c.hostnameSet = set.hostname
	add(c.checkCombinations(set)...)
	c.prepareSource(add)
	c.prepareLogin(add, set)
	c.prepareHost(add)
	c.prepareOutput(add, buildName)
	c.prepareDownload(add)
	if c.Cache != nil {
		add(c.Cache.Prepare()...)
	}
	return errs
}

// prepareSource checks what the image is built from: nixos_config or flake,
// and nixpkgs.
func (c *Config) prepareSource(add func(...error)) {
	if c.NixOSConfig != "" && c.Flake != "" {
		add(errors.New("nixos_config and flake: set one or the other; a flake pins its own configuration"))
	}
	if c.NixOSConfig != "" {
		st, err := os.Stat(c.NixOSConfig)
		switch {
		case err != nil:
			add(fmt.Errorf("nixos_config: %q does not exist; give the path to a configuration.nix file or a directory holding one (relative paths are from where packer runs)", c.NixOSConfig))
		case st.IsDir():
			if _, err := os.Stat(filepath.Join(c.NixOSConfig, "configuration.nix")); err != nil {
				add(fmt.Errorf("nixos_config: directory %q has no configuration.nix; add one or point nixos_config at the file itself", c.NixOSConfig))
			} else {
				add(checkConfigKeys(c.NixOSConfig)...)
			}
		case !strings.HasSuffix(st.Name(), ".nix"):
			add(fmt.Errorf("nixos_config: %q is not a .nix file; point it at a configuration.nix or a directory holding one", c.NixOSConfig))
		default:
			add(checkConfigKeys(c.NixOSConfig)...)
		}
	}
	if c.Flake != "" {
		if _, err := parseFlake(c.Flake); err != nil {
			add(err)
		}
	}
	if c.Nixpkgs == "" {
		c.Nixpkgs = DefaultNixpkgs
		c.nixpkgsDefault = true
	} else if _, _, release := releaseOfURL(c.Nixpkgs); !release && !revisionPattern.MatchString(c.Nixpkgs) && !channelPattern.MatchString(c.Nixpkgs) {
		add(fmt.Errorf("nixpkgs: %q is neither a channel, a nixpkgs revision nor a release's nixexprs.tar.xz URL; use a channel such as \"nixos-26.05\", a 40-hex-digit revision or a URL such as \"https://releases.nixos.org/nixos/26.05/nixos-26.05.806273.650e572363c0/nixexprs.tar.xz\" (nixpkgs_url in a manifest)", c.Nixpkgs))
	}
	if c.NixpkgsChannelsURL == "" {
		c.NixpkgsChannelsURL = DefaultChannelsURL
	} else if u, err := url.Parse(c.NixpkgsChannelsURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add(fmt.Errorf("nixpkgs_channels_url: %q is not an http(s) URL; use a URL such as %q, or leave it unset", c.NixpkgsChannelsURL, DefaultChannelsURL))
	}
	if strings.HasPrefix(c.Nixpkgs, "nixos-") && strings.Contains(c.Nixpkgs, "release") {
		add(fmt.Errorf("nixpkgs: %q is not a channel; use a nixos-* channel such as %q", c.Nixpkgs, DefaultNixpkgs))
	}
}

// prepareLogin checks who may log in to the image: ssh_authorized_keys (or
// the local keys use_local_ssh_keys adds) and the hostname it answers to.
func (c *Config) prepareLogin(add func(...error), set explicit) {
	add(c.checkKeys()...)
	if c.UseLocalSSHKeys == nil {
		t := true
		c.UseLocalSSHKeys = &t
	}
	c.sshKeySources, c.warnings = nil, nil
	// Local keys go into the built-in configuration unless turned off, and
	// into a nixos_config only when asked for.
	if c.Flake == "" && len(c.SSHAuthorizedKeys) == 0 {
		if c.NixOSConfig == "" && *c.UseLocalSSHKeys || set.localKeys {
			c.SSHAuthorizedKeys, c.sshKeySources = localSSHKeys()
		}
		if set.localKeys && len(c.SSHAuthorizedKeys) == 0 {
			c.warnings = append(c.warnings, "use_local_ssh_keys: true, but no key of yours was found (none in ~/.ssh/*.pub or the SSH agent): the image gets no key from the plugin. Set ssh_authorized_keys, or add a key to the SSH agent.")
		} else if c.NixOSConfig == "" && len(c.SSHAuthorizedKeys) == 0 {
			c.warnings = append(c.warnings, "ssh_authorized_keys: not set, and no key of yours was added (none in ~/.ssh/*.pub or the SSH agent, or use_local_ssh_keys = false): "+
				"nobody will be able to log in to the built image over SSH. Set ssh_authorized_keys = [\"ssh-ed25519 AAAA... you@host\"] to log in at first boot.")
		}
	}
	if c.Hostname == "" {
		c.Hostname = "nixos"
	} else if !hostnamePattern.MatchString(c.Hostname) {
		add(fmt.Errorf("hostname: %q is not a valid host name (letters, digits and '-', at most 63)", c.Hostname))
	}
}

// prepareHost checks how the build runs on the host: nix_options,
// build_timeout and remote_directory.
func (c *Config) prepareHost(add func(...error)) {
	add(c.checkNixOptions()...)
	c.buildTimeout = 2 * time.Hour
	if c.BuildTimeout != "" {
		d, err := time.ParseDuration(c.BuildTimeout)
		if err != nil || d <= 0 {
			add(fmt.Errorf("build_timeout: %q is not a positive duration; use a value such as \"90m\" or \"3h\"", c.BuildTimeout))
		} else {
			c.buildTimeout = d
		}
	}
	// Unset, each run makes a fresh directory with mktemp -d (workDirCommand).
	if rd := c.RemoteDirectory; rd != "" {
		if !strings.HasPrefix(rd, "/") || strings.ContainsAny(rd, " '\"$`\\") {
			add(fmt.Errorf("remote_directory: %q must be an absolute path without spaces or shell characters; use a path such as \"/var/tmp/nixos-sd\"", rd))
		} else if clean := path.Clean(rd); strings.Count(clean, "/") < 2 || strings.Contains(rd, "..") {
			// The directory is removed after the build: never "/", "/tmp" or a path that climbs out.
			add(fmt.Errorf("remote_directory: %q must be a directory of its own, at least two levels deep and without \"..\", such as \"/var/tmp/nixos-sd\" (it is created by the build and removed after it); choose such a directory", rd))
		}
	}
}

// prepareOutput checks where the image goes and in which form: image_name,
// output_directory (which must not exist unless -force) and decompress.
func (c *Config) prepareOutput(add func(...error), buildName string) {
	if c.ImageName != "" && (strings.ContainsRune(c.ImageName, '/') || c.ImageName == "." || c.ImageName == "..") {
		add(fmt.Errorf("image_name: %q must be a plain file name; put the directory in output_directory", c.ImageName))
	}
	if c.OutputDirectory == "" {
		name := buildName
		if name == "" {
			name = "nixos-sd"
		}
		c.OutputDirectory = "output-" + name
	}
	if !c.force {
		if _, err := os.Stat(c.OutputDirectory); err == nil && !onlyBuildLog(c.OutputDirectory) {
			add(fmt.Errorf("output_directory: %q already exists; remove it, choose another output_directory, or run packer with -force", c.OutputDirectory))
		}
	}
	if c.Decompress == nil {
		t := true
		c.Decompress = &t
	}
	if *c.Decompress && strings.HasSuffix(c.ImageName, ".zst") {
		add(fmt.Errorf("image_name: %q ends in .zst, but the image is decompressed (decompress defaults to true); name it %q, or set decompress = false to keep the compressed file", c.ImageName, strings.TrimSuffix(c.ImageName, ".zst")))
	}
}

// prepareDownload checks download_channels and download_connections.
func (c *Config) prepareDownload(add func(...error)) {
	if c.DownloadChannels < 0 || c.DownloadChannels > 32 {
		add(fmt.Errorf("download_channels: %d is out of range; use 1 to 32, or leave it unset to choose from the link", c.DownloadChannels))
	}
	if c.DownloadConnections < 0 || c.DownloadConnections > 16 {
		add(fmt.Errorf("download_connections: %d is out of range; use 1 to 16, or leave it unset to choose from the link", c.DownloadConnections))
	}
}

// Warnings are what Prepare found worth saying but not wrong, such as an
// image nobody can log in to.
func (c *Config) Warnings() []string { return c.warnings }

// LocalSSHKeySources are where the keys Prepare added to
// ssh_authorized_keys came from (use_local_ssh_keys), empty when it added none.
func (c *Config) LocalSSHKeySources() []string { return c.sshKeySources }

// BuildTimeoutDuration is the prepared build_timeout.
func (c *Config) BuildTimeoutDuration() time.Duration {
	if c.buildTimeout <= 0 {
		return 2 * time.Hour
	}
	return c.buildTimeout
}

// Force reports whether packer runs with -force.
func (c *Config) Force() bool { return c.force }
