#!/usr/bin/env bash
# The seeded stress and fault-injection tests (tests/Vfio.Tests/Sweeps, and the race tests of the
# interrupt sets, regions and hot reset), with the device race of DeviceStressTests at
# VFIO_STRESS_ROUNDS rounds (600 here, ten times the unit run's 60). Seeded and bounded by round
# counts, so a failure replays. Ends with "stress: N passed, N failed"; exits non-zero when anything
# failed.
#
# Usage: tests/stress/run-stress.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."

export VFIO_STRESS_ROUNDS="${1:-${VFIO_STRESS_ROUNDS:-600}}"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
echo "stress: ${VFIO_STRESS_ROUNDS} rounds of the device race, the fault sweep, the interrupt and register stress tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
timeout 1800 dotnet test tests/Vfio.Tests --logger "console;verbosity=detailed" \
  --filter "FullyQualifiedName~Vfio.Tests.Sweeps|FullyQualifiedName~Stress|FullyQualifiedName~Racing" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# The detailed console logger ends with "Total tests: T", "Passed: P" and, when some failed, "Failed: F".
passed="$(sed -nE 's/^ +Passed: +([0-9]+)$/\1/p' "$log" | tail -n 1)"
failed="$(sed -nE 's/^ +Failed: +([0-9]+)$/\1/p' "$log" | tail -n 1)"
passed="${passed:-0}" failed="${failed:-0}"
echo "stress: ${passed} passed, ${failed} failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
