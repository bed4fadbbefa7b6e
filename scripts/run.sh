#!/usr/bin/env bash
# The README's run command: installs what is missing, builds, and starts atriumd
# on an embedded SQLite database in ./atrium-data (Ctrl-C stops it cleanly).
# Extra arguments go to atriumd, e.g. scripts/run.sh --rest-addr 127.0.0.1:18080
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build
exec build/atriumd --data-dir ./atrium-data "$@"
