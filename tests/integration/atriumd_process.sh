#!/usr/bin/env bash
# atriumd as a user runs it: starts on a fresh data directory, logs its
# listener, answers /healthz, refuses a second instance on the same data
# directory, reads a config file, rejects bad flags, and stops cleanly (exit 0,
# database closed) on SIGTERM and SIGINT. Every server it starts is stopped on
# exit, even when a check fails.
set -euo pipefail

atriumd=${1:?usage: atriumd_process.sh path/to/atriumd}
work=$(mktemp -d /tmp/atrium-process-XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

passes=0
failures=0
check() { # check NAME COMMAND...
  local name=$1; shift
  if "$@"; then echo "ok   $name"; passes=$((passes + 1)); else echo "FAIL $name"; failures=$((failures + 1)); fi
}

# start_atriumd LOG ARGS... : starts atriumd in the background, waits for
# "ready", sets $pid and $port (the REST port it logged).
start_atriumd() {
  local log=$1; shift
  "$atriumd" "$@" 2>"$log" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 100); do
    grep -q ' ready ' "$log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$log"; return 1; }
    sleep 0.05
  done
  port=$(sed -n 's/.*admin REST API listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log")
  [ -n "$port" ]
}

# stop_atriumd SIGNAL : signals $pid and waits; sets $status.
stop_atriumd() {
  kill "-$1" "$pid"
  set +e; wait "$pid"; status=$?; set -e
}

# 1. First start on a fresh directory, /healthz, one line per listener.
start_atriumd "$work/first.log" --data-dir "$work/data" --rest-addr 127.0.0.1:0 --xds-addr 127.0.0.1:0 --tls-addr 127.0.0.1:0
check "data directory created with mode 0700" \
  test "$(stat -c %a "$work/data")" = 700
check "database created" test -f "$work/data/atrium.db"
check "one log line per listener (REST, xDS, TLS)" \
  bash -c "test \$(grep -c 'admin REST API listening on' '$work/first.log') -eq 1 && \
           test \$(grep -c 'xDS (ADS.* listening on' '$work/first.log') -eq 1 && \
           test \$(grep -c 'CA (CreateCertificate.* listening on' '$work/first.log') -eq 1"
check "/healthz answers ok" \
  bash -c "curl -sf http://127.0.0.1:$port/healthz | grep -q '\"status\":\"ok\"'"
check "admin token file created with mode 0600" \
  test "$(stat -c %a "$work/data/admin.token")" = 600
check "the log says where the token is, never the token" \
  bash -c "grep -q 'admin token created in $work/data/admin.token' '$work/first.log' && \
           ! grep -qF \"\$(cat '$work/data/admin.token')\" '$work/first.log'"
check "without the token: 401" \
  bash -c "test \"\$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$port/v1/services)\" = 401"
check "with the token, an unknown path is a JSON 404" \
  bash -c "curl -s -H \"Authorization: Bearer \$(cat '$work/data/admin.token')\" \
           http://127.0.0.1:$port/nope | grep -q '\"code\":\"not_found\"'"

# 2. A second atriumd on the same data directory refuses to start.
set +e
"$atriumd" --data-dir "$work/data" --rest-addr 127.0.0.1:0 --xds-addr 127.0.0.1:0 --tls-addr 127.0.0.1:0 2>"$work/second.log"
second_status=$?
set -e
check "second instance exits non-zero" test "$second_status" -ne 0
check "second instance says the directory is in use, and by whom" \
  grep -q "in use by another atriumd (pid $pid)" "$work/second.log"
check "first instance still serves" curl -sf "http://127.0.0.1:$port/healthz" -o /dev/null

# 3. SIGTERM stops it cleanly.
stop_atriumd TERM
check "SIGTERM: exit status 0" test "$status" -eq 0
check "SIGTERM: logs shutdown and database closed" grep -q 'database closed' "$work/first.log"
check "database intact after stop" \
  bash -c "sqlite3 '$work/data/atrium.db' 'PRAGMA integrity_check' | grep -qx ok"

# 4. Config file; restart on the same directory (the lock was released); SIGINT.
cat >"$work/atriumd.json" <<JSON
{"data_dir": "$work/data", "rest_addr": "127.0.0.1:0", "xds_addr": "127.0.0.1:0", "tls_addr": "127.0.0.1:0", "synchronous": "full"}
JSON
start_atriumd "$work/config.log" --config "$work/atriumd.json"
check "restart reads the same admin token" \
  grep -q "admin token read from $work/data/admin.token" "$work/config.log"
check "config file: data dir reused, synchronous=full" \
  grep -q "store $work/data/atrium.db open (schema [0-9]*, revision [0-9]*, synchronous=full)" \
  "$work/config.log"
stop_atriumd INT
check "SIGINT: exit status 0" test "$status" -eq 0

# 5. Bad input: a clear message and exit status 2, nothing started.
set +e
"$atriumd" --rest-addr nowhere 2>"$work/bad.log"; bad_status=$?
"$atriumd" --help >"$work/help.txt"; help_status=$?
set -e
check "bad address: exit 2" test "$bad_status" -eq 2
check "bad address: message names the option" grep -q "rest-addr: 'nowhere'" "$work/bad.log"
check "--help: exit 0 and lists the options" \
  bash -c "test $help_status -eq 0 && grep -q -- --data-dir '$work/help.txt'"

# 6. A port already taken: a clear error, exit non-zero, lock released.
start_atriumd "$work/holder.log" --data-dir "$work/holder" --rest-addr 127.0.0.1:0 --xds-addr 127.0.0.1:0 --tls-addr 127.0.0.1:0
set +e
"$atriumd" --data-dir "$work/other" --rest-addr "127.0.0.1:$port" 2>"$work/taken.log"
taken_status=$?
set -e
check "port in use: exit non-zero with the address" \
  bash -c "test $taken_status -ne 0 && grep -q 'cannot listen on 127.0.0.1:$port' '$work/taken.log'"
stop_atriumd TERM

# 7. An operator's CA (plug-in): its root is the trust anchor; keys 0600 are
#    required, and atriumd refuses to start when a CA key is readable by others.
pki=$work/pki
mkdir -p "$pki"
(
  cd "$pki"
  openssl ecparam -name prime256v1 -genkey -noout -out root.key
  openssl req -x509 -new -key root.key -subj "/CN=Operator Root" -days 3650 -out root.pem \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  openssl ecparam -name prime256v1 -genkey -noout -out issuer.key
  openssl req -new -key issuer.key -subj "/CN=Operator Issuer" -out issuer.csr
  printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' >issuer.ext
  openssl x509 -req -in issuer.csr -CA root.pem -CAkey root.key -CAcreateserial -days 365 \
    -out issuer.pem -extfile issuer.ext
  chmod 600 root.key issuer.key
) >/dev/null 2>&1
start_atriumd "$work/plugin.log" --data-dir "$work/plugin" --rest-addr 127.0.0.1:0 --xds-addr 127.0.0.1:0 \
  --tls-addr 127.0.0.1:0 --ca-root-cert "$pki/root.pem" --ca-root-key "$pki/root.key" \
  --ca-issuer-cert "$pki/issuer.pem" --ca-issuer-key "$pki/issuer.key"
check "plug-in CA: the bundle's root is the operator's" bash -c "\
  curl -s -H \"Authorization: Bearer \$(cat '$work/plugin/admin.token')\" http://127.0.0.1:$port/v1/ca/bundle | \
  openssl x509 -noout -fingerprint -sha256 | cmp -s - <(openssl x509 -in '$pki/root.pem' -noout -fingerprint -sha256)"
check "CA key files are 0600" bash -c "test \$(stat -c %a '$work/plugin/ca/root.key') = 600 && \
  test \$(stat -c %a '$work/plugin/ca/issuer.key') = 600"
stop_atriumd TERM
chmod 644 "$work/plugin/ca/issuer.key"
set +e
"$atriumd" --data-dir "$work/plugin" --rest-addr 127.0.0.1:0 --xds-addr 127.0.0.1:0 --tls-addr 127.0.0.1:0 \
  2>"$work/readable.log"
readable_status=$?
set -e
check "a CA key readable by others: atriumd refuses to start, naming the file" \
  bash -c "test $readable_status -ne 0 && grep -q 'issuer.key' '$work/readable.log'"

echo "$passes passed, $failures failed"
[ "$failures" -eq 0 ]
