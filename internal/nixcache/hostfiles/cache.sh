#!/usr/bin/env bash
# cache.sh: the instance's half of the nixos-sd binary cache push. The plugin
# uploads it next to build.sh and runs it through the communicator; it never
# receives a credential or the signing key, only presigned URLs (on standard
# input, so that they stay out of the process list).
#
#   bash cache.sh paths TARGET
#       Prints `nix path-info --json` of the store paths the build made
#       itself: the closure of TARGET's derivation with its outputs (build-time
#       dependencies included), without .drv files. TARGET is a .drv or a
#       built store path (its deriver is used when it is known).
#
#   bash cache.sh nar STORE_PATH
#       Writes the path's NAR to a new file in /var/tmp (on disk; /tmp may
#       be a small tmpfs), compressed with zstd (else xz, else not at all),
#       and prints "FILE COMPRESSION SHA256_HEX SIZE".
#
#   bash cache.sh put FILE [OFFSET LENGTH]
#       PUTs FILE (or LENGTH bytes of it from OFFSET) to the URL read from
#       standard input and prints the response's ETag.
set -euo pipefail

die() {
	printf 'nixos-sd: error: %s\n' "$*" >&2
	exit "${code:-1}"
}

# as_nix runs a Nix command as root when this user cannot open the store
# (no daemon, store not writable), as build.sh builds.
as_nix() {
	if [ "$(id -u)" -ne 0 ] && [ ! -S /nix/var/nix/daemon-socket/socket ] && [ ! -w /nix/store ]; then
		sudo -n -H "$@"
	else
		"$@"
	fi
}

paths() {
	local target=$1 drv=""
	case "$target" in
	*.drv) drv=$target ;;
	*) drv=$(as_nix nix-store --query --deriver "$target" 2>/dev/null || true) ;;
	esac
	local list
	if [ -n "$drv" ] && [ "$drv" != unknown-deriver ] && [ -e "$drv" ]; then
		list=$(as_nix nix-store --query --requisites --include-outputs "$drv")
	else
		list=$(as_nix nix-store --query --requisites "$target")
	fi
	printf '%s\n' "$list" | grep -v '\.drv$' | grep . |
		xargs -r bash "$0" as-nix nix --extra-experimental-features nix-command path-info --json
}

nar() {
	local path=$1 file comp
	file=$(mktemp /var/tmp/nixos-sd-nar.XXXXXXXXXX 2>/dev/null || mktemp "${TMPDIR:-/tmp}/nixos-sd-nar.XXXXXXXXXX")
	if command -v zstd >/dev/null 2>&1; then
		comp=zstd
		nix-store --dump "$path" | zstd -T0 -q -c >"$file"
	elif command -v xz >/dev/null 2>&1; then
		comp=xz
		nix-store --dump "$path" | xz -T0 -3 -c >"$file"
	else
		comp=none
		nix-store --dump "$path" >"$file"
	fi
	printf '%s %s %s %s\n' "$file" "$comp" "$(sha256sum <"$file" | cut -d' ' -f1)" "$(stat -c %s "$file")"
}

put() {
	local file=$1 part=""
	command -v curl >/dev/null 2>&1 || die "curl is not installed on the host; install it (apt-get install curl) to push to the cache"
	if [ "$#" -ge 3 ]; then
		part="$file.part"
		dd if="$file" of="$part" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none
		file=$part
	fi
	local url headers status=0
	IFS= read -r url || die "no URL on standard input"
	headers=$(printf 'url = "%s"\n' "$url" |
		curl --config - --silent --show-error --fail --retry 3 --upload-file "$file" --dump-header - --output /dev/null) || status=$?
	[ -z "$part" ] || rm -f "$part"
	[ "$status" -eq 0 ] || die "uploading to the cache failed (curl exit status $status)"
	printf '%s\n' "$headers" | tr -d '\r' | sed -n 's/^[Ee][Tt][Aa][Gg]: *//p' | tail -n 1
}

case "${1:-}" in
paths)
	[ "$#" -eq 2 ] || die "usage: cache.sh paths TARGET"
	paths "$2"
	;;
as-nix)
	shift
	as_nix "$@"
	;;
nar)
	[ "$#" -eq 2 ] || die "usage: cache.sh nar STORE_PATH"
	nar "$2"
	;;
put)
	[ "$#" -eq 2 ] || [ "$#" -eq 4 ] || die "usage: cache.sh put FILE [OFFSET LENGTH]"
	shift
	put "$@"
	;;
*)
	die "usage: cache.sh paths TARGET | nar STORE_PATH | put FILE [OFFSET LENGTH]"
	;;
esac
