#!/usr/bin/env bash
# Stand-in for `nix` on the test bed's instance hosts. The host's Debian root
# diverts nix-bin's /usr/bin/nix to /usr/bin/nix.real; once nix-bin is
# installed, /usr/bin/nix (and so nix-build, nix-daemon, ... which link to it)
# is this script. Only the realisation of a build is fake:
#
# - Every command but `nix build`, `nix-build`, `nix eval` of nixpkgs' version
#   and `nix flake metadata` (see the contract below) runs the
#   real Nix. `nix eval` of a flake's attribute runs the real Nix on the
#   command line as a build's evaluation sees it (below).
# - A build first runs the real Nix on the same command line with --dry-run,
#   so the real Nix parses the flags, options and installables and evaluates
#   them: a bad flag, -I entry, --file, attribute path or flake output fails
#   as it would. The evaluation runs against the stand-in nixpkgs next to
#   this script (nixpkgs' real lib/minver.nix and version check; a NixOS
#   whose sdImage is a plain derivation): `-I nixpkgs=channel:...` and
#   nixpkgs tarball URLs and a release's .../nixexprs.tar.xz name it, a flake's `nixpkgs` input is overridden
#   with it, and a flake that is not a local path is replaced by a local one
#   with the same nixosConfigurations attribute, since the host has no
#   network.
# - Then, instead of building, it makes a small but valid NixOS-like SD card
#   image, the way nixpkgs' sd-image.nix lays one out:
#
#   MBR; partition 1 at 8 MiB: 34 MiB FAT32 (type b; nixpkgs uses 30 MiB, but
#   FAT32 needs 65525 clusters) labelled FIRMWARE, with Raspberry Pi
#   firmware-like files; partition 2: ext4 (type 83, bootable) labelled
#   NIXOS_SD, partly filled with moderately compressible data.
#
# The image lands in $STATE/store/<hash>-nixos-sd-image/sd-image/ (zstd
# compressed unless COMPRESS=0), and the out link (--out-link/-o PATH, default
# ./result) becomes a symlink to $STATE/store/<hash>-nixos-sd-image.
#
# Contract (see internal/testbed): every invocation's argv is appended to
# $STATE/standin-calls.log. A flake the host cannot fetch (a remote one) has
# no flake.lock of its own: every locking of it resolves its nixpkgs input,
# the branch nixos-26.05, anew, and that branch moves on every resolution
# (counted in $STATE/standin-nixpkgs-branch), unless a lock file given with
# --reference-lock-file locks that input, as real Nix (2.15 and newer) then
# uses the lock file's entry; each build and evaluation of a remote flake
# appends "build|eval REF nixpkgs REV" to $STATE/standin-flake-inputs.log. `nix eval` of nixpkgs' lib.version and
# revision, and `nix flake metadata`, are answered by the stand-in too (see
# below; the host has no network to fetch what they ask about). The build
# fails like nix does (exit 1, "error: builder for
# '/nix/store/...-nixos-sd-image.drv' failed with exit code 1") when an
# argument names an existing file or directory (also in the forms name=path
# and path#attr) whose path or contents contain the text STANDIN_FAIL.
#
# Settings come from $STATE/standin.conf (IMAGE_MIB=64, COMPRESS=1,
# CACHED_BUILD_SECONDS=0: how long a build whose result exists still takes,
# for benchmarks whose runs reuse one image but must see a build as long as a
# real one, during which the download's connections open; and BUILD_INPUTS=0:
# with 1, the real Nix realises the image derivation's inputs (the stand-in
# nixpkgs' probe, a real derivation that sleeps 3 s) with the command line's
# --option settings, so that substituters, binary caches and signatures work
# as in a real build; the host has no network, so `substituters` starts
# empty, and the probe's builder is the host's /bin/sh, outside the sandbox).
# With --json, `nix build` prints the real image derivation and the fake
# output as real Nix does. STATE is
# /var/lib/nixos-sd-standin unless NIXOS_SD_STANDIN_STATE says otherwise; the
# real Nix is NIXOS_SD_STANDIN_REAL_NIX, else /usr/bin/nix.real (the unit
# tests of the realisation set both; on a host sudo resets the environment).
set -euo pipefail
umask 022

# NIXOS_SD_STANDIN_PROG: the name this call stands for, when a test wraps it.
prog=${NIXOS_SD_STANDIN_PROG:-$(basename "$0")}
unset NIXOS_SD_STANDIN_PROG
state=${NIXOS_SD_STANDIN_STATE:-/var/lib/nixos-sd-standin}
real_nix=${NIXOS_SD_STANDIN_REAL_NIX:-/usr/bin/nix.real}
standin_dir=$(dirname "$(readlink -f "$0")")
release="26.05.20260601.0000000"
image_name="nixos-image-sd-card-${release}-aarch64-linux.img"

# Record the call first, so that even a failing call is visible to the tests.
{
	printf '%q' "$prog"
	for a in "$@"; do printf ' %q' "$a"; done
	printf '\n'
} >>"$state/standin-calls.log" 2>/dev/null || true

die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# The host's architecture (ARCH in standin.conf, see uname.sh): an AArch64
# host's Nix builds for aarch64-linux (its system, and so
# builtins.currentSystem); an x86_64 host's for x86_64-linux, with
# aarch64-linux among its extra-platforms when binfmt emulation is there.
# ARCH=real: the host's root is arm64 and runs emulated; its Nix says what it
# is on its own.
arch=aarch64
if [ -r "$state/standin.conf" ]; then
	arch=$(sed -n 's/^ARCH=//p' "$state/standin.conf")
fi
case "${arch:-aarch64}" in
aarch64) export NIX_CONFIG="system = aarch64-linux${NIX_CONFIG:+
$NIX_CONFIG}" ;;
x86_64-binfmt) export NIX_CONFIG="extra-platforms = aarch64-linux${NIX_CONFIG:+
$NIX_CONFIG}" ;;
esac

# Everything but a build is the real Nix's.
case "$prog" in
nix | nix-build) ;;
*) exec -a "$prog" "$real_nix" "$@" ;;
esac
for a in "$@"; do
	[ "$a" != --version ] || exec -a "$prog" "$real_nix" "$@"
done

# ---- settings -------------------------------------------------------------

IMAGE_MIB=64
COMPRESS=1
CACHED_BUILD_SECONDS=0
BUILD_INPUTS=0
if [ -r "$state/standin.conf" ]; then
	while IFS='=' read -r key value; do
		case "$key" in
		IMAGE_MIB) IMAGE_MIB=$value ;;
		COMPRESS) COMPRESS=$value ;;
		CACHED_BUILD_SECONDS) CACHED_BUILD_SECONDS=$value ;;
		BUILD_INPUTS) BUILD_INPUTS=$value ;;
		esac
	done <"$state/standin.conf"
fi
case "$IMAGE_MIB" in
'' | *[!0-9]*) die "stand-in nix: IMAGE_MIB in $state/standin.conf must be a number of MiB, got '$IMAGE_MIB'" ;;
esac
case "$CACHED_BUILD_SECONDS" in
'' | *[!0-9]*) die "stand-in nix: CACHED_BUILD_SECONDS in $state/standin.conf must be a whole number of seconds, got '$CACHED_BUILD_SECONDS'" ;;
esac
if [ "$IMAGE_MIB" -lt 56 ]; then
	die "stand-in nix: IMAGE_MIB in $state/standin.conf must be at least 56 (8 MiB gap, 34 MiB FAT32, ext4), got $IMAGE_MIB"
fi

# ---- arguments ------------------------------------------------------------

# Options that take one value, and those that take two, for nix and nix-build.
takes_one=" --out-link -o --include -I --file -f --expr --attr -A --max-jobs -j --cores --system
 --store --eval-store --log-format --builders --substituters --trusted-public-keys --experimental-features
 --profile --reference-lock-file --output-lock-file --inputs-from --update-input --commit-lock-file-summary
 --timeout --max-silent-time --keep-failed-outputs --option-file --drv-link --add-root --out-path --apply "
takes_two=" --option --arg --argstr --override-input --override-flake --arg-from-file --arg-from-stdin "
# Those whose values are inputs of the build (they decide the store path).
input_opts=" --include -I --file -f --expr --attr -A --system --arg --argstr --override-input --override-flake --arg-from-file "

out_link="result"
build_dir_opt=""
reference_lock=""
json=0
options=()
no_link=0
print_out_paths=0
print_logs=0
positional=()
inputs=()
i=1
while [ "$i" -le "$#" ]; do
	a=${!i}
	case "$a" in
	--out-link | -o)
		i=$((i + 1))
		[ "$i" -le "$#" ] || die "flag '$a' requires 1 argument"
		out_link=${!i}
		;;
	--out-link=*) out_link=${a#--out-link=} ;;
	--no-link | --no-out-link) no_link=1 ;;
	--option)
		if [ "$((i + 2))" -le "$#" ]; then
			j=$((i + 1))
			k=$((i + 2))
			options+=(--option "${!j}" "${!k}")
			[ "${!j}" != build-dir ] || build_dir_opt=${!k}
		fi
		i=$((i + 2))
		;;
	--build-dir)
		i=$((i + 1))
		build_dir_opt=${!i}
		;;
	--reference-lock-file)
		i=$((i + 1))
		reference_lock=${!i:-}
		;;
	--print-out-paths) print_out_paths=1 ;;
	-L | --print-build-logs) print_logs=1 ;;
	--json) json=1 ;;
	--extra-*)
		# Any nix.conf setting may be passed as --extra-NAME VALUE.
		i=$((i + 1))
		;;
	--)
		i=$((i + 1))
		while [ "$i" -le "$#" ]; do
			positional+=("${!i}")
			inputs+=("${!i}")
			i=$((i + 1))
		done
		break
		;;
	-*)
		n=0
		if [[ $takes_two == *" $a "* ]]; then
			n=2
		elif [[ $takes_one == *" $a "* ]]; then
			n=1
		fi
		if [[ $input_opts == *" $a "* ]]; then
			inputs+=("$a")
			for ((j = 1; j <= n && i + j <= $#; j++)); do
				k=$((i + j))
				inputs+=("${!k}")
			done
		fi
		i=$((i + n))
		;;
	*)
		positional+=("$a")
		inputs+=("$a")
		;;
	esac
	i=$((i + 1))
done

# ---- nix eval, nix flake metadata ------------------------------------------

# What a build used, looked up the way real Nix answers it (payload's
# nixpkgs.go): `nix eval --json --expr` of nixpkgs' lib.version and
# lib.trivial.revisionWithDefault with `-I nixpkgs=...`, and `nix flake
# metadata --json REF`, whose "locks" is the flake's lock file.
#
# A channel (channel:NAME) is a tarball with .version, .version-suffix and
# .git-revision: its revision is fixed per channel name (starting with the
# 0000000 of the stand-in's release). A GitHub archive of a revision has no
# .git-revision: the revision is the default ("") and lib.version ends in
# "pre-git", as real nixpkgs says.
channel_revision() {
	printf '0000000%s\n' "$(printf 'channel %s\n' "$1" | sha256sum | cut -c1-33)"
}

# branch_revision resolves the branch nixos-26.05 of NixOS/nixpkgs, a
# remote flake's nixpkgs input, anew: it has moved since it was last
# resolved, to a revision fixed per resolution.
nixpkgs_branch_original='"original":{"owner":"NixOS","ref":"nixos-26.05","repo":"nixpkgs","type":"github"}'
branch_revision() {
	local f="$state/standin-nixpkgs-branch" n
	# Two builds at once each see it move.
	{
		flock 8
		n=$(cat "$f" 2>/dev/null || true)
		n=$((${n:-0} + 1))
		printf '%s\n' "$n" >"$f"
	} 8<"$state"
	channel_revision "github:NixOS/nixpkgs/nixos-26.05 $n"
}

# remote_nixpkgs_revision is the revision a remote flake's locking gives its
# nixpkgs input: the entry of the lock file given (as `nix flake metadata
# --json` prints "locks", or flake.lock) whose original is that input, else
# the branch resolved anew (also when the file does not exist, which real
# Nix reads as an empty lock file).
remote_nixpkgs_revision() {
	local rev=""
	if [ -n "$1" ] && [ -r "$1" ]; then
		rev=$(tr -d '\n' <"$1" | sed -n 's/.*"nixpkgs":{"locked":{[^}]*"rev":"\([0-9a-f]\{40\}\)"[^}]*},'"$nixpkgs_branch_original"'}.*/\1/p')
	fi
	if [ -n "$rev" ]; then printf '%s\n' "$rev"; else branch_revision; fi
}

standin_eval() {
	local a nixpkgs="" expr="" j
	for ((j = 1; j <= $#; j++)); do
		a=${!j}
		case "$a" in
		-I | --include)
			j=$((j + 1))
			case "${!j}" in nixpkgs=*) nixpkgs=${!j#nixpkgs=} ;; esac
			;;
		--expr)
			j=$((j + 1))
			expr=${!j}
			;;
		esac
	done
	case "$expr" in
	*lib.version* | *revisionWithDefault*) ;;
	*) die "the stand-in nix evaluates only nixpkgs' lib.version and lib.trivial.revisionWithDefault, not: $expr" ;;
	esac
	local rel rev version
	rel=$(cut -d. -f1,2 <<<"$release")
	case "$nixpkgs" in
	channel:*)
		rev=$(channel_revision "${nixpkgs#channel:}")
		version="${rel}.20260601.${rev:0:7}"
		;;
	https://github.com/NixOS/nixpkgs/archive/*.tar.gz)
		rev=""
		version="${rel}pre-git"
		;;
	http*://*/nixexprs.tar.xz)
		die "the stand-in nix cannot read the .git-revision of $nixpkgs: the host has no network (the plugin reads a release's git-revision before the build)"
		;;
	"") die "file 'nixpkgs' was not found in the Nix search path (add it using \$NIX_PATH or -I)" ;;
	*) die "the stand-in nix knows no nixpkgs at '$nixpkgs'" ;;
	esac
	printf '{"revision":"%s","version":"%s"}\n' "$rev" "$version"
}

# A local flake (path:DIR) answers with its flake.lock and a url with the
# narHash the real Nix computes of DIR (nix hash path). A remote flake, which
# the host cannot fetch, is locked as real Nix locks it, to a revision fixed
# per reference: "url" names the revision (github:OWNER/REPO/REV?narHash=...,
# or the reference with ?rev=REV), "revision" is it; the real Nix first
# parses the reference, so one it refuses fails.
standin_flake_metadata() {
	local ref=${positional[2]:-}
	[ -n "$ref" ] || die "the stand-in 'nix flake metadata' needs a flake reference"
	local rev nar locks
	rev=$(channel_revision "$ref")
	locks='{"nodes":{"nixpkgs":{"locked":{"owner":"NixOS","repo":"nixpkgs","rev":"'"$rev"'","type":"github"},"original":{"owner":"NixOS","ref":"nixos-26.05","repo":"nixpkgs","type":"github"}},"root":{"inputs":{"nixpkgs":"nixpkgs"}}},"root":"root","version":7}'
	case "$ref" in
	path:* | /* | ./* | ../* | . | ..)
		local dir=${ref#path:}
		dir=${dir%%\?*}
		if [ -d "$dir" ] && [ ! -f "$dir/flake.nix" ]; then
			die "path '$dir' does not contain a 'flake.nix'"
		fi
		# No lock file: Nix locks the inputs it fetches (nixpkgs here) in memory.
		if [ -f "$dir/flake.lock" ]; then locks=$(tr -d '\n' <"$dir/flake.lock"); fi
		nar=$("$real_nix" --extra-experimental-features nix-command hash path --sri "$dir" 2>/dev/null || true)
		printf '{"locks":%s,"original":{"path":"%s","type":"path"},"url":"path:%s%s"}\n' \
			"$locks" "$dir" "$dir" "${nar:+?narHash=$nar}"
		;;
	*)
		"$real_nix" --extra-experimental-features 'nix-command flakes' eval --raw \
			--expr "builtins.flakeRefToString (builtins.parseFlakeRef \"$ref\")" >/dev/null || exit 1
		# No flake.lock of its own: its nixpkgs input is resolved now.
		locks='{"nodes":{"nixpkgs":{"locked":{"owner":"NixOS","repo":"nixpkgs","rev":"'"$(branch_revision)"'","type":"github"},'"$nixpkgs_branch_original"'},"root":{"inputs":{"nixpkgs":"nixpkgs"}}},"root":"root","version":7}'
		local hex
		hex=$(printf 'source %s\n' "$rev" | sha256sum | cut -c1-64)
		# shellcheck disable=SC2001 # every byte of the hex, as \xHH
		nar="sha256-$(printf '%b' "$(sed 's/../\\x&/g' <<<"$hex")" | base64 -w0 | sed 's|+|%2B|g; s|=|%3D|g')"
		local url base=${ref%%\?*}
		case "$base" in
		github:* | gitlab:* | sourcehut:*)
			# owner/repo[/ref]: the revision replaces the branch.
			local scheme=${base%%:*} rest=${base#*:}
			url="$scheme:$(cut -d/ -f1,2 <<<"$rest")/$rev?narHash=$nar"
			;;
		*)
			url="$ref"
			if [[ $url == *'?'* ]]; then url="$url&rev=$rev"; else url="$url?rev=$rev"; fi
			;;
		esac
		printf '{"locks":%s,"original":{"url":"%s"},"originalUrl":"%s","revision":"%s","url":"%s"}\n' \
			"$locks" "$ref" "$ref" "$rev" "$url"
		;;
	esac
}

# ---- the command line the real Nix judges -----------------------------------

# standin_command sets validate to this command line as the real Nix can
# evaluate it on a host without network: nixpkgs channels and tarballs name
# the stand-in nixpkgs, a local flake's nixpkgs input is overridden with it,
# and a flake the host cannot fetch is replaced by a local one with the same
# nixosConfigurations entry.
nixpkgs_standin="$standin_dir/nixpkgs"
validate=()
# What a remote flake's build or evaluation locked its inputs to, once the
# real Nix accepted the command line.
remote_inputs=""
record_remote_inputs() {
	[ -z "$remote_inputs" ] || printf '%s\n' "$remote_inputs" >>"$state/standin-flake-inputs.log" 2>/dev/null || true
}
uses_file=0
tmp_flakes=()
cleanup_validation() {
	if [ "${#tmp_flakes[@]}" -gt 0 ]; then rm -rf "${tmp_flakes[@]}"; fi
}
trap cleanup_validation EXIT
# standin_write_lock writes the flake.lock real Nix writes when it evaluates
# or builds a local flake that has none (the stand-in's --override-input
# keeps the real one from writing it): every input in flake.nix locked to a
# revision fixed per input and URL, as real Nix writes a lock file (version
# 7, "follows" as a path). --no-write-lock-file writes nothing, as in Nix.
standin_write_lock() {
	local dir=$1 json
	[ -f "$dir/flake.nix" ] && [ ! -e "$dir/flake.lock" ] && [ -w "$dir" ] || return 0
	case " ${positional[0]:-} " in " build " | " eval ") ;; *) return 0 ;; esac
	case " $* ${validate[*]} " in *" --no-write-lock-file "*) return 0 ;; esac
	dir=$(cd "$dir" && pwd) || return 0
	# shellcheck disable=SC2016 # ${...} is Nix's
	json=$("$real_nix" --extra-experimental-features 'nix-command flakes' eval --raw --impure --expr '
		let
		  ins = (import '"$dir"'/flake.nix).inputs or { };
		  follows = i: builtins.filter builtins.isString (builtins.split "/" i.follows);
		  url = i: i.url or (builtins.flakeRefToString (removeAttrs i [ "inputs" "flake" ]));
		  node = name: i:
		    let
		      o = builtins.parseFlakeRef (url i);
		      rev = builtins.hashString "sha1" "nixos-sd stand-in ${name} ${url i}";
		    in
		    { original = o; locked = removeAttrs o [ "ref" ] // {
		        inherit rev;
		        lastModified = 1780000000;
		        narHash = builtins.convertHash { hash = builtins.hashString "sha256" rev; hashAlgo = "sha256"; toHashFormat = "sri"; };
		      }; }
		    // (if i ? inputs then { inputs = builtins.mapAttrs (_: v: follows v) (builtins.removeAttrs i.inputs
		      (builtins.filter (n: !(i.inputs.${n} ? follows)) (builtins.attrNames i.inputs))); } else { })
		    // (if i.flake or true then { } else { flake = false; });
		  direct = builtins.removeAttrs ins (builtins.filter (n: ins.${n} ? follows) (builtins.attrNames ins));
		in
		builtins.toJSON {
		  nodes = builtins.mapAttrs node direct // { root.inputs = builtins.mapAttrs (n: i: if i ? follows then follows i else n) ins; };
		  root = "root";
		  version = 7;
		}' 2>/dev/null) || return 0
	printf '%s\n' "$json" >"$dir/flake.lock"
}

standin_command() {
	for a in "$@"; do
		case "$a" in
		-f | --file | --expr | -E) uses_file=1 ;;
		nixpkgs=channel:?* | nixpkgs=https://nixos.org/channels/?* | nixpkgs=https://github.com/NixOS/nixpkgs/archive/?*.tar.gz | \
			nixpkgs=http://?*/nixexprs.tar.xz | nixpkgs=https://?*/nixexprs.tar.xz)
			a="nixpkgs=$nixpkgs_standin"
			;;
		esac
		validate+=("$a")
	done
	[ "$prog" = nix-build ] && uses_file=1
	if [ "$uses_file" -eq 0 ]; then
		for ((k = 0; k < ${#validate[@]}; k++)); do
			inst=${validate[k]}
			# Only the positional installables (after the subcommand).
			found=0
			for ((j = 1; j < ${#positional[@]}; j++)); do
				[ "${positional[j]}" != "$inst" ] || found=1
			done
			[ "$found" -eq 1 ] || continue
			ref=${inst%%#*}
			frag=""
			[[ $inst != *'#'* ]] || frag=${inst#*#}
			case "$ref" in
			path:* | /* | ./* | ../* | . | git+file:*)
				validate+=(--override-input nixpkgs "path:$nixpkgs_standin")
				# Its other inputs the stand-in has (nixos-hardware), by name:
				# the host cannot fetch them.
				local dir=${ref#path:} input
				dir=${dir#git+file://}
				dir=${dir%%\?*}
				standin_write_lock "$dir"
				for input in $("$real_nix" --extra-experimental-features nix-command eval --impure --raw --expr \
					"builtins.concatStringsSep \" \" (builtins.attrNames ((import $dir/flake.nix).inputs or { }))" 2>/dev/null || true); do
					if [ "$input" != nixpkgs ] && [ -f "$standin_dir/$input/flake.nix" ]; then
						validate+=(--override-input "$input" "path:$standin_dir/$input")
					fi
				done
				;;
			*)
				# A flake the host cannot fetch: a local one with the same
				# nixosConfigurations entry, on the stand-in nixpkgs, an
				# AArch64 configuration (as a real one sets hostPlatform).
				"$real_nix" --extra-experimental-features 'nix-command flakes' eval --raw \
					--expr "builtins.flakeRefToString (builtins.parseFlakeRef \"$ref\")" >/dev/null || exit 1
				remote_inputs="${positional[0]:-} $ref nixpkgs $(remote_nixpkgs_revision "$reference_lock")"
				tmp=$(mktemp -d /tmp/nixos-sd-standin-flake.XXXXXX)
				tmp_flakes+=("$tmp")
				name=""
				if [[ $frag == nixosConfigurations.* ]]; then
					name=${frag#nixosConfigurations.}
					name=${name%%.*}
				fi
				{
					printf '{\n  inputs.nixpkgs.url = "path:%s";\n  outputs = { nixpkgs, ... }: {\n' "$nixpkgs_standin"
					if [ -n "$name" ]; then
						printf '    nixosConfigurations."%s" = nixpkgs.lib.nixosSystem { modules = [ { nixpkgs.hostPlatform = "aarch64-linux"; } ]; };\n' "$name"
					fi
					printf '  };\n}\n'
				} >"$tmp/flake.nix"
				validate[k]="path:$tmp${frag:+#$frag}"
				;;
			esac
		done
	fi
}

# `nix eval` of a flake's attribute (a configuration's platform): the real
# Nix's, on the command line as the host can evaluate it.
if [ "$prog" = "nix" ] && [ "${positional[0]:-}" = eval ] && [[ " $* " != *" --expr "* ]]; then
	standin_command "$@"
	elog=$(mktemp /tmp/nixos-sd-standin-eval.XXXXXX)
	tmp_flakes+=("$elog")
	st=0
	(exec -a "$prog" "$real_nix" "${validate[@]}") 2>"$elog" </dev/null || st=$?
	if [ "$st" -ne 0 ]; then
		cat "$elog" >&2
	else
		# Its warnings, but for those about the stand-in's own flakes and lock files.
		grep -E '^warning:' "$elog" | grep -vE 'nixos-sd-standin|lock file' >&2 || true
		record_remote_inputs
	fi
	exit "$st"
fi
if [ "$prog" = "nix" ] && [ "${positional[0]:-}" = eval ]; then
	standin_eval "$@"
	exit 0
fi
if [ "$prog" = "nix" ] && [ "${positional[0]:-} ${positional[1]:-}" = "flake metadata" ]; then
	standin_flake_metadata
	exit 0
fi

if [ "$prog" = "nix-build" ]; then
	# nix-build always builds, prints the store path and logs unprefixed.
	print_out_paths=1
	log_prefix=""
else
	if [ "${#positional[@]}" -eq 0 ] || [ "${positional[0]}" != "build" ]; then
		exec -a "$prog" "$real_nix" "$@"
	fi
	if [ "$print_logs" -eq 1 ]; then
		log_prefix="nixos-sd-image> "
	else
		log_prefix=""
	fi
fi

# ---- the real Nix's verdict -----------------------------------------------

# On a host of a real arm64 root, what the machine is as the build sees it:
# the uname on its PATH and what it says, the real Nix's system and
# builtins.currentSystem (Host.MachineRecords).
if [ "$arch" = real ]; then
	{
		u=$(command -v uname || echo none)
		printf 'uname=%s:%s system=%s currentSystem=%s\n' "$u" "$(uname -m 2>&1)" \
			"$("$real_nix" --extra-experimental-features nix-command config show system 2>&1)" \
			"$(exec -a nix-instantiate "$real_nix" --eval --expr builtins.currentSystem 2>&1)"
	} >>"$state/standin-machine.log" 2>/dev/null || true
fi

standin_command "$@"
# --dry-run evaluates and instantiates, and builds nothing; with no
# substituters it does not look for the outputs in a binary cache the host
# cannot reach.
dd=-1
for ((k = 0; k < ${#validate[@]}; k++)); do
	if [ "${validate[k]}" = -- ]; then
		dd=$k
		break
	fi
done
dry=(--dry-run --option substituters '')
# nix build --dry-run --json names the derivation.
[ "$prog" != nix ] || dry+=(--json)
if [ "$dd" -ge 0 ]; then
	validate=("${validate[@]:0:dd}" "${dry[@]}" "${validate[@]:dd}")
else
	validate+=("${dry[@]}")
fi
vlog=$(mktemp /tmp/nixos-sd-standin-eval.XXXXXX)
vout=$(mktemp /tmp/nixos-sd-standin-eval.XXXXXX)
tmp_flakes+=("$vlog" "$vout")
vstatus=0
(exec -a "$prog" "$real_nix" "${validate[@]}") >"$vout" 2>"$vlog" </dev/null || vstatus=$?
if [ "$vstatus" -ne 0 ]; then
	cat "$vlog" >&2
	exit "$vstatus"
fi
record_remote_inputs
# The derivations it would build, for tests to read back what was
# evaluated (the image's name carries its platform).
grep -E '^ +/nix/store/.*\.drv$' "$vlog" | sed 's/^ *//' >>"$state/standin-drvs.log" 2>/dev/null || true
# Its warnings, but for those about the stand-in's own flake and lock files.
grep -E '^warning:' "$vlog" | grep -vE 'nixos-sd-standin|lock file' >&2 || true

real_drv=$(sed -n 's/.*"drvPath":"\([^"]*\.drv\)".*/\1/p' "$vout" | head -n 1)

# ---- the inputs, built by the real Nix ---------------------------------------

if [ "$BUILD_INPUTS" = 1 ] && [ -n "$real_drv" ]; then
	mapfile -t input_drvs < <(exec -a nix-store "$real_nix" --query --references "$real_drv" | grep '\.drv$' || true)
	if [ "${#input_drvs[@]}" -gt 0 ]; then
		(exec -a nix-store "$real_nix" --realise --no-gc-warning --option substituters '' \
			--option sandbox false "${options[@]}" "${input_drvs[@]}") >&2 </dev/null || exit $?
	fi
fi

# ---- an initrd that asks for modules the kernel lacks -------------------------

# The stand-in nixpkgs names them in the image derivation
# (initrdMissingModules): real Nix fails building the initrd, in
# makeModulesClosure's modprobe.
if [ -n "$real_drv" ] && [ -f "$real_drv" ]; then
	missing=$(grep -o '"initrdMissingModules","[^"]*"' "$real_drv" | cut -d'"' -f4 || true)
	if [ -n "$missing" ]; then
		h=$(printf 'initrd %s\n' "$real_drv" | sha256sum | cut -c1-32)
		initrd_drv="/nix/store/$h-initrd-linux-rpi-6.12.25.drv"
		{
			printf "building '%s'...\n" "$initrd_drv"
			printf "error: builder for '%s' failed with exit code 1;\n" "$initrd_drv"
			printf '       last 10 log lines:\n'
			printf '       > root module: %s\n' "${missing%% *}"
			printf '       > modprobe: FATAL: Module %s not found in directory /nix/store/%s-linux-rpi-6.12.25-modules/lib/modules/6.12.25\n' "${missing%% *}" "$h"
			printf "       For full logs, run:\n         nix log %s\n" "$initrd_drv"
			printf "error: 1 dependencies of derivation '%s' failed to build\n" "$real_drv"
		} >&2
		exit 1
	fi
fi

# ---- STANDIN_FAIL ---------------------------------------------------------

# fail_reason prints why the build must fail, if it must: an argument names an
# existing file or directory whose path or contents contain STANDIN_FAIL.
fail_reason() {
	local a c p
	local -a cands
	for a in "$@"; do
		[ "$a" = "$out_link" ] && continue
		cands=("$a")
		case "$a" in *=*) cands+=("${a#*=}") ;; esac
		for c in "${cands[@]}"; do
			case "$c" in *'#'*) cands+=("${c%%#*}") ;; esac
		done
		for c in "${cands[@]}"; do
			p=${c#path:}
			p=${p#git+file://}
			p=${p#file://}
			p=${p%%\?*}
			if [ -z "$p" ] || [ ! -e "$p" ]; then continue; fi
			if [[ $p == *STANDIN_FAIL* ]]; then
				printf 'STANDIN_FAIL in the name of %s\n' "$p"
				return 0
			fi
			if [ -f "$p" ] && grep -qsF STANDIN_FAIL -- "$p"; then
				printf 'STANDIN_FAIL found in %s\n' "$p"
				return 0
			fi
			if [ -d "$p" ] && [ "$p" != / ]; then
				local hit
				hit=$(find "$p" -maxdepth 6 \( -name .git -o -name result \) -prune -o -type f -size -4M \
					-exec grep -lsF STANDIN_FAIL -- {} + 2>/dev/null | head -n 1 || true)
				if [ -n "$hit" ]; then
					printf 'STANDIN_FAIL found in %s\n' "$hit"
					return 0
				fi
			fi
		done
	done
	return 1
}

# ---- store paths ----------------------------------------------------------

# nix_hash prints a 32-character Nix-style base32 hash of its standard input.
nix_hash() {
	local hex alphabet="0123456789abcdfghijklmnpqrsvwxyz" out="" k v j
	hex=$(sha256sum | cut -c1-40)
	for k in 0 5 10 15 20 25 30 35; do
		v=$((16#${hex:k:5}))
		for j in 15 10 5 0; do
			out+=${alphabet:$(((v >> j) & 31)):1}
		done
	done
	printf '%s\n' "$out"
}

# The store path depends on the build's inputs (installables, files,
# -I/--arg/... values, not log or output options), the settings and the
# contents of the files the inputs name, as a derivation's would.
inputs_digest() {
	local a p
	printf '%s\n' "$IMAGE_MIB" "$COMPRESS"
	for a in "$@"; do
		printf 'arg %s\n' "$a"
		for p in "$a" "${a#*=}"; do
			p=${p%%#*}
			p=${p#path:}
			if [ -f "$p" ]; then
				sha256sum -- "$p" 2>/dev/null || true
			elif [ -d "$p" ] && [ "$p" != / ]; then
				find "$p" -maxdepth 6 -type f -size -4M -printf '%P %s %T@\n' 2>/dev/null | sort || true
			fi
		done
	done
}

if [ "$prog" = "nix" ] && [ "${#inputs[@]}" -gt 0 ]; then
	inputs=("${inputs[@]:1}") # the subcommand
fi
hash=$( (inputs_digest "${inputs[@]}") | nix_hash)
drv_hash=$(printf 'drv %s\n' "$hash" | nix_hash)
fs_drv_hash=$(printf 'ext4 %s\n' "$hash" | nix_hash)
drv="/nix/store/${drv_hash}-nixos-sd-image.drv"
fs_drv="/nix/store/${fs_drv_hash}-ext4-fs.img.zst.drv"
store="$state/store"
out="$store/${hash}-nixos-sd-image"

log() {
	printf '%s%s\n' "$log_prefix" "$*" >&2
}

# build_failed fails as Nix does when a builder fails, with the last lines of
# its log ($blog).
build_failed() {
	{
		printf "error: builder for '%s' failed with exit code 1;\n" "$drv"
		printf '       last 10 log lines:\n'
		tail -n 10 "$blog" | sed 's/^/       > /'
		printf '       For full logs, run:\n         nix log %s\n' "$drv"
	} >&2
	exit 1
}

# ---- build ----------------------------------------------------------------

if [ -d "$out" ] && [ "$CACHED_BUILD_SECONDS" -gt 0 ]; then
	sleep "$CACHED_BUILD_SECONDS"
fi
if [ ! -d "$out" ]; then
	printf 'these 2 derivations will be built:\n  %s\n  %s\n' "$fs_drv" "$drv" >&2
	printf "building '%s'...\n" "$fs_drv" >&2
	printf "building '%s'...\n" "$drv" >&2
	log "Running phase: unpackPhase"
	log "Running phase: buildPhase"
	if reason=$(fail_reason "$@"); then
		log "$reason"
		cat >&2 <<-EOF
			error: builder for '$drv' failed with exit code 1;
			       last 3 log lines:
			       > Running phase: unpackPhase
			       > Running phase: buildPhase
			       > $reason
			       For full logs, run:
			         nix log $drv
		EOF
		exit 1
	fi

	# Root's Nix builds as a member of build-users-group (nixbld, which
	# Debian's nix-setup-systemd creates), and fails without one (on a host:
	# the unit tests' fake real Nix has no settings).
	if [ "$(id -u)" -eq 0 ] && [ -z "${NIXOS_SD_STANDIN_REAL_NIX:-}" ]; then
		bug=$("$real_nix" --extra-experimental-features nix-command config show 2>/dev/null | sed -n 's/^build-users-group = //p' || true)
		if [ -n "$bug" ] && ! getent group "$bug" >/dev/null; then
			die "the group '$bug' specified in 'build-users-group' does not exist"
		fi
	fi
	mkdir -p "$store"
	chmod 1777 "$store" 2>/dev/null || true
	# As Nix does, the derivation builds in a fresh directory under
	# build-dir, else TMPDIR, else /tmp; only its output goes to the store.
	scratch=${build_dir_opt:-${TMPDIR:-/tmp}}
	blog=$(mktemp "$store/.log-${hash}.XXXXXX")
	work=""
	stage=""
	trap 'rm -rf ${work:+"$work"} ${stage:+"$stage"} "$blog"; cleanup_validation' EXIT
	# Stopped (e.g. by timeout or the plugin's cancellation): clean up too.
	trap 'exit 143' TERM INT HUP
	if ! work=$(mktemp -d "$scratch/nix-build-nixos-sd-image.drv-XXXXXX" 2>"$blog"); then
		work=""
		build_failed
	fi

	# assemble makes the image in $work/out; it runs in a subshell of its own
	# so that set -e holds in it, its messages in $blog.
	assemble() {
		mib=1048576
		fw_start_mib=8
		fw_mib=34
		root_start_mib=$((fw_start_mib + fw_mib))
		root_mib=$((IMAGE_MIB - root_start_mib))
		img="$work/$image_name"

		# The firmware partition's files: sizes like the Raspberry Pi firmware
		# nixpkgs copies (start*.elf, fixup*.dat, U-Boot, device trees).
		fwdir="$work/firmware"
		mkdir -p "$fwdir"
		cat >"$fwdir/config.txt" <<-'EOF'
			[pi3]
			kernel=u-boot-rpi3.bin

			[pi02]
			kernel=u-boot-rpi3.bin

			[pi4]
			kernel=u-boot-rpi4.bin
			enable_gic=1
			armstub=armstub8-gic.bin

			# Otherwise the resolution will be weird in most cases, compared to
			# what the pi3 firmware does by default.
			disable_overscan=1

			# Supported in newer board revisions
			arm_boost=1

			[all]
			# Boot in 64-bit mode.
			arm_64bit=1

			# U-Boot needs this to work, regardless of whether UART is actually used or not.
			enable_uart=1

			# Prevent the firmware from smashing the framebuffer setup done by the mainline kernel
			# when attempting to show low-voltage or overtemperature warnings.
			avoid_warnings=1
		EOF
		fw_kib=0
		for f in bootcode.bin:52 fixup.dat:7 fixup4.dat:5 fixup_cd.dat:3 fixup4cd.dat:3 \
			start.elf:2900 start4.elf:2200 start_cd.elf:800 start4cd.elf:800 \
			u-boot-rpi3.bin:600 u-boot-rpi4.bin:600 armstub8-gic.bin:1 \
			bcm2710-rpi-3-b.dtb:32 bcm2710-rpi-3-b-plus.dtb:33 bcm2711-rpi-4-b.dtb:53 \
			bcm2711-rpi-400.dtb:53 bcm2711-rpi-cm4.dtb:53; do
			head -c "$((${f#*:} * 1024))" /dev/urandom >"$fwdir/${f%%:*}"
			fw_kib=$((fw_kib + ${f#*:}))
		done

		# The root file system's contents: a store-like tree with files that
		# compress about like a real system closure. A real image compresses about
		# 3:1; free space is zeros, so the fill mixes incompressible data (like
		# already compressed files) with text that compresses about 3:1, in the
		# share that brings the whole image to about 3:1.
		rootdir="$work/root"
		mkdir -p "$rootdir/nix/store" "$rootdir/boot/extlinux" "$rootdir/etc"
		# Leave room for the journal, inode tables and block group metadata.
		fill_kib=$((root_mib * 1024 * 80 / 100 - 2048))
		target_kib=$((IMAGE_MIB * 1024 / 3 - fw_kib))
		# random share r of the fill F: r*F + (1-r)*F/3 = target.
		random_kib=$(((3 * target_kib - fill_kib) / 2))
		[ "$random_kib" -gt 0 ] || random_kib=0
		[ "$random_kib" -le "$fill_kib" ] || random_kib=$fill_kib
		text_kib=$((fill_kib - random_kib))
		log "building the root file system (${fill_kib} KiB of store paths)"
		n=0
		chunk_kib=4096
		left=$random_kib
		while [ "$left" -gt 0 ]; do
			k=$((left < chunk_kib ? left : chunk_kib))
			d="$rootdir/nix/store/$(printf 'blob %s %s\n' "$hash" "$n" | nix_hash)-blob-$n"
			mkdir -p "$d/lib"
			head -c "$((k * 1024))" /dev/urandom >"$d/lib/data.bin"
			left=$((left - k))
			n=$((n + 1))
		done
		left=$text_kib
		while [ "$left" -gt 0 ]; do
			k=$((left < chunk_kib ? left : chunk_kib))
			d="$rootdir/nix/store/$(printf 'text %s %s\n' "$hash" "$n" | nix_hash)-text-$n"
			mkdir -p "$d/share"
			# base64 of random data mapped onto 4 symbols: about 2 bits per byte.
			# 57 input bytes make one 76-character line plus its newline.
			head -c "$((k * 1024 * 57 / 77))" /dev/urandom | base64 -w 76 |
				tr 'A-Za-z0-9+/' '0123012301230123012301230123012301230123012301230123012301230123' \
					>"$d/share/data.txt"
			left=$((left - k))
			n=$((n + 1))
		done
		cat >"$rootdir/boot/extlinux/extlinux.conf" <<-EOF
			# Generated file, all changes will be lost on nixos-rebuild!
			DEFAULT nixos-default
			MENU TITLE ------------------------------------------------------------
			TIMEOUT 50
			LABEL nixos-default
			  MENU LABEL NixOS - Default
			  LINUX ../nixos/kernel-Image
			  INITRD ../nixos/initrd
			  APPEND init=/nix/store/${hash}-nixos-system-nixos-sd-${release}/init loglevel=4
		EOF
		printf 'nixos-sd stand-in image %s\n' "$release" >"$rootdir/etc/nixos-sd-standin"
		: >"$rootdir/nix-path-registration"

		log "creating the partition table"
		truncate -s "$((IMAGE_MIB * mib))" "$img"
		sfdisk --quiet --no-reread --no-tell-kernel "$img" >/dev/null <<-EOF
			label: dos
			label-id: 0x2178694e

			start=$((fw_start_mib * 2048)), size=$((fw_mib * 2048)), type=b
			start=$((root_start_mib * 2048)), type=83, bootable
		EOF
		log "creating the FAT32 firmware partition"
		mkfs.vfat -F 32 -s 1 -n FIRMWARE -i 2178694e --offset "$((fw_start_mib * 2048))" "$img" "$((fw_mib * 1024))" >/dev/null 2>&1 ||
			die "stand-in nix: mkfs.vfat failed"
		MTOOLS_SKIP_CHECK=1 mcopy -i "$img@@$((fw_start_mib * mib))" "$fwdir"/* ::/ ||
			die "stand-in nix: mcopy into the firmware partition failed"
		log "creating the ext4 root partition"
		mkfs.ext4 -F -q -L NIXOS_SD -U 44444444-4444-4444-8888-888888888888 -E "offset=$((root_start_mib * mib))" \
			-d "$rootdir" "$img" "$((root_mib * 1024))k" >/dev/null ||
			die "stand-in nix: mkfs.ext4 failed"
		rm -rf "$rootdir" "$fwdir"

		result="$work/out"
		mkdir -p "$result/sd-image" "$result/nix-support"
		if [ "$COMPRESS" = 1 ]; then
			log "compressing the image with zstd"
			zstd -T0 -q --rm "$img" -o "$result/sd-image/$image_name.zst"
			echo "file sd-image $out/sd-image/$image_name.zst" >"$result/nix-support/hydra-build-products"
		else
			mv "$img" "$result/sd-image/$image_name"
			echo "file sd-image $out/sd-image/$image_name" >"$result/nix-support/hydra-build-products"
		fi
		printf '%s\n' "aarch64-linux" >"$result/nix-support/system"
	}
	st=0
	(assemble) 2>>"$blog" &
	apid=$!
	trap 'kill "$apid" 2>/dev/null; exit 143' TERM INT HUP
	wait "$apid" || st=$?
	cat "$blog" >&2
	[ "$st" -eq 0 ] || build_failed
	stage=$(mktemp -d "$store/.build-${hash}.XXXXXX")
	cp -a "$work/out" "$stage/out"
	# Publish atomically; a concurrent identical build may have won the race.
	mv -T "$stage/out" "$out" 2>/dev/null || true
	rm -rf "$work" "$stage" "$blog"
	work="" stage=""
	trap cleanup_validation EXIT
	[ -d "$out" ] || die "stand-in nix: could not create $out"
fi

if [ "$no_link" -eq 0 ]; then
	ln -sfn "$out" "$out_link" || die "stand-in nix: could not create the out link $out_link"
fi
if [ "$json" -eq 1 ]; then
	printf '[{"drvPath":"%s","outputs":{"out":"%s"}}]\n' "$real_drv" "$out"
fi
if [ "$print_out_paths" -eq 1 ]; then
	printf '%s\n' "$out"
fi
