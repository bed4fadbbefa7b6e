#!/usr/bin/env bash
# bench/ca.sh — the certificate authority's issuance rate against its limit:
#   1. `openssl speed -seconds 3 ecdsap256` (one core): sign/s and verify/s,
#      and the limit 1/(1/sign + 1/verify) — one issuance verifies the CSR
#      and signs the certificate;
#   2. bench_ca in-process: ca_sign_csr in a loop on one thread;
#   3. bench_ca through gRPC: CreateCertificate with a join token from
#      concurrent clients (each of the counts in CLIENTS in turn, default
#      "4 8 16": a few workloads starting, then a rollout), against a real
#      atriumd that this script starts on 127.0.0.1 with a fresh data
#      directory (and stops: only that pid, on exit). ATRIUMD_EXTRA_ARGS are
#      passed to it (e.g. "--synchronous full").
# Prints the three figures with their share of the limit and whether the
# target (>= 40 % of the limit) is met; asserts nothing. Bounded: fixed
# durations, call counts and waits.
# On a shared machine the wall-clock rates drop whenever other work takes the
# cores, while `openssl speed` divides by its CPU (user) time. So two more
# lines, for information (the verdicts stay on the wall-clock rates): the
# in-process rate per CPU-second of the signing thread, and the rate the
# cores could sustain at the CPU atriumd and the load generator spent per
# certificate (cores x 1 s / their CPU per certificate).
#   bench/ca.sh [BUILD_DIR] [SECONDS] ["CLIENTS ..."]
set -euo pipefail
build=${1:-build}
seconds=${2:-5}
clients_list=${3:-4 8 16}
target_pct=40
work=$(mktemp -d /tmp/atrium-bench-ca-XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

for tool in "$build/bench_ca" "$build/atriumd"; do
  [ -x "$tool" ] || { echo "bench/ca: $tool not built (cmake --build $build)" >&2; exit 2; }
done

# 1. openssl speed, one core (no -multi).
taskset_cmd=()
if command -v taskset >/dev/null; then taskset_cmd=(taskset -c 0); fi
${taskset_cmd[@]+"${taskset_cmd[@]}"} openssl speed -seconds 3 ecdsap256 >"$work/speed.txt" 2>/dev/null
# The summary line: "256 bits ecdsa (nistp256)   0.0001s   0.0002s   12345.6   4567.8"
sign='' verify=''
read -r sign verify < <(awk '/bits ecdsa \(nistp256\)/ && NF >= 4 {print $(NF-1), $NF}' "$work/speed.txt" | tail -1) || true
if [ -z "$sign" ] || [ -z "$verify" ]; then
  cat "$work/speed.txt" >&2; echo "bench/ca: cannot parse openssl speed" >&2; exit 2
fi
limit=$(awk -v s="$sign" -v v="$verify" 'BEGIN {printf "%.1f", 1 / (1 / s + 1 / v)}')

# 2. in-process (no atriumd running yet, so it has the machine to itself).
"$build/bench_ca" --inproc-seconds "$seconds" >"$work/inproc.txt" \
  || { cat "$work/inproc.txt"; echo "bench/ca: the in-process part failed" >&2; exit 2; }
inproc=$(sed -n 's/^RESULT inproc signs_per_s=\([0-9.]*\).*/\1/p' "$work/inproc.txt")
inproc_cpu_us=$(sed -n 's/^RESULT inproc .*cpu_us=\([0-9.]*\).*/\1/p' "$work/inproc.txt")

# 3. through gRPC.
"$build/atriumd" --data-dir "$work/data" --rest-addr 127.0.0.1:0 --xds-addr 127.0.0.1:0 \
  --tls-addr 127.0.0.1:0 ${ATRIUMD_EXTRA_ARGS:-} 2>"$work/atriumd.log" &
pid=$!
rest_port='' tls_port=''
for _ in $(seq 1 200); do
  rest_port=$(sed -n 's/.*admin REST API listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/atriumd.log")
  # "CA (CreateCertificate, TLS, trust domain atrium.local)[ and ...] listening on 127.0.0.1:<port>"
  tls_port=$(sed -n 's/.*CA (CreateCertificate, TLS, trust domain atrium\.local).* listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/atriumd.log")
  [ -n "$rest_port" ] && [ -n "$tls_port" ] && [ -s "$work/data/admin.token" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
if [ -z "$rest_port" ] || [ -z "$tls_port" ] || [ ! -s "$work/data/admin.token" ]; then
  cat "$work/atriumd.log" >&2; echo "bench/ca: atriumd did not get ready" >&2; exit 2
fi
token=$(cat "$work/data/admin.token")
curl -sf --max-time 5 -H "Authorization: Bearer $token" "http://127.0.0.1:$rest_port/v1/ca/bundle" \
  | sed '/-----BEGIN X509 CRL-----/,$d' >"$work/roots.pem"
grep -q 'BEGIN CERTIFICATE' "$work/roots.pem" || { echo "bench/ca: no roots in GET /v1/ca/bundle" >&2; exit 2; }

grpc_status=0
results=() # "clients rate server_us client_us"
for clients in $clients_list; do
  status=0
  "$build/bench_ca" --inproc-seconds 0 --tls "127.0.0.1:$tls_port" --rest "127.0.0.1:$rest_port" \
    --admin-token-file "$work/data/admin.token" --bundle-file "$work/roots.pem" \
    --clients "$clients" --seconds "$seconds" --max-calls 200000 --pid "$pid" >"$work/grpc-$clients.txt" \
    || status=$?
  [ "$status" -eq 0 ] || grpc_status=$status
  results+=("$clients $(sed -n 's/^RESULT grpc issued_per_s=\([0-9.]*\).*server_us_per_cert=\([0-9.-]*\).*client_us_per_cert=\([0-9.-]*\).*/\1 \2 \3/p' "$work/grpc-$clients.txt")")
done

pct() { awk -v r="${1:-0}" -v l="$limit" 'BEGIN {printf "%5.1f %%", 100 * r / l}'; }
verdict() { awk -v r="${1:-0}" -v l="$limit" -v t="$target_pct" 'BEGIN {print (100 * r / l >= t ? "met" : "NOT met")}'; }

echo "CA benchmark: $(nproc) cores, $(openssl version | cut -d' ' -f1-2), ${seconds}s per part"
printf 'openssl speed ecdsap256 (1 core):        sign %9.1f/s   verify %9.1f/s\n' "$sign" "$verify"
printf 'limit 1/(1/sign + 1/verify):             %9.1f/s   target >= %d %% = %.0f/s\n' \
  "$limit" "$target_pct" "$(awk -v l="$limit" -v t="$target_pct" 'BEGIN {print l * t / 100}')"
grep -v '^RESULT' "$work/inproc.txt" | sed 's/^/  /'
for clients in $clients_list; do
  grep -v '^RESULT' "$work/grpc-$clients.txt" | sed 's/^/  /'
done
printf 'in-process ca_sign_csr (1 thread):       %9.1f/s   %s of the limit   target %s\n' \
  "${inproc:-0}" "$(pct "$inproc")" "$(verdict "$inproc")"
if [ -n "$inproc_cpu_us" ]; then
  per_cpu=$(awk -v u="$inproc_cpu_us" 'BEGIN {printf "%.1f", (u > 0 ? 1e6 / u : 0)}')
  printf '  (info) in-process per CPU-second:       %9.1f/s   %s of the limit\n' "$per_cpu" "$(pct "$per_cpu")"
fi
for result in "${results[@]}"; do
  read -r clients grpc server_us client_us <<<"$result"
  printf 'gRPC CreateCertificate (%2d clients):     %9.1f/s   %s of the limit   target %s\n' \
    "$clients" "${grpc:-0}" "$(pct "$grpc")" "$(verdict "$grpc")"
  if [ -n "$server_us" ] && [ -n "$client_us" ] && awk -v s="$server_us" -v c="$client_us" 'BEGIN {exit !(s > 0 && c > 0)}'; then
    capacity=$(awk -v s="$server_us" -v c="$client_us" -v n="$(nproc)" 'BEGIN {printf "%.1f", n * 1e6 / (s + c)}')
    printf '  (info) all %d cores busy:                %9.1f/s   %s of the limit (atriumd %s us + load generator %s us CPU per certificate)\n' \
      "$(nproc)" "$capacity" "$(pct "$capacity")" "$server_us" "$client_us"
  fi
done
if [ "$grpc_status" -ne 0 ]; then
  echo "bench/ca: the gRPC part did not complete cleanly (exit $grpc_status); atriumd log tail:" >&2
  tail -n 20 "$work/atriumd.log" >&2
  exit 2
fi
