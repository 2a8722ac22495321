#!/usr/bin/env bash
# The test command: installs the Debian packages, builds, runs every test (unit, parity, tools).
# Parity tests read the reference fixtures from $CLIPSERVE_FIXTURES (default ../shared/fixtures/reference-a);
# when that directory is missing they are skipped with a message, unless CLIPSERVE_FIXTURES_REQUIRED=1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
bash tools/build.sh
# Node.js packages for the interop tests, the example client and the browser test (exact versions from their package-lock.json).
for dir in tests/interop client/node tests/web; do
  if [[ ! -d $dir/node_modules ]] || [[ $dir/package-lock.json -nt $dir/node_modules ]]; then
    npm ci --prefix "$dir" --no-audit --no-fund
  fi
done
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure -j "$(nproc)"
# A failure in a suite's SetUpTestSuite makes gtest skip the suite's tests, and ctest counts a skipped test as no
# failure: look for such failures in the tests' output.
log="${BUILD_DIR:-build}/Testing/Temporary/LastTest.log"
if grep -q "SetUpTestSuite or TearDownTestSuite" "$log"; then
  echo "test.sh: a test suite's set-up or tear-down failed (its tests were reported as skipped):" >&2
  grep "SetUpTestSuite or TearDownTestSuite" "$log" | sort -u >&2
  exit 1
fi
