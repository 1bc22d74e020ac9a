#!/usr/bin/env bash
# Runs the end-to-end suite (`make e2e` sets its environment) as two go test processes at once, each
# with its own test beds (their namespaces, subnets and ports never collide): one runs two thirds of
# the fault matrix's rows, the other every other end-to-end test and the last third. Much of a
# scenario's time is waiting (boots, polls, timeouts), so two streams on two cores end sooner.
#   scripts/e2e-suite.sh CACHE_DIR
# Writes CACHE_DIR/e2e-matrix.log and CACHE_DIR/e2e-rest.log, then both into CACHE_DIR/e2e.log.
# Exits nonzero when either stream fails.
set -euo pipefail
cache=$1
test_cmd=(go test -tags e2e -p 1 -count=1 -timeout 50m -v)
# Each process records the EC2 actions its tests called; the last to end checks
# docs/iam-policy.json against all of them (e2e/iam_policy_test.go).
NIXOS_SD_E2E_PARTS_DIR="$(mktemp -d)"
export NIXOS_SD_E2E_PARTS_DIR
trap 'rm -rf "$NIXOS_SD_E2E_PARTS_DIR"' EXIT
# Compile once, before the two streams race to.
go test -tags e2e -c -o "$cache/e2e.test" ./e2e/ && rm -f "$cache/e2e.test"
NIXOS_SD_MATRIX_SHARD=0,1/3 "${test_cmd[@]}" -run '^TestFaultMatrix$' ./e2e/ >"$cache/e2e-matrix.log" 2>&1 &
matrix=$!
echo "e2e: two thirds of the fault matrix run beside these tests; their output follows ($cache/e2e-matrix.log)"
rest_rc=0
NIXOS_SD_MATRIX_SHARD=2/3 "${test_cmd[@]}" ./e2e/... ./internal/testbed/... ./internal/nixcache/... ./acceptance/... 2>&1 |
  tee "$cache/e2e-rest.log" || rest_rc=$?
matrix_rc=0
wait "$matrix" || matrix_rc=$?
echo "e2e: --- two thirds of the fault matrix (exit $matrix_rc) ---"
cat "$cache/e2e-matrix.log"
cat "$cache/e2e-rest.log" "$cache/e2e-matrix.log" >"$cache/e2e.log"
echo "e2e: other tests and a third of the matrix exit $rest_rc, two thirds of the matrix exit $matrix_rc"
[ "$rest_rc" -eq 0 ] && [ "$matrix_rc" -eq 0 ]
