#!/usr/bin/env bash
# bench/proxy.sh — atrium-proxy against nginx and HAProxy as HTTP/1.1 reverse
# proxies, in one run, in front of the same backend (an nginx worker answering
# "hello\n"), plus a direct run against the backend with no proxy:
#   - every server is started here, as the current user, with its own config
#     (templates in bench/proxy/) in a temp dir, on free 127.0.0.1 ports; one
#     worker each; upstream keep-alive on;
#   - atrium-proxy gets its configuration over xDS from an atriumd started here
#     (fresh data dir) holding 1,000 services: `backend` (the backend) and 999
#     more, each with one endpoint (all on the backend's address; nothing else
#     is ever contacted);
#   - wrk (-t1, -H 'Host: backend') runs on CPU 0; the proxy under test and the
#     backend on CPU 1 (taskset); atriumd on CPU 0 (idle during the runs);
#   - per target: -c50 and -c1, DURATION seconds each, RUNS times, targets
#     interleaved within a run, after a 1 s warm-up; the table shows medians.
# Columns: requests/s, p50/p99 latency in µs (exact, from wrk's done() hook:
# bench/proxy/report.lua), the proxy's CPU time per request in µs (utime +
# stime of all its processes, /proc/<pid>/stat before/after each run, divided
# by the requests; nginx = master + worker) and its peak RSS (VmHWM, summed over
# its processes, read at the end). On the "direct" row those two columns are
# the backend's own. Below the table: the targets, each "target met" or
# "NOT met" — throughput (-c50) >= 1.2x nginx's in the same run; added p50
# latency at -c1 (proxy p50 - direct p50) <= 20 µs; atrium-proxy peak RSS
# <= 12 MiB with 1,000 services configured.
# The per-run lines also show how much of CPUs 0 and 1 other processes (or the
# hypervisor) took during that run: the comparison holds only where that is ~0
# (a WARNING line says when it is not; the machine's load average is printed).
# Before measuring, each target must answer two GETs on one connection (200,
# 200); a run with fewer than 10 responses per connection counts as stalled.
# Exit status: 0 when everything ran; 1 when a target could not be measured
# cleanly (start failure, crash, non-2xx or socket errors: the details are
# printed); 2 when the benchmark cannot run at all. Missing a target is not a
# failure. Every wait is bounded; the EXIT trap stops exactly the processes
# started here (by pid) and removes the temp dir.
#   bash bench/proxy.sh [BUILD_DIR] [RUNS=3] [DURATION_S=10]
#   bash bench/proxy.sh build 1 2      # smoke run, about half a minute
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-build}
runs=${2:-3}
duration=${3:-10}
services=1000
target_ratio=1.2     # atrium-proxy req/s (-c50) / nginx's
target_added_us=20   # atrium-proxy p50 - direct p50 at -c1
target_rss_kb=12288  # 12 MiB of VmHWM
case "$runs$duration" in *[!0-9]*) echo "usage: bench/proxy.sh [BUILD_DIR] [RUNS] [DURATION_S]" >&2; exit 2 ;; esac
if [ "$runs" -lt 1 ] || [ "$duration" -lt 1 ]; then echo "bench/proxy: RUNS and DURATION_S must be >= 1" >&2; exit 2; fi

for tool in wrk nginx haproxy taskset curl python3 ps; do
  command -v "$tool" >/dev/null || { echo "bench/proxy: $tool is not installed" >&2; exit 2; }
done
if [ "$(nproc --all)" -lt 2 ] || ! taskset -c 1 true 2>/dev/null; then
  echo "bench/proxy: needs CPUs 0 and 1 (wrk on one, proxy and backend on the other)" >&2; exit 2
fi
atrium=1
atrium_note=
status=0
for binary in "$build/atriumd" "$build/atriumctl" "$build/atrium-proxy"; do
  if [ ! -x "$binary" ]; then
    echo "bench/proxy: $binary is not built (cmake --build $build): atrium-proxy will not be measured" >&2
    atrium=
    atrium_note="$binary is not built"
    status=1
  fi
done

# The three proxies' executables start with the same page cache state, that
# of an installed binary: dropped from the cache, then read as they run. A
# binary straight from the linker sits in the page cache in larger pieces,
# and fault-around then maps ~0.7 MiB more of it (atrium-proxy's file-backed
# RSS was 8.8-8.9 MiB that way against 8.1-8.2 MiB once read normally).
# posix_fadvise(DONTNEED) is a hint about the page cache only; files with
# unwritten pages are synced first so that it takes.
sync
for binary in "$build/atrium-proxy" "$(command -v nginx)" "$(command -v haproxy)"; do
  [ -f "$binary" ] && python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
os.close(fd)' "$binary" 2>/dev/null || true
done

work=$(mktemp -d /tmp/atrium-bench-proxy-XXXXXX)
chmod 755 "$work"
pids=()   # every process started here, in start order (nginx workers included)
# shellcheck disable=SC2317  # run by the trap
cleanup() {
  local pid i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for pid in ${pids[@]+"${pids[@]}"}; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "bench/proxy: $*" >&2; status=1; }

# N distinct free ports on 127.0.0.1 (held together while they are chosen).
free_ports() {
  python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}
read -r backend_port nginx_port haproxy_port outbound_port inbound_port admin_port app_port < <(free_ports 7)

user_line=
[ "$(id -u)" -ne 0 ] || user_line="user $(id -un);"  # workers as root, not nobody: the temp dir is private

# The sum of utime + stime (clock ticks) of the given pids.
cpu_ticks() {
  local total=0 pid t
  for pid in "$@"; do
    t=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}
# The sum of a /proc/<pid>/status field (kB) over the given pids.
status_kb() {
  local field=$1 total=0 pid v
  shift
  for pid in "$@"; do
    v=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status" 2>/dev/null) || v=0
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
# Clock ticks so far: CPU 0 busy, total, steal, CPU 1 busy, total, steal
# (/proc/stat), and the CPU time of this shell's reaped children (wrk).
machine_ticks() {
  awk '$1 == "cpu0" || $1 == "cpu1" {printf "%d %d %d ", $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9, $9}' /proc/stat
  sed 's/^.*) //' "/proc/$$/stat" | awk '{print $14 + $15}'
}
alive() { local pid; for pid in "$@"; do kill -0 "$pid" 2>/dev/null || return 1; done; }

# GET http://127.0.0.1:PORT/ with Host: backend until it answers 200 (bounded:
# TRIES tenths of a second) or PID dies. Prints nothing; returns 0 on 200.
wait_200() {
  local port=$1 pid=$2 tries=${3:-100} code
  for _ in $(seq 1 "$tries"); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 -H 'Host: backend' "http://127.0.0.1:$port/") || true
    [ "$code" = 200 ] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# Two GETs (Host: backend) on one connection to 127.0.0.1:PORT: prints what
# curl saw ("200 200 " when keep-alive works); returns 0 only then.
two_on_one() {
  local codes
  codes=$(curl -s -o /dev/null -o /dev/null -w '%{http_code} ' --max-time 3 -H 'Host: backend' \
    "http://127.0.0.1:$1/" "http://127.0.0.1:$1/" 2>/dev/null) || true
  echo "$codes"
  [ "$codes" = "200 200 " ]
}

# start_nginx NAME TEMPLATE PORT [BACKEND_PORT]: an nginx on CPU 1 from
# bench/proxy/TEMPLATE in $work/NAME; sets started_pids (master, then workers).
start_nginx() {
  local name=$1 template=$2 port=$3 upstream=${4:-0} dir=$work/$1 pid children
  mkdir -p "$dir"
  sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@BACKEND_PORT@|$upstream|g" \
    -e "s|@USER@|$user_line|g" "$here/proxy/$template" >"$dir/nginx.conf"
  if ! nginx -t -q -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/test.log" 2>&1; then
    cat "$dir/test.log" >&2; echo "bench/proxy: nginx ($name) rejects its config" >&2; exit 2
  fi
  taskset -c 1 nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  if ! wait_200 "$port" "$pid"; then
    cat "$dir/stdout.log" "$dir/error.log" >&2 2>/dev/null || true
    echo "bench/proxy: nginx ($name) did not answer 200 on 127.0.0.1:$port" >&2; exit 2
  fi
  if ! codes=$(two_on_one "$port"); then
    echo "bench/proxy: nginx ($name): two GETs on one connection got '$codes'" >&2; exit 2
  fi
  read -r -a children <<<"$(ps -o pid= --ppid "$pid" | tr '\n' ' ')"
  started_pids=("$pid" "${children[@]}")
  pids+=("${children[@]}")
}

# The backend, and the direct "target".
start_nginx backend backend.conf "$backend_port"
backend_pids=("${started_pids[@]}")
body=$(curl -s --max-time 2 "http://127.0.0.1:$backend_port/")
[ "$body" = hello ] || { echo "bench/proxy: the backend answered '$body', not hello" >&2; exit 2; }

# nginx as a proxy.
start_nginx nginx nginx.conf "$nginx_port" "$backend_port"
nginx_pids=("${started_pids[@]}")

# HAProxy.
mkdir -p "$work/haproxy"
sed -e "s|@PORT@|$haproxy_port|g" -e "s|@BACKEND_PORT@|$backend_port|g" \
  "$here/proxy/haproxy.cfg" >"$work/haproxy/haproxy.cfg"
if ! haproxy -c -q -f "$work/haproxy/haproxy.cfg" >"$work/haproxy/check.log" 2>&1; then
  cat "$work/haproxy/check.log" >&2; echo "bench/proxy: haproxy rejects its config" >&2; exit 2
fi
taskset -c 1 haproxy -f "$work/haproxy/haproxy.cfg" -db >"$work/haproxy/haproxy.log" 2>&1 &
haproxy_pids=("$!")
pids+=("$!")
if ! wait_200 "$haproxy_port" "${haproxy_pids[0]}"; then
  cat "$work/haproxy/haproxy.log" >&2
  echo "bench/proxy: haproxy did not answer 200 on 127.0.0.1:$haproxy_port" >&2; exit 2
fi
if ! codes=$(two_on_one "$haproxy_port"); then
  echo "bench/proxy: haproxy: two GETs on one connection got '$codes'" >&2; exit 2
fi

# atriumd with 1,000 services, then atrium-proxy.
atrium_pids=()
atrium_clusters=0
atrium_rss_idle=0
atrium_hwm_idle=0
atrium_anon_idle=0
atrium_file_idle=0
atrium_threads=0
apply_s=0
atrium_problem() {  # WHAT: report, with the proxy's log tail, and leave atrium-proxy out
  fail "atrium-proxy: $*"
  if [ -s "$work/atrium-proxy.log" ]; then
    echo "bench/proxy: atrium-proxy log (last 30 lines):" >&2
    tail -n 30 "$work/atrium-proxy.log" >&2
  fi
  atrium_note="FAILED: $*"
  atrium=
}
if [ -n "$atrium" ]; then
  taskset -c 0 "$build/atriumd" --data-dir "$work/atriumd" --rest-addr 127.0.0.1:0 \
    --xds-addr 127.0.0.1:0 --tls-addr 127.0.0.1:0 2>"$work/atriumd.log" &
  atriumd_pid=$!
  pids+=("$atriumd_pid")
  ready=
  for _ in $(seq 1 200); do
    if grep -qs ' ready ' "$work/atriumd.log" && [ -s "$work/atriumd/admin.token" ]; then ready=1; break; fi
    kill -0 "$atriumd_pid" 2>/dev/null || break
    sleep 0.05
  done
  rest_port=$(sed -n 's/.*admin REST API listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/atriumd.log")
  xds_port=$(sed -n 's/.*xDS (ADS[^)]*plaintext) listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/atriumd.log")
  if [ -z "$ready" ] || [ -z "$rest_port" ] || [ -z "$xds_port" ]; then
    cat "$work/atriumd.log" >&2; echo "bench/proxy: atriumd did not start" >&2; exit 2
  fi
  # `backend` and svc-0001 .. svc-0999, one endpoint each, in one apply.
  awk -v n="$services" -v port="$backend_port" 'BEGIN {
    print "services:"
    for (i = 0; i < n; i++) {
      name = i == 0 ? "backend" : sprintf("svc-%04d", i)
      printf "  - name: %s\n    endpoints:\n      - {id: %s-0, address: 127.0.0.1, port: %d}\n", name, name, port
    }
  }' >"$work/mesh.yaml"
  apply_start=$(date +%s.%N)
  if ! ATRIUM_ADDR=127.0.0.1:$rest_port timeout 120 "$build/atriumctl" --data-dir "$work/atriumd" \
      apply -f "$work/mesh.yaml" >"$work/apply.log" 2>&1; then
    tail -n 5 "$work/apply.log" >&2; echo "bench/proxy: atriumctl apply failed" >&2; exit 2
  fi
  apply_s=$(awk -v a="$apply_start" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  applied=$(grep -c '^service/' "$work/apply.log" || true)
  [ "$applied" -eq "$services" ] || { tail -n 5 "$work/apply.log" >&2; echo "bench/proxy: $applied of $services services applied" >&2; exit 2; }

  taskset -c 1 "$build/atrium-proxy" --xds "127.0.0.1:$xds_port" --node bench --service client \
    --app-port "$app_port" --outbound-port "$outbound_port" --inbound-port "$inbound_port" \
    --admin-port "$admin_port" >"$work/atrium-proxy.log" 2>&1 &
  atrium_pids=("$!")
  pids+=("$!")
  admin="http://127.0.0.1:$admin_port"
  code=
  for _ in $(seq 1 300); do  # 30 s
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$admin/ready") || true
    [ "$code" = 200 ] && break
    kill -0 "${atrium_pids[0]}" 2>/dev/null || break
    sleep 0.1
  done
  if ! kill -0 "${atrium_pids[0]}" 2>/dev/null; then
    wait "${atrium_pids[0]}" && rc=0 || rc=$?
    atrium_problem "exited (status $rc) before /ready answered 200"
  elif [ "$code" != 200 ]; then
    atrium_problem "GET $admin/ready answered '${code:-nothing}', not 200, after 30 s: $(curl -s --max-time 1 "$admin/ready" | head -c 300)"
  fi
  if [ -n "$atrium" ]; then
    # All 1,000 clusters received (bounded: 30 s).
    for _ in $(seq 1 300); do
      atrium_clusters=$(curl -s --max-time 2 "$admin/clusters" | grep -c '::added_via_api::true') || true
      [ "${atrium_clusters:-0}" -ge "$services" ] && break
      kill -0 "${atrium_pids[0]}" 2>/dev/null || break
      sleep 0.1
    done
    # Its memory with the whole configuration applied, before any request
    # (kept even when a check below fails).
    if [ "${atrium_clusters:-0}" -ge "$services" ] && alive "${atrium_pids[@]}"; then
      atrium_rss_idle=$(status_kb VmRSS "${atrium_pids[@]}")
      atrium_hwm_idle=$(status_kb VmHWM "${atrium_pids[@]}")
      atrium_anon_idle=$(status_kb RssAnon "${atrium_pids[@]}")
      atrium_file_idle=$(status_kb RssFile "${atrium_pids[@]}")
      atrium_threads=$(awk '$1 == "Threads:" {print $2}' "/proc/${atrium_pids[0]}/status")
    fi
    if [ "${atrium_clusters:-0}" -lt "$services" ]; then
      atrium_problem "only ${atrium_clusters:-0} of $services clusters in $admin/clusters after 30 s"
    elif ! wait_200 "$outbound_port" "${atrium_pids[0]}" 100; then
      curl -sv --max-time 2 -H 'Host: backend' "http://127.0.0.1:$outbound_port/" >"$work/atrium-get.txt" 2>&1 || true
      echo "bench/proxy: GET / with Host: backend through 127.0.0.1:$outbound_port (curl -v):" >&2
      sed 's/^/  /' "$work/atrium-get.txt" >&2
      atrium_problem "GET / (Host: backend) on the outbound port did not answer 200 in 10 s"
    elif [ "$(curl -s --max-time 2 -H 'Host: backend' "http://127.0.0.1:$outbound_port/")" != hello ]; then
      atrium_problem "GET / (Host: backend) answered 200 but not the backend's body"
    elif ! codes=$(two_on_one "$outbound_port"); then
      echo "bench/proxy: two GET / (Host: backend) on one connection to 127.0.0.1:$outbound_port (curl -v):" >&2
      curl -sv -o /dev/null -o /dev/null --max-time 3 -H 'Host: backend' "http://127.0.0.1:$outbound_port/" \
        "http://127.0.0.1:$outbound_port/" 2>&1 | grep -v '^{ \[' | sed 's/^/  /' >&2 || true
      echo "bench/proxy: atrium-proxy /stats (non-zero counters):" >&2
      curl -s --max-time 2 "$admin/stats" | grep -v -e '^#' -e ' 0$' -e '_bucket{' | sed 's/^/  /' >&2 || true
      atrium_problem "keep-alive: two GET / (Host: backend) on one client connection got '${codes% }' (curl; 000 = no response in 3 s), not '200 200'"
    fi
  fi
fi

targets=(direct nginx haproxy)
[ -z "$atrium" ] || targets+=(atrium-proxy)
target_port() {
  case "$1" in
    direct) echo "$backend_port" ;; nginx) echo "$nginx_port" ;;
    haproxy) echo "$haproxy_port" ;; atrium-proxy) echo "$outbound_port" ;;
  esac
}
# The processes whose CPU time and RSS are a target's: the proxy's, or for
# "direct" the backend's.
target_pids() {
  case "$1" in
    direct) echo "${backend_pids[*]}" ;; nginx) echo "${nginx_pids[*]}" ;;
    haproxy) echo "${haproxy_pids[*]}" ;; atrium-proxy) echo "${atrium_pids[*]}" ;;
  esac
}
dead=" "   # targets that stopped answering or died
results=$work/results.txt  # TARGET CONNS RUN REQ/S P50_US P99_US CPU_US_PER_REQ ERRORS OTHERS0_% OTHERS1_% STEAL_%
: >"$results"

# measure TARGET CONNS RUN SECONDS: one wrk run; appends to $results unless RUN is 0 (warm-up).
measure() {
  local target=$1 conns=$2 run=$3 seconds=$4 port pids_list before after line out requests
  local machine_before machine_after backend_before=0 backend_after=0
  port=$(target_port "$target")
  read -r -a pids_list <<<"$(target_pids "$target")"
  out=$work/wrk-$target-c$conns-$run.txt
  before=$(cpu_ticks "${pids_list[@]}")
  [ "$target" = direct ] || backend_before=$(cpu_ticks "${backend_pids[@]}")
  machine_before=$(machine_ticks)
  if ! taskset -c 0 wrk -t1 -c"$conns" -d"${seconds}s" --timeout 5s -H 'Host: backend' \
      -s "$here/proxy/report.lua" "http://127.0.0.1:$port/" >"$out" 2>&1; then
    cat "$out" >&2; fail "wrk against $target failed"; dead+="$target "; return
  fi
  after=$(cpu_ticks "${pids_list[@]}")
  machine_after=$(machine_ticks)
  [ "$target" = direct ] || backend_after=$(cpu_ticks "${backend_pids[@]}")
  if ! alive "${pids_list[@]}"; then
    fail "$target died during the -c$conns run $run"
    [ "$target" != atrium-proxy ] || { echo "atrium-proxy log (last 30 lines):" >&2; tail -n 30 "$work/atrium-proxy.log" >&2; }
    dead+="$target "
  fi
  line=$(grep '^RESULT ' "$out" || true)
  [ -n "$line" ] || { cat "$out" >&2; fail "no result from wrk against $target"; dead+="$target "; return; }
  requests=$(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$line")
  if [ "${requests:-0}" -lt $((conns * 10)) ]; then
    fail "$target -c$conns run $run: only ${requests:-0} responses in ${seconds}s over $conns connection(s): requests stall"
    dead+="$target "
    return
  fi
  [ "$run" -ne 0 ] || return 0
  # Columns 9 to 11, in % of the run: CPU 0's time used by anything but wrk,
  # CPU 1's by anything but the target and the backend, and the time the
  # hypervisor stole from the two.
  awk -v t="$target" -v c="$conns" -v r="$run" -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" \
      -v mine=$((after - before + backend_after - backend_before)) -v b0="$machine_before" -v b1="$machine_after" '
    { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
    END {
      errors = v["connect"] + v["read"] + v["write"] + v["status"] + v["timeout"]
      split(b0, x, " "); split(b1, y, " ")
      for (i = 1; i <= 7; i++) d[i] = y[i] - x[i]
      for (i = 2; i <= 5; i += 3) if (d[i] <= 0) d[i] = 1
      others0 = d[1] - d[7]; others1 = d[4] - mine
      printf "%s %d %d %.1f %d %d %.2f %d %.0f %.0f %.0f\n", t, c, r, v["requests"] / (v["duration_us"] / 1e6),
        v["p50_us"], v["p99_us"], v["requests"] ? ticks / hz * 1e6 / v["requests"] : 0, errors,
        (others0 > 0 ? 100 * others0 / d[2] : 0), (others1 > 0 ? 100 * others1 / d[5] : 0),
        100 * (d[3] + d[6]) / (d[2] + d[5])
    }' <<<"$line" >>"$results"
  [ "$(tail -n 1 "$results" | cut -d' ' -f8)" -gt 0 ] || return 0
  fail "$target -c$conns run $run: errors in wrk's summary (${line#RESULT }); wrk said:"
  grep -v '^RESULT ' "$out" | sed 's/^/  /' >&2
  if [ "$target" = atrium-proxy ]; then
    echo "  a request that way now: curl -sv -H 'Host: backend' http://127.0.0.1:$port/" >&2
    curl -sv --max-time 2 -H 'Host: backend' "http://127.0.0.1:$port/" 2>&1 | sed 's/^/    /' >&2 || true
    echo "  atrium-proxy /stats:" >&2
    curl -s --max-time 2 "http://127.0.0.1:$admin_port/stats" | grep -v ' 0$' | head -40 | sed 's/^/    /' >&2 || true
    echo "  atrium-proxy log (last 30 lines):" >&2
    tail -n 30 "$work/atrium-proxy.log" | sed 's/^/    /' >&2
  fi
}

echo "proxy benchmark: $(nproc --all) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)); wrk -t1 on CPU 0, proxy + backend on CPU 1"
echo "  load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews every figure)"
echo "  $runs run(s) x (-c50, -c1) x ${duration}s per target; $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "  ports: backend $backend_port, nginx $nginx_port, haproxy $haproxy_port, atrium-proxy outbound $outbound_port (admin $admin_port)"
if [ "$atrium_hwm_idle" -gt 0 ]; then
  echo "  atriumd: $services services applied in ${apply_s}s; atrium-proxy has $atrium_clusters clusters," \
    "before any request RSS $(awk -v r="$atrium_rss_idle" -v h="$atrium_hwm_idle" -v a="$atrium_anon_idle" -v f="$atrium_file_idle" \
      'BEGIN {printf "%.1f MiB (anonymous %.1f, file-backed %.1f; VmHWM %.1f)", r / 1024, a / 1024, f / 1024, h / 1024}'), $atrium_threads threads"
fi

for target in "${targets[@]}"; do measure "$target" 50 0 1; done  # warm-up
for run in $(seq 1 "$runs"); do
  for target in "${targets[@]}"; do
    case "$dead" in *" $target "*) continue ;; esac
    for conns in 50 1; do
      case "$dead" in *" $target "*) continue ;; esac
      measure "$target" "$conns" "$run" "$duration"
    done
  done
  echo "  run $run/$runs done"
done

# Peak RSS, at the end (after every run).
declare -A hwm
for target in "${targets[@]}"; do
  read -r -a pids_list <<<"$(target_pids "$target")"
  hwm[$target]=$(status_kb VmHWM "${pids_list[@]}")
done

# median TARGET CONNS COLUMN (4 = req/s, 5 = p50, 6 = p99, 7 = CPU µs/req, 8 = errors)
median() {
  awk -v t="$1" -v c="$2" -v k="$3" '$1 == t && $2 == c {print $k}' "$results" | sort -g |
    awk '{v[NR] = $1} END {if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
declare -A m
for target in direct nginx haproxy atrium-proxy; do
  for conns in 50 1; do
    for col in 4 5 6 7; do m[$target,$conns,$col]=$(median "$target" "$conns" "$col"); done
    m[$target,$conns,8]=$(awk -v t="$target" -v c="$conns" '$1 == t && $2 == c {s += $8} END {print s + 0}' "$results")
  done
done
num() { if [ -n "$1" ]; then printf "%$2" "$1"; else printf "%${3}s" "-"; fi; }

echo
echo "per run: req/s, p50/p99 µs, the target's CPU µs/req (= % of CPU 1), errors; and, in % of the run,"
echo "  the time of CPU 0 taken by other processes than wrk, of CPU 1 by other processes than the"
echo "  target and the backend, and of both stolen by the hypervisor (all should be ~0):"
awk '{printf "  %-12s -c%-2d run %d: %7.0f req/s  p50 %4d  p99 %6d  cpu %5.2f µs/req = %3.0f %%  errors %d  others %2d/%2d %%  steal %2d %%\n",
      $1, $2, $3, $4, $5, $6, $7, $4 * $7 / 1e4, $8, $9, $10, $11}' "$results"
busy=$(awk '$9 > 10 || $10 > 10 || $11 > 10 {n++} END {print n + 0}' "$results")
[ "$busy" -eq 0 ] || echo "  WARNING: in $busy run(s) other work or the hypervisor took over 10 % of CPU 0 or 1: those figures are skewed"
echo
echo "medians of $runs run(s), ${duration}s each:"
printf '%-13s | %22s | %22s | %13s | %14s | %s\n' "" "-c50 (-t1)" "-c1" "CPU µs/req" "peak RSS" "errors"
printf '%-13s | %9s %5s %6s | %9s %5s %6s | %6s %6s | %14s | %s\n' \
  target "req/s" "p50" "p99" "req/s" "p50" "p99" "-c50" "-c1" "VmHWM" "-c50/-c1"
for target in direct nginx haproxy atrium-proxy; do
  if [ -z "${m[$target,50,4]}${m[$target,1,4]}" ]; then
    printf '%-13s | not measured%s\n' "$target" "${atrium_note:+ ($atrium_note)}"
    continue
  fi
  printf '%-13s | %s %s %s | %s %s %s | %s %s | %10s MiB | %s/%s\n' "$target" \
    "$(num "${m[$target,50,4]}" 9.0f 9)" "$(num "${m[$target,50,5]}" 5.0f 5)" "$(num "${m[$target,50,6]}" 6.0f 6)" \
    "$(num "${m[$target,1,4]}" 9.0f 9)" "$(num "${m[$target,1,5]}" 5.0f 5)" "$(num "${m[$target,1,6]}" 6.0f 6)" \
    "$(num "${m[$target,50,7]}" 6.2f 6)" "$(num "${m[$target,1,7]}" 6.2f 6)" \
    "$(awk -v k="${hwm[$target]:-0}" 'BEGIN {printf "%.1f", k / 1024}')" "${m[$target,50,8]}" "${m[$target,1,8]}"
done
echo "(latencies in µs; 'direct' = wrk against the backend, its CPU and RSS columns are the backend's;"
echo " nginx CPU and RSS are master + worker)"

echo
echo "added p50 latency at -c1 (proxy p50 - direct p50):"
for target in nginx haproxy atrium-proxy; do
  if [ -n "${m[$target,1,5]}" ] && [ -n "${m[direct,1,5]}" ]; then
    printf '  %-13s %+6.0f µs\n' "$target" "$(awk -v a="${m[$target,1,5]}" -v b="${m[direct,1,5]}" 'BEGIN {print a - b}')"
  fi
done
echo
echo "targets:"
verdict() { awk -v ok="$1" 'BEGIN {print (ok ? "target met" : "NOT met")}'; }
if [ -n "${m[atrium-proxy,50,4]}" ] && [ -n "${m[nginx,50,4]}" ]; then
  ratio=$(awk -v a="${m[atrium-proxy,50,4]}" -v n="${m[nginx,50,4]}" 'BEGIN {printf "%.2f", a / n}')
  per_run=$(awk '$2 == 50 && $1 == "nginx" {n[$3] = $4} $2 == 50 && $1 == "atrium-proxy" {a[$3] = $4}
    END {for (r = 1; r in a; r++) if (r in n) printf "%s%.2f", (r > 1 ? ", " : ""), a[r] / n[r]}' "$results")
  printf '  throughput -c50: atrium-proxy %.0f req/s = %sx nginx (%.0f req/s; per run %s); target >= %sx: %s\n' \
    "${m[atrium-proxy,50,4]}" "$ratio" "${m[nginx,50,4]}" "$per_run" "$target_ratio" \
    "$(verdict "$(awk -v r="$ratio" -v t="$target_ratio" 'BEGIN {print (r >= t)}')")"
else
  echo "  throughput -c50 >= ${target_ratio}x nginx: not measured"
fi
if [ -n "${m[atrium-proxy,1,5]}" ] && [ -n "${m[direct,1,5]}" ]; then
  added=$(awk -v a="${m[atrium-proxy,1,5]}" -v b="${m[direct,1,5]}" 'BEGIN {print a - b}')
  printf '  added p50 latency -c1: atrium-proxy %s µs - direct %s µs = %s µs; target <= %s µs: %s\n' \
    "${m[atrium-proxy,1,5]}" "${m[direct,1,5]}" "$added" "$target_added_us" \
    "$(verdict "$(awk -v a="$added" -v t="$target_added_us" 'BEGIN {print (a <= t)}')")"
else
  echo "  added p50 latency -c1 <= ${target_added_us} µs: not measured"
fi
if [ -n "${m[atrium-proxy,50,4]}${m[atrium-proxy,1,4]}" ]; then
  printf '  peak RSS: atrium-proxy %.1f MiB (VmHWM %d kB) with %d clusters; target <= %d MiB: %s\n' \
    "$(awk -v k="${hwm[atrium-proxy]}" 'BEGIN {print k / 1024}')" "${hwm[atrium-proxy]}" "$atrium_clusters" \
    $((target_rss_kb / 1024)) "$(verdict "$((hwm[atrium-proxy] <= target_rss_kb))")"
elif [ "$atrium_hwm_idle" -gt 0 ]; then
  printf '  peak RSS: atrium-proxy %.1f MiB (VmHWM %d kB) with %d clusters, before any load (not measured under load); target <= %d MiB: %s\n' \
    "$(awk -v k="$atrium_hwm_idle" 'BEGIN {print k / 1024}')" "$atrium_hwm_idle" "$atrium_clusters" \
    $((target_rss_kb / 1024)) "$(verdict "$((atrium_hwm_idle <= target_rss_kb))")"
else
  echo "  atrium-proxy peak RSS <= $((target_rss_kb / 1024)) MiB with $services services: not measured"
fi
[ -z "$atrium_note" ] || echo "atrium-proxy: $atrium_note"
[ "$status" -eq 0 ] || echo "bench/proxy: some measurements failed (see above); exit $status" >&2
exit "$status"
