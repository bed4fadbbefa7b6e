#!/usr/bin/env bash
# bench/rest.sh — the admin REST API's throughput, against a real atriumd that
# it starts on 127.0.0.1 with a fresh data directory (and stops):
#   1. sequential endpoint upserts on one keep-alive connection (wrk, -c1),
#      requests per second with p50/p99 latency;
#   2. bulk replacement of 10,000 endpoints in one call (curl), endpoints/s.
# Prints figures; asserts nothing. Bounded: a fixed duration and round count.
#   bench/rest.sh [BUILD_DIR] [SECONDS]
set -euo pipefail
build=${1:-build}
seconds=${2:-5}
rounds=5
work=$(mktemp -d /tmp/atrium-bench-rest-XXXXXX)
pid=
cleanup() { [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$build/atriumd" --data-dir "$work/data" --rest-addr 127.0.0.1:0 --xds-addr 127.0.0.1:0 --tls-addr 127.0.0.1:0 2>"$work/atriumd.log" &
pid=$!
for _ in $(seq 1 100); do grep -q ' ready ' "$work/atriumd.log" && break; sleep 0.05; done
port=$(sed -n 's/.*admin REST API listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/atriumd.log")
token=$(cat "$work/data/admin.token")
url="http://127.0.0.1:$port"
curl -sf -o /dev/null -X PUT -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{}' "$url/v1/services/bench"

cat >"$work/upsert.lua" <<LUA
-- One PUT per request, cycling over 10,000 endpoint ids (inserts, then replacements).
local counter = 0
request = function()
  counter = counter + 1
  local id = counter % 10000
  local body = string.format('{"address":"10.0.%d.%d","port":%d,"labels":{"version":"v1"}}',
                             math.floor(id / 250) % 250, id % 250, 1024 + id)
  return wrk.format("PUT", "/v1/services/bench/endpoints/e" .. id,
                    {["Authorization"] = "Bearer $token", ["Content-Type"] = "application/json"}, body)
end
LUA
wrk -t1 -c1 -d"${seconds}s" --latency -s "$work/upsert.lua" "$url" >"$work/wrk.txt"
if grep -q 'Non-2xx' "$work/wrk.txt"; then cat "$work/wrk.txt"; echo "bench/rest: some upserts failed" >&2; exit 1; fi
rate=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.txt")
p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")

awk 'BEGIN { printf "{\"endpoints\":["; for (i = 0; i < 10000; i++)
  printf "%s{\"id\":\"b%d\",\"address\":\"10.%d.%d.%d\",\"port\":8080}", (i ? "," : ""), i,
         int(i / 65536), int(i / 256) % 256, i % 256; printf "]}" }' >"$work/bulk.json"
total=0
best=
for round in $(seq 1 "$rounds"); do
  took=$(curl -sf -o /dev/null -w '%{time_total}' -X PUT -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' --data-binary "@$work/bulk.json" "$url/v1/services/bench/endpoints")
  total=$(awk -v a="$total" -v b="$took" 'BEGIN {print a + b}')
  best=$(awk -v a="${best:-$took}" -v b="$took" 'BEGIN {print (b < a ? b : a)}')
done
mean=$(awk -v t="$total" -v r="$rounds" 'BEGIN {print t / r}')

echo "admin REST benchmark: atriumd on 127.0.0.1:$port, synchronous=normal, $(nproc) cores"
printf 'sequential endpoint upserts, 1 connection (wrk -c1, %ss): %8.0f req/s   p50 %s   p99 %s\n' \
  "$seconds" "$rate" "$p50" "$p99"
printf 'bulk replace of 10000 endpoints (%s KiB), %d rounds: mean %.1f ms, best %.1f ms = %.0f endpoints/s\n' \
  "$(($(stat -c %s "$work/bulk.json") / 1024))" "$rounds" "$(awk -v m="$mean" 'BEGIN {print m * 1000}')" \
  "$(awk -v b="$best" 'BEGIN {print b * 1000}')" "$(awk -v m="$mean" 'BEGIN {print 10000 / m}')"
echo "targets: >= 5000 req/s sequential: $(awk -v r="$rate" 'BEGIN {print (r >= 5000 ? "met" : "NOT met")}');" \
  ">= 100000 endpoints/s bulk: $(awk -v m="$mean" 'BEGIN {print (10000 / m >= 100000 ? "met" : "NOT met")}')"
