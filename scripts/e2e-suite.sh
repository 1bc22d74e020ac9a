#!/usr/bin/env bash
# Runs the end-to-end suite (`make e2e` sets its environment) as three go test processes at once,
# each with its own test beds (their namespaces, subnets and ports never collide): one runs two
# thirds of the fault matrix's rows, one the real-arm64 test (TestBuilderArm64, whose host runs
# emulated: minutes of one core), the third every other end-to-end test and the last third. Much of
# a scenario's time is waiting (boots, polls, timeouts), so the streams on two cores end sooner.
#   scripts/e2e-suite.sh CACHE_DIR
# Writes CACHE_DIR/e2e-matrix.log, e2e-arm64.log and e2e-rest.log, then all into CACHE_DIR/e2e.log.
# Exits nonzero when a stream fails.
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
"${test_cmd[@]}" -run '^TestBuilderArm64$' ./e2e/ >"$cache/e2e-arm64.log" 2>&1 &
arm64=$!
echo "e2e: two thirds of the fault matrix and TestBuilderArm64 run beside these tests; their output follows ($cache/e2e-matrix.log, $cache/e2e-arm64.log)"
rest_rc=0
NIXOS_SD_MATRIX_SHARD=2/3 "${test_cmd[@]}" -skip '^TestBuilderArm64$' ./e2e/... ./internal/testbed/... ./internal/nixcache/... ./acceptance/... 2>&1 |
  tee "$cache/e2e-rest.log" || rest_rc=$?
matrix_rc=0
wait "$matrix" || matrix_rc=$?
arm64_rc=0
wait "$arm64" || arm64_rc=$?
echo "e2e: --- two thirds of the fault matrix (exit $matrix_rc) ---"
cat "$cache/e2e-matrix.log"
echo "e2e: --- TestBuilderArm64 (exit $arm64_rc) ---"
cat "$cache/e2e-arm64.log"
cat "$cache/e2e-rest.log" "$cache/e2e-matrix.log" "$cache/e2e-arm64.log" >"$cache/e2e.log"
echo "e2e: other tests and a third of the matrix exit $rest_rc, two thirds of the matrix exit $matrix_rc, TestBuilderArm64 exit $arm64_rc"
[ "$rest_rc" -eq 0 ] && [ "$matrix_rc" -eq 0 ] && [ "$arm64_rc" -eq 0 ]
