#!/usr/bin/env bash
# The README's test command (and CI's): installs what is missing, builds, runs
# the whole suite, builds again with ASan+UBSan and runs the suite again, then
# runs the libFuzzer targets for a bounded time. Exits non-zero on any failure.
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

echo "== fuzz: libFuzzer targets (clang), 30 s each =="
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DATRIUM_FUZZ=ON >/dev/null
for target in fuzz_rest_body fuzz_csr fuzz_http_request; do
  cmake --build build-fuzz -j2 --target "$target"
  corpus=$(mktemp -d)
  cp tests/fuzz/corpus/"${target#fuzz_}"/* "$corpus"/
  ./build-fuzz/"$target" -max_total_time=30 -timeout=10 -print_final_stats=1 "$corpus" 2>&1 | tail -4
  rm -rf "$corpus"
done
echo "fuzz: no crash"
