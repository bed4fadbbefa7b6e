#!/usr/bin/env bash
# The static part of the quality gate:
#   - every C file is formatted as .clang-format says (clang-format --dry-run --Werror);
#   - the Clang static analyzer (clang-tidy, checks in .clang-tidy) finds nothing in the
#     product's code (server, store, certs, common, proxy-stub, cli).
#   scripts/static-checks.sh [BUILD_DIR]
# BUILD_DIR (default build/) must be configured and built: clang-tidy reads its
# compile_commands.json and the headers protoc-c generated there.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}

mapfile -t sources < <(find server store certs common proxy-stub cli tests bench \
                         -path tests/interop/node_modules -prune -o \
                         -type f \( -name '*.c' -o -name '*.h' \) -print | sort)
echo "static checks: clang-format on ${#sources[@]} files"
clang-format --dry-run --Werror "${sources[@]}"

echo "static checks: clang-tidy (Clang static analyzer) on the product's code"
tidy_log=$(mktemp)
if ! run-clang-tidy -p "$build_dir" -j 2 -quiet \
       "$(pwd)/(server|store|certs|common|proxy-stub|cli)/[^/]*\.c$" >"$tidy_log" 2>&1; then
  grep -E 'warning:|error:' "$tidy_log" | sed 's/\x1b\[[0-9;]*m//g' | sort -u >&2 || true
  echo "static checks: clang-tidy found problems (full output: $tidy_log)" >&2
  exit 1
fi
rm -f "$tidy_log"
echo "static checks: clean"
