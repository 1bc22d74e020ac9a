#!/usr/bin/env bash
# Provides GoReleaser, pinned in tools/goreleaser/go.mod (apart from the plugin's go.mod), built
# once into an ignored cache folder keyed by that module's go.sum (a cold build takes ~3 minutes
# on two cores). Prints its path.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/tools/goreleaser"
key="$(cat "$tools/go.mod" "$tools/go.sum" | sha256sum | cut -c1-16)"
dir="${GORELEASER_CACHE_DIR:-$root/.cache/goreleaser/$key}"
bin="$dir/goreleaser"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$dir"
echo "building goreleaser from tools/goreleaser (about 3 minutes, once)..." >&2
start=$(date +%s)
go build -C "$tools" -o "$bin.tmp" github.com/goreleaser/goreleaser/v2 >&2
mv "$bin.tmp" "$bin"
echo "goreleaser built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
