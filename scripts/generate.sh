#!/usr/bin/env bash
# Regenerates the HCL2 specs, the docs partials and .web-docs/ from the config structs.
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
# .web-docs/ is what the Packer integrations portal reads: one README per component.
rm -rf .web-docs/components
mkdir -p .web-docs/components/builder/nixos-sd .web-docs/components/provisioner/nixos-sd .web-docs/components/data-source/debian-ami
cp .docs/README.md .web-docs/README.md
cp .docs/builders/nixos-sd.mdx .web-docs/components/builder/nixos-sd/README.md
cp .docs/provisioners/nixos-sd.mdx .web-docs/components/provisioner/nixos-sd/README.md
cp .docs/datasources/debian-ami.mdx .web-docs/components/data-source/debian-ami/README.md
rm -rf .docs
git ls-files -co --exclude-standard "*.hcl2spec.go" | xargs -r gofmt -w
