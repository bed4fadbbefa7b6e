#!/usr/bin/env bash
# The README's test command (and CI's): installs what is missing, builds, checks
# formatting and runs the static analyzer, runs the whole suite, builds in
# Release (-O3), builds with ASan+UBSan and runs the suite again, builds with
# ThreadSanitizer and runs the suite again, then runs the libFuzzer targets for
# a bounded time. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== build and test (RelWithDebInfo) =="
bash scripts/build.sh build
(cd build && ctest --output-on-failure --timeout 600)

echo "== static checks: clang-format, clang-tidy =="
bash scripts/static-checks.sh build

echo "== Release build (-O3): warnings are errors there too =="
bash scripts/build.sh build-release -DCMAKE_BUILD_TYPE=Release

echo "== build and test under AddressSanitizer + UndefinedBehaviorSanitizer =="
bash scripts/build.sh build-sanitize -DATRIUM_SANITIZE=ON
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-sanitize && ctest --output-on-failure --timeout 900)
unset ASAN_OPTIONS UBSAN_OPTIONS

echo "== build and test under ThreadSanitizer =="
# Every process a test starts (atriumd, atrium-proxy) writes its reports into
# one directory; any report fails the run, even from a process whose test passed.
bash scripts/build.sh build-tsan -DATRIUM_TSAN=ON
tsan_reports=$(mktemp -d)
export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp log_path=$tsan_reports/report"
(cd build-tsan && ctest --output-on-failure --timeout 900)
unset TSAN_OPTIONS
if compgen -G "$tsan_reports/report.*" >/dev/null; then
  cat "$tsan_reports"/report.*
  echo "ThreadSanitizer reported data races (above)" >&2
  exit 1
fi
rm -rf "$tsan_reports"

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
