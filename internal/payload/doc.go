// Package payload is the remote NixOS SD image build and the verified download
// of its result. The provisioner runs it on any host a communicator reaches;
// the builder runs the same code on the spot instance it launched.
//
// # Phases
//
// Run goes through its phases in order (run.go); each has its own file:
//
//   - upload (upload.go): remote_directory is created and build.sh with the
//     NixOS configuration is put in it; cleanupRemote removes them again.
//   - install nix and build (build.go): build.sh installs Nix when it is
//     missing, then runs `nix build` under build_timeout; stopBuild asks it to
//     stop when the context ends. Once the build succeeded, build.sh computes
//     the image's SHA-256 and, when it is to be decompressed here, that of
//     the decompressed image, on the host's cores before the download.
//   - locate image (locate.go): the one .img or .img.zst in the build result,
//     its size, whether the host has zstd and sshd's MaxSessions.
//   - checksum and download (fetch.go): the host prints the sums build.sh
//     kept (computing them only when the image changed since) while the image
//     downloads; an errgroup joins the two, and the first to fail cancels the
//     other.
//   - verify and decompress (verify.go): the local SHA-256 is compared with
//     the host's, and the image must carry an MBR with a FAT firmware and a
//     Linux root partition.
//   - manifest (manifest.go): the .sha256 and .json files beside the image.
//
// Errors name their phase (PhaseError, phase.go) and carry the last lines of
// the remote output (logtail.go). output.go names the local files and removes
// them after a failure.
//
// # What runs on the host
//
// hostfiles/ holds the files uploaded to the host (embedded by hostfiles.go):
// build.sh, the built-in NixOS configuration default.nix, and entry.nix, which
// wraps a user's configuration. hostcommands.go writes every shell command the
// payload runs there; nixconfig.go the `nix build` arguments and the built-in
// configuration's settings. The commands run through internal/remotecmd.
//
// build.sh installs Debian's nix-bin package rather than running the upstream
// installer: the package comes from the distribution's signed archive (no
// checksum to pin by hand, no `curl | sh`), it installs in seconds from the
// in-region EC2 mirror, and Debian 13 (trixie) carries Nix 2.26, new enough
// for current nixpkgs (Debian 12's 2.8 is not: nixpkgs' lib/minver.nix asks
// for 2.18, and build.sh names both versions when nixpkgs refuses). It
// installs exactly nix-bin and nix-setup-systemd with --no-install-recommends
// (an image may turn Recommends off): nix-setup-systemd creates the nixbld
// build users, without which root's Nix builds no derivation, and turns the
// sandbox on. apt waits for the dpkg lock (DPkg::Lock::Timeout), which a
// first boot's unattended-upgrades holds. Whenever sudo works the build runs
// as root: root's Nix uses the store directly, not Debian's nix-daemon (which
// serves only the nix-users group, which the login user is not in), so every
// nix_options setting applies; without sudo a build through a daemon says
// which settings an untrusted user's daemon ignores. As root, derivations
// build in a fresh directory under /var/tmp (TMPDIR, and build-dir where Nix
// has it), since Debian 13's /tmp is a tmpfs of half the RAM, too small for
// a kernel or an image. A newer Nix is not installed from elsewhere: that
// would run an installer fetched from the internet without a signature the
// host can check. Hosts without apt-get, or without a nix-bin package, fail
// with a message asking for a Debian 13 AMI or a host with Nix preinstalled.
//
// Nix only warns about an `--option` whose name it does not know, and builds
// without it; build.sh refuses such a nix_options name before the build,
// checked against the host's own `nix config show` with the features the
// build enables (flakes: accept-flake-config exists only with them).
//
// # The download
//
// The downloader (download.go) fetches the image over several SSH channels
// at once, each taking byte ranges from a shared queue, so a slow channel
// holds up at most the range it is on. One SSH channel carries at most its
// window (2 MiB) per round trip, and one TCP connection its own window
// whatever its channels, so on a long, fast link the download needs several
// of each. It runs on connections of its own (conn.go) to the same host, with
// the credentials the builder or the provisioner hands it (SSHTarget). They
// open while the image builds: the first measures the round trip, which sets
// how many connections and channels to use (plan.go; download_connections and
// download_channels override it), and each opens its channels' sessions
// ahead. A channel there runs one remote loop (streamCommand, stream.go) that
// reads the file's name, then prints range after range as it is asked for
// them on its input; it asks for the next range before the current one is
// out, so it idles neither between ranges nor for a session per range.
// Ranges shrink towards the end of the file, so the channels finish
// together.
//
// The communicator's channels start the download, one `dd` session per
// range, and hand it over once the connections of our own run; they take it
// back if none can be opened, and carry it alone behind a bastion, with
// download_connections = 1, or without credentials. They stay below sshd's
// MaxSessions with room for the checksum and the builder's heartbeat, since
// one session too many makes Packer's SSH communicator drop the whole
// connection; and they cannot stream, because the communicator reports a
// command's end only after its input ended. An image that is not compressed
// is compressed in transit with zstd when the host has it, one session per
// range on every connection (a compressed range's length is not known
// before it ends, so ranges cannot follow each other on one stream).
//
// A range that fails keeps what arrived and is asked again for the rest,
// first in the queue: a dropped channel or connection costs only the bytes
// in flight. Connections of our own reopen when they break (keep-alives find
// a dead link); the SDK communicator reconnects by itself; the host's
// checksum runs again when its connection drops. docs/performance.md has the
// measurements.
//
// The local SHA-256 and the decompression of a .img.zst do not wait for the
// download: the prefix tracker (prefix.go) knows the contiguous prefix of
// ranges that fully arrived, and readers of the partial file follow it. A
// range counts only once all of it is written, so the bytes they read never
// change again. The decoded image, like the downloaded one, is written
// sparse (sparse.go): all-zero 4 KiB blocks stay holes. The progress bar is
// fed by progress.go, which batches its reads because in a plugin each read
// is a call to Packer. Writes go to the file in pieces of at most 256 KiB:
// larger ones make the kernel allocate large folios, which cost several times
// the time per byte on some machines (docs/performance.md). When decoding
// goes on well after the download ended, the run says that the local CPU,
// not the link, was the limit.
package payload
