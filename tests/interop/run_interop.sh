#!/usr/bin/env bash
# xDS interop with proxyless gRPC clients we did not write.
#
# Usage: run_interop.sh python|node ATRIUMD ATRIUMCTL
#
# Starts atriumd (free ports), three greeter backends on free ports ("v1",
# "v2", "v2b"), applies a mesh where service greeter splits 80/20 between the
# v1 subset (endpoint g1 -> backend v1) and the v2 subset (g2 -> backend v2),
# then runs the client for the language with GRPC_XDS_BOOTSTRAP pointing at
# atriumd. Between its two phases the client runs reconfigure.sh, which
# registers g3 (version v2, backend v2b) and deletes g2; see python_client.py
# for the checks. Python is Debian's /usr/bin/python3 with python3-grpcio (the
# backends use it for both languages); Node uses @grpc/grpc-js-xds from
# tests/interop/node_modules.
#
# Everything this script starts is stopped on exit (by PID); on failure it
# prints atriumctl proxy-status and the logs of atriumd and the backends.
set -uo pipefail
exec 2>&1  # one stream, so messages and the logs dumped on failure stay in order

usage() { echo "usage: run_interop.sh python|node ATRIUMD ATRIUMCTL" >&2; exit 2; }
lang=${1:-}; atriumd=${2:-}; atriumctl=${3:-}
case "$lang" in python|node) ;; *) usage ;; esac
if [ -z "$atriumd" ] || [ -z "$atriumctl" ]; then usage; fi

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3   # Debian's, with python3-grpcio; not the python3 first on PATH
STARTUP_TIMEOUT_S=10
CLIENT_TIMEOUT_S=60

die() { echo "FAIL [$lang] $*"; exit 1; }

# ---- prerequisites ----
[ -x "$atriumd" ] || die "atriumd not found or not executable: $atriumd"
[ -x "$atriumctl" ] || die "atriumctl not found or not executable: $atriumctl"
[ -x "$PY" ] || die "$PY is missing; run scripts/setup.sh"
"$PY" -c 'import grpc' 2>/dev/null || die "$PY cannot import grpc (Debian package python3-grpcio); run scripts/setup.sh"
if [ "$lang" = node ]; then
  command -v node >/dev/null || die "node is not on PATH; run scripts/setup.sh"
  for pkg in @grpc/grpc-js @grpc/grpc-js-xds; do
    [ -f "$here/node_modules/$pkg/package.json" ] \
      || die "$here/node_modules lacks $pkg; run scripts/setup.sh (it runs npm ci in tests/interop)"
  done
fi

work=$(mktemp -d "/tmp/atrium-interop-$lang-XXXXXX") || die "mktemp failed"
pids=()          # every process this script started, and only those
atriumd_pid=
rest_port=
status=1         # set to 0 only when the client passed

ctl() { timeout 10 "$atriumctl" --addr "127.0.0.1:$rest_port" --data-dir "$work/data" "$@"; }

cleanup() {
  local rc=$? pid
  if [ "$status" -ne 0 ] && [ "$rc" -eq 0 ]; then rc=1; fi
  if [ "$rc" -ne 0 ]; then
    if [ -n "$rest_port" ] && [ -n "$atriumd_pid" ] && kill -0 "$atriumd_pid" 2>/dev/null; then
      echo "---- atriumctl proxy-status ----"
      ctl proxy-status 2>&1
    fi
  fi
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  if [ "$rc" -ne 0 ]; then
    echo "---- atriumd log ----"
    cat "$work/atriumd.log" 2>/dev/null
    for b in v1 v2 v2b; do
      [ -s "$work/$b.log" ] && { echo "---- backend $b log ----"; cat "$work/$b.log"; }
    done
    echo "FAIL [$lang] xDS interop"
  fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- atriumd ----
"$atriumd" --data-dir "$work/data" --rest-addr 127.0.0.1:0 --xds-addr 127.0.0.1:0 --tls-addr 127.0.0.1:0 2>"$work/atriumd.log" &
atriumd_pid=$!
pids+=("$atriumd_pid")
deadline=$((SECONDS + STARTUP_TIMEOUT_S))
until grep -q ' ready ' "$work/atriumd.log" 2>/dev/null; do
  kill -0 "$atriumd_pid" 2>/dev/null || die "atriumd exited during startup"
  [ "$SECONDS" -lt "$deadline" ] || die "atriumd not ready within ${STARTUP_TIMEOUT_S} s"
  sleep 0.05
done
xds_port=$(sed -n 's/.*xDS (ADS.*) listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$work/atriumd.log" | head -1)
rest_port=$(sed -n 's/.*admin REST API listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$work/atriumd.log" | head -1)
[ -n "$xds_port" ] || die "no xDS port in atriumd's log"
[ -n "$rest_port" ] || die "no REST port in atriumd's log"
echo "atriumd pid $atriumd_pid: xDS on 127.0.0.1:$xds_port, REST on 127.0.0.1:$rest_port"

# ---- backends: each binds a free port and prints "PORT <n>" ----
declare -A backend_port backend_pid
for b in v1 v2 v2b; do
  "$PY" "$here/greeter_backend.py" "$b" >"$work/$b.port" 2>"$work/$b.log" &
  backend_pid[$b]=$!
  pids+=("$!")
done
deadline=$((SECONDS + STARTUP_TIMEOUT_S))
for b in v1 v2 v2b; do
  until grep -q '^PORT [0-9]' "$work/$b.port" 2>/dev/null; do
    kill -0 "${backend_pid[$b]}" 2>/dev/null || die "backend $b exited during startup"
    [ "$SECONDS" -lt "$deadline" ] || die "backend $b not serving within ${STARTUP_TIMEOUT_S} s"
    sleep 0.05
  done
  backend_port[$b]=$(sed -n 's/^PORT \([0-9][0-9]*\)$/\1/p' "$work/$b.port" | head -1)
  echo "backend $b on 127.0.0.1:${backend_port[$b]}"
done

# ---- the mesh ----
cat >"$work/mesh.yaml" <<YAML
services:
  - name: greeter
    protocol: grpc
    endpoints:
      - {id: g1, address: 127.0.0.1, port: ${backend_port[v1]}, labels: {version: v1}}
      - {id: g2, address: 127.0.0.1, port: ${backend_port[v2]}, labels: {version: v2}}
    routes:
      rules:
        - split:
            - {subset: {version: v1}, weight: 80}
            - {subset: {version: v2}, weight: 20}
YAML
ctl apply -f "$work/mesh.yaml" || die "atriumctl apply failed"

# Run by the client between its phases: g3 joins the v2 subset, then g2 leaves.
ctl_cmd=$(printf '%q ' timeout 10 "$atriumctl" --addr "127.0.0.1:$rest_port" --data-dir "$work/data")
cat >"$work/reconfigure.sh" <<SH
#!/usr/bin/env bash
set -e
$ctl_cmd put endpoint greeter g3 --address 127.0.0.1 --port ${backend_port[v2b]} --label version=v2
$ctl_cmd delete endpoint greeter g2
SH
chmod +x "$work/reconfigure.sh"

cat >"$work/bootstrap.json" <<JSON
{
  "xds_servers": [
    {"server_uri": "127.0.0.1:$xds_port", "channel_creds": [{"type": "insecure"}],
     "server_features": ["xds_v3"]}
  ],
  "node": {"id": "interop-$lang-$$", "cluster": "interop", "locality": {"zone": "z"}}
}
JSON
export GRPC_XDS_BOOTSTRAP=$work/bootstrap.json

# ---- the client ----
case "$lang" in
  python) client=("$PY" "$here/python_client.py") ;;
  node) client=(node "$here/node_client.js") ;;
esac
timeout -k 5 "$CLIENT_TIMEOUT_S" "${client[@]}" --target xds:///greeter \
  --reconfigure "$work/reconfigure.sh" --settle-seconds 2 &
client_pid=$!
pids+=("$client_pid")
wait "$client_pid"
rc=$?
[ "$rc" -ne 124 ] || die "$lang client did not finish within ${CLIENT_TIMEOUT_S} s"
[ "$rc" -eq 0 ] || die "$lang client failed (exit $rc)"
status=0
echo "PASS [$lang] xDS interop"
