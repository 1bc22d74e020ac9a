#!/usr/bin/env bash
# build.sh: the remote half of the nixos-sd plugin. The plugin uploads it to
# remote_directory and runs it through the communicator:
#
#   bash build.sh ensure-nix
#       Makes sure Nix is on the host. When `nix` is already on PATH (or in a
#       standard Nix profile) it is used as is. Otherwise, on Debian and Ubuntu,
#       it runs `apt-get install --no-install-recommends nix-bin
#       nix-setup-systemd` (the build users), waiting for the dpkg lock a
#       first boot's unattended-upgrades may hold. internal/payload/doc.go
#       says why.
#
#   bash build.sh eval REMOTE_DIR TIMEOUT_SECONDS nix ARGS...
#       Runs `nix eval` (ARGS) as `build` would run the build, as the same
#       user and with the same settings, printing its result: the plugin
#       reads a flake configuration's platform with it before the build.
#
#   bash build.sh build REMOTE_DIR TIMEOUT_SECONDS nix ARGS...
#       Runs the Nix build, as root through sudo whenever sudo works (root
#       uses the store directly, so every --option applies and the build
#       directory is ours to choose), else as this user through a nix-daemon.
#       As root, derivations build in a fresh directory under /var/tmp (on
#       the volume: /tmp is a tmpfs of half the RAM on Debian 13), removed
#       afterwards. The build is stopped after TIMEOUT_SECONDS. Its process id
#       is kept in REMOTE_DIR/build.pid so the plugin can stop it on
#       cancellation: SIGTERM stops the build. The build is also stopped when
#       the SSH session that started it ends.
#
#   bash build.sh locate REMOTE_DIR
#       Prints the real path of every .img and .img.zst file in the build
#       result's sd-image directory, one per line.
#
#   bash build.sh sums REMOTE_DIR IMAGE [image]
#       Prints IMAGE's SHA-256 as sha256sum does and, with "image", a line
#       "image SUM" with the SHA-256 of what zstd decompresses from it. The
#       sums `build --sums=` computed right after the build are printed
#       without reading the image again.
#
#   bash build.sh nix-version
#       Prints `nix --version` of the Nix that build and eval run.
#
# build's --sums=file|image (before "nix") computes those sums once the build
# succeeded, when it made exactly one image: on the host's cores, before the
# download, so that the download never waits for them.
#
# Exit status: 0 success; 3 Nix could not be installed; 4 no usable root
# access; 5 the host cannot build for aarch64-linux; 124 the build ran longer than its timeout; anything else is the
# build's own failure.
set -euo pipefail

die() {
	local code=$1
	shift
	printf 'nixos-sd: error: %s\n' "$*" >&2
	exit "$code"
}

say() {
	printf 'nixos-sd: %s\n' "$*" >&2
}

# find_nix prints the path of the nix binary, if there is one.
find_nix() {
	local p
	if p=$(command -v nix 2>/dev/null); then
		printf '%s\n' "$p"
		return 0
	fi
	# Non-login SSH sessions do not read /etc/profile.d, where the upstream
	# installer puts Nix on PATH.
	for p in /nix/var/nix/profiles/default/bin/nix /run/current-system/sw/bin/nix; do
		if [ -x "$p" ]; then
			printf '%s\n' "$p"
			return 0
		fi
	done
	return 1
}

# as_root runs its arguments as root: directly when already root, else through
# non-interactive sudo.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	else
		sudo -n -H "$@"
	fi
}

# apt_lock_timeout is how long apt waits for the dpkg lock, in seconds.
apt_lock_timeout=600

# nix_builds_aarch64 reports whether the Nix at $1 builds aarch64-linux: its
# system, or its extra-platforms (binfmt emulation).
nix_builds_aarch64() {
	local s
	s=$(nix_settings "$1") || return 1
	case " $(printf '%s\n' "$s" | sed -n 's/^system = //p') $(printf '%s\n' "$s" | sed -n 's/^extra-platforms = //p') " in
	*" aarch64-linux "*) return 0 ;;
	esac
	return 1
}

# check_arch stops on a host that cannot build the AArch64 image, before
# anything is installed: what uname -m says, then what an installed Nix
# builds for.
check_arch() {
	local nix_bin=${1:-} machine
	machine=$(uname -m)
	case "$machine" in
	aarch64 | arm64)
		[ -n "$nix_bin" ] || return 0
		nix_builds_aarch64 "$nix_bin" && return 0
		die 5 "this host is $machine, but its Nix ($("$nix_bin" --version 2>/dev/null || echo "$nix_bin")) builds for $(nix_settings "$nix_bin" | sed -n 's/^system = //p'), not aarch64-linux. Use a host whose Nix builds aarch64-linux (Debian's nix-bin on an arm64 AMI does)."
		;;
	esac
	if [ -n "$nix_bin" ] && nix_builds_aarch64 "$nix_bin"; then
		say "this host is $machine; its Nix builds aarch64-linux through extra-platforms (binfmt emulation): the build will be slow"
		return 0
	fi
	die 5 "this host is $machine (uname -m), not AArch64: the SD image is aarch64-linux, and Nix here could neither build nor run its packages (only the ones a cache has). Run the build on an AArch64 host: give the builder that runs this provisioner an arm64 instance type and AMI (for amazon-ebs a Graviton type such as m7g.large with an arm64 Debian 13 AMI), or use the nixos-sd builder. A host whose Nix builds aarch64-linux through extra-platforms and binfmt (qemu-user-static) is used as it is. Nothing was installed."
}

ensure_nix() {
	local nix_bin
	if nix_bin=$(find_nix); then
		say "Nix is already installed: $("$nix_bin" --version 2>/dev/null || echo "$nix_bin")"
		check_arch "$nix_bin"
		return 0
	fi
	check_arch
	if ! command -v apt-get >/dev/null 2>&1; then
		die 3 "Nix could not be installed: this host has no apt-get (it is not Debian or Ubuntu). Use a Debian 13 AMI or a host with Nix preinstalled."
	fi
	if ! as_root true 2>/dev/null; then
		die 4 "Nix could not be installed: installing it needs root, and 'sudo -n' failed for user $(id -un). Allow passwordless sudo for this user or preinstall Nix."
	fi
	say "Nix is not installed; installing Debian's nix-bin package with apt-get"
	# A first boot's unattended-upgrades (or apt-daily) may hold apt's and
	# dpkg's locks for minutes: wait for them instead of failing at once.
	local -a apt=(env DEBIAN_FRONTEND=noninteractive apt-get -q -o "DPkg::Lock::Timeout=$apt_lock_timeout")
	# Refresh the package lists: an image's lists may be missing or stale.
	if ! as_root "${apt[@]}" update; then
		die 3 "Nix could not be installed: apt-get update failed (above). Check the host's network access to its package mirror, or preinstall Nix."
	fi
	if ! apt-cache show nix-bin >/dev/null 2>&1; then
		die 3 "Nix could not be installed: this host's apt sources have no nix-bin package. Use a Debian 13 AMI (it carries Nix 2.26) or a host with Nix preinstalled."
	fi
	# Exactly these two, whatever apt's Install-Recommends says: nix-bin's
	# recommended nix-setup-systemd creates the nixbld build users, without
	# which root's Nix builds nothing ("the group 'nixbld' specified in
	# 'build-users-group' does not exist"), and turns the sandbox on. Its
	# nix-daemon stays unused: root builds in the store directly.
	if ! as_root "${apt[@]}" install -y --no-install-recommends nix-bin nix-setup-systemd; then
		die 3 "Nix could not be installed: apt-get install nix-bin failed (above). Use a Debian 13 AMI or a host with Nix preinstalled."
	fi
	if ! nix_bin=$(find_nix); then
		die 3 "Nix could not be installed: nix-bin was installed but no nix command was found afterwards. Use a Debian 13 AMI or preinstall Nix."
	fi
	say "installed $("$nix_bin" --version 2>/dev/null || echo "$nix_bin")"
	check_arch "$nix_bin"
}

# needs_root reports whether Nix must run as root here: this user cannot write
# the store and no daemon would do it on the user's behalf (at the socket
# where Nix looks for it).
needs_root() {
	[ "$(id -u)" -ne 0 ] || return 1
	[ -S "${NIX_DAEMON_SOCKET_PATH:-/nix/var/nix/daemon-socket/socket}" ] && return 1
	[ -d /nix/store ] && [ -w /nix/store ] && return 1
	return 0
}

# builds_as_root reports whether the build runs as root: when this user is
# root or sudo works. Root uses the store directly, never a nix-daemon, so
# every --option applies and the build directory is the one build.sh sets.
builds_as_root() {
	[ "$(id -u)" -eq 0 ] || as_root true 2>/dev/null
}

# nix_settings prints `nix config show` of this host's Nix, with the
# features the build enables (flake-only settings exist only with flakes).
nix_settings() {
	local nix_bin=$1
	"$nix_bin" --extra-experimental-features 'nix-command flakes' config show 2>/dev/null ||
		"$nix_bin" --extra-experimental-features 'nix-command flakes' show-config 2>/dev/null
}

# check_settings fails on an `--option NAME VALUE` among its arguments whose
# NAME (or NAME without "extra-") this host's Nix does not know: Nix itself
# only warns "unknown setting" and builds without it.
check_settings() {
	local nix_bin=$1 known
	shift
	case " $* " in *" --option "*) ;; *) return 0 ;; esac
	known=$(printf '%s\n' "$settings" | sed -n 's/^\([A-Za-z0-9-]*\) = .*/\1/p')
	[ -n "$known" ] || return 0
	while [ "$#" -gt 0 ]; do
		if [ "$1" = --option ] && [ "$#" -ge 3 ]; then
			if ! printf '%s\n' "$known" | grep -qxF -- "${2#extra-}"; then
				die 2 "nix_options: \"$2\" is not a setting of this host's Nix ($("$nix_bin" --version 2>/dev/null || echo "$nix_bin")), which would ignore it. Check the name: 'nix config show' on the host lists them."
			fi
			shift 3
			continue
		fi
		shift
	done
}

# setting prints the value of setting $1 in $settings.
setting() {
	printf '%s\n' "$settings" | sed -n "s/^$1 = //p" | head -n 1
}

# is_trusted reports whether the nix-daemon trusts this user: trusted-users
# names the user, one of its groups (@group) or everyone (*).
is_trusted() {
	local t me g
	me=$(id -un)
	for t in $(setting trusted-users); do
		case "$t" in
		'*' | "$me") return 0 ;;
		@*)
			for g in $(id -Gn); do
				[ "@$g" != "$t" ] || return 0
			done
			;;
		esac
	done
	return 1
}

# warn_daemon says what a build through the nix-daemon cannot do for this
# user: settings of an untrusted user are ignored, and the daemon builds in
# its own TMPDIR.
warn_daemon() {
	local -a names=()
	while [ "$#" -gt 0 ]; do
		if [ "$1" = --option ] && [ "$#" -ge 3 ]; then
			names+=("$2")
			shift 3
			continue
		fi
		shift
	done
	say "warning: building as $(id -un) through the nix-daemon ('sudo -n' does not work): the daemon builds in its own TMPDIR (/tmp unless its service sets TMPDIR or build-dir; a tmpfs on Debian 13, too small for a kernel). Allow passwordless sudo to build as root on the volume."
	if [ "${#names[@]}" -gt 0 ] && ! is_trusted; then
		say "warning: nix_options ${names[*]}: the nix-daemon ignores restricted settings (substituters, trusted keys, sandbox, ...) of users not in trusted-users ($(setting trusted-users)), and $(id -un) is not. Allow passwordless sudo, or add $(id -un) to trusted-users in the host's nix.conf."
	fi
}

# ppid_of prints the parent process id of process $1.
ppid_of() {
	local stat ppid
	read -r stat <"/proc/$1/stat" 2>/dev/null || return 1
	# pid (comm) state ppid ...; comm may hold spaces.
	read -r _ ppid _ <<<"${stat##*) }"
	printf '%s\n' "$ppid"
}

# stop_child stops the build process $1 (sudo relays the signal to timeout)
# and the process group timeout leads with nix: timeout ends without passing
# a signal on when the signal comes before its fork has returned.
stop_child() {
	local group=""
	[ -z "$group_file" ] || group=$(cat "$group_file" 2>/dev/null) || group=""
	local -a targets=("$1")
	[ -z "$group" ] || targets+=("-$group")
	if [ -n "${run_as_root:-}" ]; then
		as_root kill -TERM -- "${targets[@]}" 2>/dev/null || true
	else
		kill -TERM -- "${targets[@]}" 2>/dev/null || true
	fi
}

# watch_session stops the build when the SSH session that started this script
# ends: Packer does not wait for a provisioner when it is interrupted, so
# nobody would run the stop command. The session's end re-parents this script
# (or ends it without its trap running). The watcher stops the build itself
# too: bash's wait builtin may drop the script's trapped SIGTERM when it comes
# with the end of a child, such as this watcher's.
watch_session() {
	local pid=$1 parent=$2 build=$3
	trap '' HUP PIPE
	while true; do
		sleep 2 || true
		if [ "$(ppid_of "$pid" || true)" != "$parent" ]; then
			kill -TERM "$pid" 2>/dev/null || true
			stop_child "$build"
			return 0
		fi
	done
}

# list_images prints the real path of each image in REMOTE_DIR's result.
list_images() {
	local dir="$1/result/sd-image/"
	[ -d "$dir" ] || die 2 "$dir does not exist; make sure the configuration imports nixpkgs' sd-image module"
	find -L "$dir" -maxdepth 1 -type f \( -name '*.img.zst' -o -name '*.img' \) -exec readlink -f {} \;
}

# sums_key names the image's current contents: its real path (a store path
# names them), size and modification time.
sums_key() {
	local real st
	real=$(readlink -f -- "$1") && st=$(stat -L -c '%s %Y' -- "$1") || return 1
	printf '%s %s\n' "$real" "$st"
}

# compute_sums prints image $1's SHA-256 as sha256sum does and, with $2 =
# image, "image SUM" of its zstd decompression, hashed alongside on another
# core.
compute_sums() {
	local image=$1 want=${2:-} tmp zpid status=0
	if [ "$want" != image ]; then
		sha256sum -- "$image"
		return
	fi
	tmp=$(mktemp)
	{ zstd -dcq -- "$image" | sha256sum | sed 's/^/image /' >"$tmp"; } &
	zpid=$!
	sha256sum -- "$image" || status=$?
	wait "$zpid" || status=$?
	[ "$status" -ne 0 ] || cat "$tmp"
	rm -f "$tmp"
	return "$status"
}

# image_sums prints what compute_sums does, from REMOTE_DIR/image.sums when
# that holds the sums of the image as it is now.
image_sums() {
	local cache="$1/image.sums" image=$2 want=${3:-} key
	key=$(sums_key "$image") || die 2 "cannot read $image on the host; check that the build result still exists and run the build again"
	if [ -r "$cache" ] && [ "$(sed -n 1p "$cache")" = "$key" ] &&
		{ [ "$want" != image ] || grep -q '^image ' "$cache"; }; then
		sed -n '2,$p' "$cache"
		return 0
	fi
	compute_sums "$image" "$want"
}

# keep_sums computes the sums of the build's one image into
# REMOTE_DIR/image.sums ($2: file or image; image only for a .zst file and
# with zstd here). Without exactly one image there is nothing to keep: the
# plugin says what is wrong when it looks for the image.
keep_sums() {
	local remote_dir=$1 want=$2 images image key start tmp
	images=$(list_images "$remote_dir" 2>/dev/null) || return 0
	[ -n "$images" ] && [ "$(printf '%s\n' "$images" | wc -l)" -eq 1 ] || return 0
	image=$images
	case "$image" in *.zst) ;; *) want="file" ;; esac
	command -v zstd >/dev/null 2>&1 || want="file"
	key=$(sums_key "$image") || return 0
	start=$SECONDS
	tmp="$remote_dir/image.sums.tmp"
	if { printf '%s\n' "$key" && compute_sums "$image" "$want"; } >"$tmp"; then
		mv -f -- "$tmp" "$remote_dir/image.sums"
		say "computed the image's SHA-256 in $((SECONDS - start))s"
	else
		rm -f -- "$tmp"
		say "warning: could not compute the image's SHA-256 on the host now; the download computes it again"
	fi
}

child=""
watcher=""
errlog=""
group_file=""
build_dir=""
run_as_root=""

# remove_build_dir removes the build directory build.sh made.
remove_build_dir() {
	[ -z "$build_dir" ] || as_root rm -rf -- "$build_dir" 2>/dev/null || true
	build_dir=""
}

# stop_build runs on SIGTERM, SIGINT and SIGHUP. When the session is gone,
# writing to it raises SIGPIPE: stop the build first, and ignore that.
stop_build() {
	trap '' PIPE
	set +e
	[ -z "$errlog" ] || rm -f "$errlog" "$errlog.fifo"
	if [ -n "$watcher" ]; then
		kill "$watcher" 2>/dev/null
	fi
	# A signal that lands right after the build started, before child=$! ran,
	# finds the build in $! instead.
	local pid=${child:-${!:-}}
	if [ -n "$pid" ]; then
		stop_child "$pid"
		say "stopping the build"
		wait "$pid" 2>/dev/null
	fi
	[ -z "$group_file" ] || as_root rm -f "$group_file" 2>/dev/null
	remove_build_dir
	exit 143
}

# what names the run in messages: "build", or "evaluation" for eval.
what=build

run_build() {
	local remote_dir=$1 timeout_s=$2 sums=""
	shift 2
	case "${1:-}" in
	--sums=file | --sums=image)
		sums=${1#--sums=}
		shift
		;;
	esac
	if [ "${1:-}" != nix ]; then
		die 2 "internal error: build expects 'nix ARGS...', got '${1:-}'"
	fi
	shift
	local nix_bin
	nix_bin=$(find_nix) || die 3 "Nix is not installed on this host (run 'build.sh ensure-nix' first)."
	settings=$(nix_settings "$nix_bin") || settings=""
	check_settings "$nix_bin" "$@"
	local -a run=() opts=()
	if builds_as_root; then
		if [ "$(id -u)" -ne 0 ]; then
			run=(sudo -n -H)
			run_as_root=1
		fi
		# Derivations build in TMPDIR (or build-dir, where this Nix has
		# it): on the volume, not in a tmpfs /tmp.
		build_dir=$(as_root mktemp -d /var/tmp/nixos-sd-build.XXXXXXXXXX) ||
			die 2 "could not create a build directory in /var/tmp on the host; check that /var/tmp exists and has space"
		run+=(env TMPDIR="$build_dir")
		if [ -n "$(printf '%s\n' "$settings" | sed -n '/^build-dir = /p')" ]; then
			opts=(--option build-dir "$build_dir")
		fi
		say "running nix as root, in $build_dir"
	elif needs_root; then
		die 4 "Nix needs root on this host (this user cannot write /nix/store nor reach a nix-daemon), and 'sudo -n' failed for user $(id -un). Allow passwordless sudo, or run a nix-daemon this user may use."
	else
		warn_daemon "$@"
	fi
	trap stop_build TERM INT HUP
	say "running: nix $*"
	local status=0
	# Nix's messages also go to a file, to explain a failure below.
	errlog=$(mktemp)
	local fifo="$errlog.fifo" tee_pid
	mkfifo -m 600 "$fifo"
	tee "$errlog" <"$fifo" >&2 &
	tee_pid=$!
	# The process id of timeout, the leader of its group, goes to group_file.
	group_file="$remote_dir/build.group"
	rm -f "$group_file"
	# shellcheck disable=SC2016 # expanded by sh
	"${run[@]}" sh -c 'printf "%s\n" "$$" >"$0" && exec "$@"' "$group_file" \
		timeout --kill-after=60 "$timeout_s" "$nix_bin" "$@" "${opts[@]}" </dev/null 2>"$fifo" &
	child=$!
	# Written once the build runs, so whoever reads it to stop the build finds
	# this script ready to pass the signal on.
	printf '%s\n' "$$" >"$remote_dir/build.pid"
	# The session is the parent this script started with ($PPID): by now it
	# may have ended already.
	if ppid_of "$$" >/dev/null; then
		# Its own output goes nowhere, so that it never holds the session open.
		watch_session "$$" "$PPID" "$child" >/dev/null 2>&1 &
		watcher=$!
	fi
	wait "$child" || status=$?
	child=""
	if [ -n "$watcher" ]; then
		kill "$watcher" 2>/dev/null || true
		watcher=""
	fi
	rm -f "$remote_dir/build.pid"
	as_root rm -f "$group_file" 2>/dev/null || true
	group_file=""
	remove_build_dir
	if [ "$status" -eq 124 ]; then
		die 124 "the $what ran longer than build_timeout (${timeout_s}s) and was stopped. Raise build_timeout or use a larger instance."
	fi
	# tee has all of Nix's messages once it ends.
	wait "$tee_pid" 2>/dev/null || true
	rm -f "$fifo"
	local need=""
	if [ "$status" -ne 0 ]; then
		need=$(sed -n 's/.*This version of Nixpkgs requires Nix >= \([0-9][0-9.]*\).*/\1/p' "$errlog" | head -n 1)
	fi
	rm -f "$errlog"
	errlog=""
	if [ -n "$need" ]; then
		die "$status" "this host's Nix ($("$nix_bin" --version 2>/dev/null || echo "$nix_bin")) is older than the requested nixpkgs needs (Nix >= $need). Use a Debian 13 AMI (debian_release = \"trixie\"; its nix-bin is 2.26), an AMI with a newer Nix preinstalled, or an older nixpkgs. Debian 12's nix-bin (2.8) is too old for current nixpkgs."
	fi
	if [ "$status" -ne 0 ]; then
		die "$status" "nix $1 failed with exit status $status; see nix's output above and fix the configuration"
	fi
	[ "$what" = build ] || return 0
	say "build finished: $(readlink "$remote_dir/result" || echo "$remote_dir/result")"
	[ -z "$sums" ] || keep_sums "$remote_dir" "$sums"
}

case "${1:-}" in
ensure-nix)
	ensure_nix
	;;
build | eval)
	[ "$#" -ge 4 ] || die 2 "usage: build.sh $1 REMOTE_DIR TIMEOUT_SECONDS nix ARGS..."
	[ "$1" = build ] || what=evaluation
	shift
	run_build "$@"
	;;
locate)
	[ "$#" -eq 2 ] || die 2 "usage: build.sh locate REMOTE_DIR"
	list_images "$2"
	;;
sums)
	if [ "$#" -lt 3 ] || [ "$#" -gt 4 ]; then
		die 2 "usage: build.sh sums REMOTE_DIR IMAGE [image]"
	fi
	image_sums "$2" "$3" "${4:-}"
	;;
nix-version)
	nix_bin=$(find_nix) || die 3 "Nix is not installed on this host."
	"$nix_bin" --version
	;;
*)
	die 2 "usage: build.sh ensure-nix | build REMOTE_DIR TIMEOUT_SECONDS [--sums=file|image] nix ARGS... | eval REMOTE_DIR TIMEOUT_SECONDS nix ARGS... | locate REMOTE_DIR | sums REMOTE_DIR IMAGE [image] | nix-version"
	;;
esac
