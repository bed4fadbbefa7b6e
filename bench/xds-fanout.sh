#!/usr/bin/env bash
# bench/xds-fanout.sh — xDS fan-out benchmark: starts atriumd (fresh data
# directory, free ports on 127.0.0.1), applies a mesh of S services (default
# 1,000; 2 endpoints each; each depends on 3 others, and all but svc-0 on
# svc-0, the service whose endpoint then changes), runs the xds_fanout load
# generator (N delta ADS subscribers plus M state-of-the-world ones, one
# connection each), and stops atriumd. Prints figures and targets; asserts
# nothing (exit 0 when the measurement completed, 2 when it could not).
#
#   bench/xds-fanout.sh [--build DIR] [--generator PATH] [--subscribers N] [--sotw M]
#                       [--services S] [--deadline-s S] [--perf SECONDS]
#                       [--perf-phase connect|change] [--perf-out FILE]
#                       [-- more xds_fanout options]
#
# --perf SECONDS records `perf record --call-graph dwarf` of atriumd for that long, from the
# generator's start (--perf-phase connect, the default) or from just before
# the first endpoint change (change), and prints the top of the report;
# --perf-out keeps perf.data as FILE.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=$here/../build
generator=
subscribers=1000
sotw=100
services=1000
deadline=120
perf_seconds=0
perf_phase=connect
perf_out=
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --generator) generator=$2; shift 2 ;;
    --subscribers) subscribers=$2; shift 2 ;;
    --sotw) sotw=$2; shift 2 ;;
    --services) services=$2; shift 2 ;;
    --deadline-s) deadline=$2; shift 2 ;;
    --perf) perf_seconds=$2; shift 2 ;;
    --perf-phase) perf_phase=$2; shift 2 ;;
    --perf-out) perf_out=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "xds-fanout: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
generator=${generator:-$build/bench_xds_fanout}
for binary in "$build/atriumd" "$build/atriumctl" "$generator"; do
  [ -x "$binary" ] || { echo "xds-fanout: $binary is missing: build it first" >&2; exit 2; }
done
if [ "$services" -lt 4 ]; then echo "xds-fanout: --services must be at least 4" >&2; exit 2; fi

# Both atriumd and the generator hold one descriptor per subscriber.
need=$((subscribers + sotw + 1024))
want=65536
[ "$want" -ge "$need" ] || want=$need
if ! ulimit -n "$want" 2>/dev/null; then
  hard=$(ulimit -Hn)
  [ "$hard" = unlimited ] || ulimit -n "$hard"
  echo "xds-fanout: warning: cannot raise the fd limit to $want; using the hard limit $(ulimit -n)" >&2
  if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    echo "xds-fanout: $need descriptors needed for $((subscribers + sotw)) subscribers" >&2
    exit 2
  fi
fi

work=$(mktemp -d /tmp/atrium-bench-xds-XXXXXX)
pid=
perf_pid=
cleanup() {
  if [ -n "$perf_pid" ] && kill -0 "$perf_pid" 2>/dev/null; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
  fi
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$build/atriumd" --data-dir "$work/data" --rest-addr 127.0.0.1:0 --xds-addr 127.0.0.1:0 --tls-addr 127.0.0.1:0 \
  2>"$work/atriumd.log" &
pid=$!
ready=
for _ in $(seq 1 100); do
  if grep -qs ' ready ' "$work/atriumd.log"; then ready=1; break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
[ -n "$ready" ] || { echo "xds-fanout: atriumd did not start:" >&2; cat "$work/atriumd.log" >&2; exit 2; }
rest_port=$(sed -n 's/.*admin REST API listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/atriumd.log")
xds_port=$(sed -n 's/.*xDS .*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/atriumd.log")
[ -n "$rest_port" ] && [ -n "$xds_port" ] || { echo "xds-fanout: no ports in the log" >&2; cat "$work/atriumd.log" >&2; exit 2; }

# The mesh: svc-0 depends on svc-1..3; svc-i on svc-0 and the next two others.
awk -v n="$services" 'BEGIN {
  print "services:"
  for (i = 0; i < n; i++) {
    if (i == 0) deps = "svc-1, svc-2, svc-3"
    else deps = sprintf("svc-0, svc-%d, svc-%d", 1 + i % (n - 1), 1 + (i + 1) % (n - 1))
    address = sprintf("10.%d.%d.%d", int(i / 62500) % 250, int(i / 250) % 250, i % 250 + 1)
    printf "  - name: svc-%d\n    dependencies: [%s]\n    endpoints:\n", i, deps
    printf "      - {id: svc-%d-a, address: %s, port: 8080}\n", i, address
    printf "      - {id: svc-%d-b, address: %s, port: 8081}\n", i, address
  }
}' >"$work/mesh.yaml"

setup_start=$(date +%s.%N)
ATRIUM_ADDR=127.0.0.1:$rest_port "$build/atriumctl" --data-dir "$work/data" apply -f "$work/mesh.yaml" \
  >"$work/apply.log" 2>&1 || { echo "xds-fanout: apply failed:" >&2; tail -5 "$work/apply.log" >&2; exit 2; }
setup_end=$(date +%s.%N)
echo "xds-fanout: atriumd pid $pid (xDS :$xds_port, REST :$rest_port), fd limit $(ulimit -n);" \
  "applied $services services ($(grep -c '^service/' "$work/apply.log") services," \
  "$(grep -c '^endpoints/' "$work/apply.log") endpoint lists) in" \
  "$(awk -v a="$setup_start" -v b="$setup_end" 'BEGIN {printf "%.1f", b - a}') s"

pause=()
if [ "$perf_seconds" -gt 0 ]; then
  case "$perf_phase" in
    connect) trigger= ;;
    change) trigger='all connected; changes start'; pause=(--pre-change-pause-s 2) ;;
    *) echo "xds-fanout: --perf-phase is connect or change" >&2; exit 2 ;;
  esac
  (
    if [ -n "$trigger" ]; then
      for _ in $(seq 1 $((deadline * 10))); do
        grep -q "$trigger" "$work/generator.err" 2>/dev/null && break
        sleep 0.1
      done
    fi
    exec perf record --call-graph dwarf,16384 -F 250 -o "$work/perf.data" -p "$pid" -- sleep "$perf_seconds"
  ) >"$work/perf.log" 2>&1 &
  perf_pid=$!
fi

status=0
"$generator" --xds "127.0.0.1:$xds_port" --rest "127.0.0.1:$rest_port" \
  --token-file "$work/data/admin.token" --pid "$pid" --subscribers "$subscribers" --sotw "$sotw" \
  --services "$services" --deadline-s "$deadline" "${pause[@]}" "${extra[@]}" \
  2> >(tee "$work/generator.err" >&2) || status=$?

if [ -n "$perf_pid" ]; then
  wait "$perf_pid" 2>/dev/null || true
  perf_pid=
  if [ -f "$work/perf.data" ]; then
    [ -z "$perf_out" ] || cp "$work/perf.data" "$perf_out"
    echo "== perf: atriumd, $perf_seconds s of the $perf_phase phase: self time by library and symbol =="
    { perf report -i "$work/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
        | grep -E '^ +[0-9]+\.[0-9]+%' | sed -e 's/  */ /g' -e 's/ *$//' | cut -c1-160 | head -30; } || true
    echo "== perf: the same, including callees (children) =="
    { perf report -i "$work/perf.data" --children --sort symbol --stdio -g none 2>/dev/null \
        | grep -E '^ +[0-9]+\.[0-9]+% +[0-9]+\.[0-9]+%' | sed -e 's/  */ /g' -e 's/ *$//' \
        | cut -c1-160 | head -30; } || true
  fi
fi
if ! kill -0 "$pid" 2>/dev/null; then
  echo "xds-fanout: atriumd died during the run; its log:" >&2
  tail -20 "$work/atriumd.log" >&2
  status=2
fi
exit "$status"
