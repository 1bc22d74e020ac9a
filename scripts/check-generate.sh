#!/usr/bin/env bash
# Fails when a generated file (HCL2 specs, docs partials, .web-docs/) is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/generate.sh
if [ -n "$(git status --porcelain -- '*.hcl2spec.go' docs-partials .web-docs)" ]; then
  echo "generated files are stale; run 'make generate' and commit the result:" >&2
  git status --porcelain -- '*.hcl2spec.go' docs-partials .web-docs >&2
  git --no-pager diff --stat -- '*.hcl2spec.go' docs-partials .web-docs >&2
  exit 1
fi
echo "generated files are fresh"
