#!/usr/bin/env bash
# Regenerates the HCL2 specs, the docs partials and .web-docs/ (pages and metadata.hcl) from the
# config structs and the components the plugin registers.
# packer-sdc struct-markdown only terminates when a parent folder is named
# packer-plugin-*, so it runs through a symlink of that name.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd -P)"
link_parent="$(mktemp -d)"
trap 'rm -rf "$link_parent"' EXIT
ln -s "$root" "$link_parent/packer-plugin-nixos-sd"
cd "$link_parent/packer-plugin-nixos-sd"
export PWD="$link_parent/packer-plugin-nixos-sd"
go generate ./...
rm -rf .docs
go tool packer-sdc renderdocs -src docs -partials docs-partials/ -dst .docs/
# .web-docs/ is what HashiCorp's integration framework reads: metadata.hcl and one README per
# component, from the components the plugin binary describes.
bin="$link_parent/plugin"
go build -o "$bin" .
"$bin" describe >"$link_parent/describe.json"
go run ./cmd/webdocs -docs .docs -out .web-docs -describe "$link_parent/describe.json"
rm -rf .docs
git ls-files -co --exclude-standard "*.hcl2spec.go" | xargs -r gofmt -w
