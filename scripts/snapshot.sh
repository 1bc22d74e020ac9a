#!/usr/bin/env bash
# Builds a snapshot release with .goreleaser.yml (nothing published, nothing signed), named as the
# release of version/version.go's version would be, so `packer init` can install it.
#   scripts/snapshot.sh            all targets of .goreleaser.yml into dist/ (before tagging)
#   NIXOS_SD_SNAPSHOT_TARGET=host scripts/snapshot.sh
#                                  this machine's OS/architecture only, into .cache/snapshot/dist
#                                  (CI: one target builds in a minute, all eight take >12 on 2 cores)
# Prints the dist folder. GoReleaser runs without root's power to read unreadable folders, beside
# an unreadable canary folder in .cache: a configuration that made it walk the tree fails here.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
goreleaser="$(scripts/goreleaser-bin.sh)"
version="$(sed -n 's/^\s*Version = "\(.*\)"$/\1/p' version/version.go)"
if [ -z "$version" ]; then
  echo "snapshot: no Version = \"...\" line in version/version.go" >&2
  exit 1
fi
work="$root/.cache/snapshot"
mkdir -p "$work"
go build -o "$work/describe-plugin" .
API_VERSION="$("$work/describe-plugin" describe | sed -n 's/.*"api_version":"\([^"]*\)".*/\1/p')"
export API_VERSION
if [ -z "$API_VERSION" ]; then
  echo "snapshot: the plugin's describe output has no api_version" >&2
  exit 1
fi

config="$root/.goreleaser.yml"
dist="$root/dist"
skip=sign
if [ -n "${NIXOS_SD_SNAPSHOT_TARGET:-}" ]; then
  target="$NIXOS_SD_SNAPSHOT_TARGET"
  [ "$target" = host ] && target="$(go env GOOS)_$(go env GOARCH)"
  goos="${target%_*}" goarch="${target#*_}"
  config="$work/goreleaser-$target.yml"
  dist="$work/dist"
  # The same configuration with one goos and one goarch; CI runs the tests on its own.
  sed -e "s/^\(\s*\)goos: \[.*\]$/\1goos: [$goos]/" -e "s/^\(\s*\)goarch: \[.*\]$/\1goarch: [$goarch]/" \
    "$root/.goreleaser.yml" >"$config"
  echo "dist: $dist" >>"$config"
  if [ "$(grep -c "goos: \[$goos\]$" "$config")" != 1 ] || [ "$(grep -c "goarch: \[$goarch\]$" "$config")" != 1 ]; then
    echo "snapshot: .goreleaser.yml no longer has one 'goos: [...]' and one 'goarch: [...]' line to narrow to $target" >&2
    exit 1
  fi
  skip=sign,before
fi

canary="$work/walk-canary"
mkdir -p "$canary"
chmod 000 "$canary"
run=()
if [ "$(id -u)" = 0 ]; then
  # shellcheck disable=SC2054 # setpriv takes a comma-separated list
  run=(setpriv --bounding-set=-dac_override,-dac_read_search)
fi
start=$(date +%s)
NIXOS_SD_SNAPSHOT_VERSION="$version" "${run[@]}" "$goreleaser" release --snapshot --clean --skip="$skip" \
  --config "$config" >&2
echo "snapshot: v$version ($API_VERSION) in $dist, $(( $(date +%s) - start ))s" >&2
echo "$dist"
