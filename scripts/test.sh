#!/usr/bin/env bash
# The README's test command (and CI's): installs what is missing, builds, runs
# the whole suite, then builds again with ASan+UBSan and runs the suite again.
# Exits non-zero when any test fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== build and test (RelWithDebInfo) =="
bash scripts/build.sh build
(cd build && ctest --output-on-failure --timeout 600)

echo "== build and test under AddressSanitizer + UndefinedBehaviorSanitizer =="
bash scripts/build.sh build-sanitize -DATRIUM_SANITIZE=ON
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-sanitize && ctest --output-on-failure --timeout 900)
