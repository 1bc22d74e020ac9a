package payload

import (
	"fmt"
	"path"
	"strconv"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// buildCommand is the remote `nix build` command line, shell-quoted.
func buildCommand(cfg *Config) string {
	return remotecmd.Join(append([]string{"nix"}, nixArgs(cfg)...))
}

// scriptCommand runs build.sh in remote_directory with args.
func scriptCommand(cfg *Config, args ...string) string {
	return "bash " + remotecmd.Quote(path.Join(cfg.RemoteDirectory, remoteScript)) + " " + remotecmd.Join(args)
}

// remoteBuildCommand runs buildCommand through build.sh, which chooses the
// user to build as and enforces the timeout on the host itself. Once the
// build succeeded, build.sh computes the image's SHA-256 (and that of the
// decompressed image when it is to be decompressed here) for sha256Command.
func remoteBuildCommand(cfg *Config) string {
	secs := int64(cfg.BuildTimeoutDuration() / time.Second)
	if secs < 1 {
		secs = 1
	}
	sums := "--sums=file"
	if cfg.Decompress == nil || *cfg.Decompress {
		sums = "--sums=image"
	}
	return scriptCommand(cfg, "build", cfg.RemoteDirectory, strconv.FormatInt(secs, 10), sums) + " " + buildCommand(cfg)
}

// ensureNixCommand installs Nix on the host when it is missing.
func ensureNixCommand(cfg *Config) string {
	return scriptCommand(cfg, "ensure-nix")
}

// workDirCommand creates the run's private working directory and prints its
// path: a new one from mktemp -d in the host's $TMPDIR (else /tmp), or
// remote_directory, which must not exist yet. Either is owned by the user
// and mode 0700, never a directory someone else made or a symlink.
func workDirCommand(cfg *Config) string {
	create := `d=$(mktemp -d "${TMPDIR:-/tmp}/nixos-sd.XXXXXXXXXX")`
	if cfg.RemoteDirectory != "" {
		q := remotecmd.Quote(cfg.RemoteDirectory)
		create = "mkdir -p -- " + remotecmd.Quote(path.Dir(cfg.RemoteDirectory)) + " && mkdir -m 0700 -- " + q + " && d=" + q
	}
	return create + ` && [ -d "$d" ] && [ ! -L "$d" ] && [ -O "$d" ] && [ "$(stat -c %a -- "$d")" = 700 ] && printf '%s\n' "$d"`
}

// mkdirCommand creates the directory dir and its parents.
func mkdirCommand(dir string) string {
	return "mkdir -p " + remotecmd.Quote(dir)
}

// cleanupCommand removes what the build put in remote_directory, and the
// directory itself when that leaves it empty. A build that ran as root may
// have left files only root can remove (a flake's new flake.lock): sudo
// removes those.
func cleanupCommand(cfg *Config) string {
	rm := removeEntriesCommand(cfg)
	return "{ " + rm + " 2>/dev/null || sudo -n " + rm + "; } && { rmdir " + remotecmd.Quote(cfg.RemoteDirectory) + " 2>/dev/null || true; }"
}

func removeEntriesCommand(cfg *Config) string {
	parts := []string{"rm", "-rf", "--"}
	for _, e := range remoteEntries {
		parts = append(parts, path.Join(cfg.RemoteDirectory, e))
	}
	return remotecmd.Join(parts)
}

// stopCommand asks a running build.sh to stop its build.
func stopCommand(cfg *Config) string {
	pid := remotecmd.Quote(path.Join(cfg.RemoteDirectory, remotePID))
	return fmt.Sprintf("test -f %s && kill -TERM \"$(cat %s)\"", pid, pid)
}

// locateCommand lists the images in the build result, one store path per
// line.
func locateCommand(cfg *Config) string {
	return scriptCommand(cfg, "locate", cfg.RemoteDirectory)
}

// probeCommand reports the image's size, whether zstd exists on the host and
// how many sessions sshd allows per connection (when it can be read).
func probeCommand(image string) string {
	q := remotecmd.Quote(image)
	return "stat -L -c 'size=%s' " + q + " && " +
		"{ command -v zstd >/dev/null 2>&1 && echo zstd=yes || echo zstd=no; } && " +
		"{ sudo -n sshd -T 2>/dev/null | grep -i '^maxsessions ' | sed 's/^[^ ]* /maxsessions=/' || true; }"
}

// sha256Command prints the image's SHA-256 as sha256sum does; with
// decompressed, also "image " and the SHA-256 of what zstd decompresses from
// it. build.sh computed both right after the build; it computes them again
// only when the image changed since.
func sha256Command(cfg *Config, image string, decompressed bool) string {
	args := []string{"sums", cfg.RemoteDirectory, image}
	if decompressed {
		args = append(args, "image")
	}
	return scriptCommand(cfg, args...)
}

// streamCommand serves ranges of a remote file one after another on one
// channel: it reads the file's name from the first line of its input, then
// prints, for each line "OFFSET LENGTH", those bytes (as rangeCommand prints
// them). It ends when its input ends, or with status 1 when a range fails.
// The channel can be opened before the file is known, and asking for the
// next range before the current one is out keeps it busy without a new
// session (two round trips) per range.
func streamCommand() string {
	return `IFS= read -r f && read -r off n || exit 0; ` +
		`while dd if="$f" bs=1M iflag=skip_bytes,count_bytes skip="$off" count="$n" status=none; do read -r off n || exit 0; done; exit 1`
}

// rangeCommand prints length bytes of the remote file from offset, compressed
// with zstd when compress is set.
func rangeCommand(file string, offset, length int64, compress bool) string {
	cmd := fmt.Sprintf("dd if=%s bs=1M iflag=skip_bytes,count_bytes skip=%d count=%d status=none", remotecmd.Quote(file), offset, length)
	if compress {
		cmd += " | zstd -1 -q -c"
	}
	return cmd
}
