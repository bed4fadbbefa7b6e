#!/usr/bin/env bash
# The README's run command: installs what is missing, builds, starts atriumd on
# an embedded SQLite database in ./atrium-data, and applies the example mesh
# (examples/shopping-mall/mesh.yaml; applying it again changes nothing).
# Ctrl-C stops atriumd cleanly. Extra arguments go to atriumd, e.g.
#   scripts/run.sh --rest-addr 127.0.0.1:18080
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh build

rest_addr=127.0.0.1:15080
previous=
for argument in "$@"; do
  case "$previous" in --rest-addr) rest_addr=$argument ;; esac
  case "$argument" in --rest-addr=*) rest_addr=${argument#--rest-addr=} ;; esac
  previous=$argument
done

build/atriumd --data-dir ./atrium-data "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null' INT TERM
for _ in $(seq 1 100); do
  curl -sf "http://$rest_addr/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { wait "$pid"; exit $?; }
  sleep 0.1
done
build/atriumctl --addr "$rest_addr" --data-dir ./atrium-data apply -f examples/shopping-mall/mesh.yaml
echo "atriumd is running (pid $pid) with the example mesh; try: build/atriumctl get services"
wait "$pid"
