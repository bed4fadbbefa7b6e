#!/usr/bin/env bash
# atriumctl against a real atriumd: put/get/delete of every resource, apply of
# a mesh file (twice: the second changes nothing; --dry-run writes nothing),
# token and address from flags, environment and the data directory, JSON
# output, and errors that carry the server's message with a non-zero exit.
# The atriumd it starts is stopped on exit, even when a check fails.
set -uo pipefail

atriumd=${1:?usage: atriumctl.sh ATRIUMD ATRIUMCTL}
atriumctl=${2:?usage: atriumctl.sh ATRIUMD ATRIUMCTL}
work=$(mktemp -d /tmp/atrium-ctl-XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

passes=0
failures=0
check() { # check NAME COMMAND...
  local name=$1; shift
  if "$@"; then echo "ok   $name"; passes=$((passes + 1)); else echo "FAIL $name"; failures=$((failures + 1)); fi
}

"$atriumd" --data-dir "$work/data" --rest-addr 127.0.0.1:0 --xds-addr 127.0.0.1:0 --tls-addr 127.0.0.1:0 2>"$work/atriumd.log" &
pid=$!
for _ in $(seq 1 100); do grep -q ' ready ' "$work/atriumd.log" && break; sleep 0.05; done
port=$(sed -n 's/.*admin REST API listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/atriumd.log")
[ -n "$port" ] || { cat "$work/atriumd.log"; exit 1; }
tls_port=$(sed -n 's/.*CA (CreateCertificate.* listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/atriumd.log")
ctl() { "$atriumctl" --addr "127.0.0.1:$port" --data-dir "$work/data" "$@"; }
export atriumctl port work tls_port
export -f ctl  # the checks below run in `bash -c`
revision() { ctl revision | sed -n 's/.*revision \([0-9]*\).*/\1/p'; }

# put / get / delete
check "put service (flags)" bash -c "ctl put service reviews --protocol http --lb-policy ring_hash | grep -q 'service/reviews written'"
check "get services lists it in a table" bash -c "ctl get services | grep -Eq '^reviews +default +http +ring_hash'"
check "put endpoint with labels" bash -c "ctl put endpoint reviews r1 --address 127.0.0.1 --port 9081 --label version=v1 --weight 3 >/dev/null"
check "get endpoints shows it" bash -c "ctl get endpoints reviews | grep -Eq '^r1 +127\.0\.0\.1 +9081 +3 +\{\"version\":\"v1\"\}'"
check "-o json prints the server's JSON" bash -c "ctl -o json get endpoint reviews r1 | grep -q '\"weight\": 3'"
cat >"$work/routes.yaml" <<'YAML'
rules:
  - match: {path_prefix: /api, headers: [{name: x-canary, exact: "1"}]}
    split: [{subset: {version: v1}, weight: 100}]
    timeout_ms: 1500
YAML
check "put routes from a YAML file" bash -c "ctl put routes reviews -f $work/routes.yaml | grep -q 'routes/reviews written'"
check "get routes returns them" bash -c "ctl get routes reviews | grep -q '\"timeout_ms\": 1500'"
check "put policy from standard input (JSON)" bash -c "echo '{\"default\": \"deny\", \"allow\": [{\"from\": \"web\", \"methods\": [\"GET\"]}]}' | ctl put policy reviews -f - >/dev/null"
check "health and heartbeat" bash -c "ctl health reviews r1 draining | grep -q 'is draining' && ctl get endpoints reviews | grep -q draining"
check "heartbeat without TTL: the server's 409 message, exit 1" bash -c "out=\$(ctl heartbeat reviews r1 2>&1); test \$? -eq 1 && grep -q 'no TTL' <<<\"\$out\""
check "invalid value: message names the field, exit 1" bash -c "out=\$(ctl put endpoint reviews r2 --address 127.0.0.1 --port 70000 2>&1); test \$? -eq 1 && grep -q 'port' <<<\"\$out\" && grep -q 'HTTP 400' <<<\"\$out\""
check "delete endpoint, then it is gone" bash -c "ctl delete endpoint reviews r1 | grep -q deleted && ! ctl get endpoint reviews r1 2>/dev/null"
check "delete service cascades" bash -c "ctl delete service reviews >/dev/null && ! ctl get routes reviews 2>/dev/null"

# apply
cat >"$work/mesh.yaml" <<'YAML'
services:
  - name: productpage
    dependencies: [reviews]
    endpoints:
      - {id: productpage-1, address: 127.0.0.1, port: 9080}
  - name: reviews
    lb_policy: least_request
    endpoints:
      - {id: reviews-v1, address: 127.0.0.1, port: 9081, labels: {version: v1}}
      - {id: reviews-v2, address: 127.0.0.1, port: 9082, labels: {version: v2}}
    routes:
      rules:
        - split:
            - {subset: {version: v1}, weight: 90}
            - {subset: {version: v2}, weight: 10}
          retries: {attempts: 2, on: [5xx, connect-failure], per_try_timeout_ms: 500}
    policy: {default: allow, deny: [{path_prefix: /admin}]}
YAML
before=$(revision)
check "apply --dry-run reports creations" bash -c "ctl apply -f $work/mesh.yaml --dry-run | grep -q 'service/productpage created (dry run)'"
check "apply --dry-run writes nothing" test "$(revision)" = "$before"
check "apply creates everything" bash -c "out=\$(ctl apply -f $work/mesh.yaml); grep -q 'routes/reviews created' <<<\"\$out\" && grep -q 'endpoints/reviews configured (2)' <<<\"\$out\""
after=$(revision)
check "apply again: everything unchanged" bash -c "! ctl apply -f $work/mesh.yaml | grep -v unchanged"
check "apply again: revision unchanged" test "$(revision)" = "$after"
sed -i 's/weight: 90/weight: 80/; s/weight: 10}/weight: 20}/' "$work/mesh.yaml"
check "apply after an edit changes only that part" bash -c "out=\$(ctl apply -f $work/mesh.yaml); grep -q 'routes/reviews configured' <<<\"\$out\" && test \$(grep -vc unchanged <<<\"\$out\") -eq 1"
printf 'services:\n  - name: Bad_Name\n' >"$work/bad.yaml"
check "apply of an invalid file: server's message, exit 1" bash -c "out=\$(ctl apply -f $work/bad.yaml 2>&1); test \$? -eq 1 && grep -q 'DNS-1123' <<<\"\$out\""
printf 'services: [\n' >"$work/broken.yaml"
check "apply of malformed YAML names line and column" bash -c "ctl apply -f $work/broken.yaml 2>&1 | grep -q 'line 2, column'"

# join tokens and certificates
check "token create shows the secret once, for the service's identity" bash -c "ctl token create productpage --uses 2 | \
  grep -Eq '^token [0-9a-f]{64} for spiffe://atrium.local/ns/default/sa/productpage'"
check "token list shows it without the secret" bash -c "out=\$(ctl token list); grep -q 'sa/productpage' <<<\"\$out\" && \
  ! grep -Eq '[0-9a-f]{64}' <<<\"\$out\""
check "token revoke" bash -c "id=\$(ctl -o json token list | sed -n 's/.*\"id\": \"\\([0-9a-f]*\\)\".*/\\1/p' | head -1); \
  ctl token revoke \$id | grep -q revoked && ! ctl token revoke \$id 2>/dev/null"
check "cert list (empty) and revoking an unknown serial fails" bash -c "ctl cert list | grep -q '^SERIAL' && \
  ! ctl cert revoke 00ff 2>/dev/null"

check "cert issue: key made here (0600), chain with exactly the SPIFFE ID" bash -c "\
  ctl cert issue --service productpage --ca-addr 127.0.0.1:\$tls_port --out $work/issued >/dev/null && \
  test \$(stat -c %a $work/issued/key.pem) = 600 && \
  openssl x509 -in $work/issued/cert.pem -noout -ext subjectAltName | grep -q 'URI:spiffe://atrium.local/ns/default/sa/productpage$' && \
  openssl verify -CAfile $work/issued/bundle.pem -untrusted $work/issued/cert.pem $work/issued/cert.pem >/dev/null"
check "cert issue with an unknown token: refused with the reason" bash -c "\
  out=\$(ctl cert issue --service productpage --token nope --ca-addr 127.0.0.1:\$tls_port --out $work/refused 2>&1); \
  test \$? -eq 1 && grep -q 'unknown join token' <<<\"\$out\""
check "the issued certificate is listed" bash -c "ctl cert list --identity spiffe://atrium.local/ns/default/sa/productpage | grep -q productpage"
check "ca rotate, then the bundle still verifies the issued certificate" bash -c "\
  ctl ca rotate | grep -q issuer && ctl ca bundle | sed '/BEGIN X509 CRL/,\$d' > $work/roots.pem && \
  openssl verify -CAfile $work/roots.pem -untrusted $work/issued/cert.pem $work/issued/cert.pem >/dev/null"

# credentials and address
check "ATRIUM_ADDR and ATRIUM_TOKEN" bash -c "ATRIUM_ADDR=127.0.0.1:$port ATRIUM_TOKEN=\$(cat $work/data/admin.token) \
  $atriumctl --data-dir /nonexistent get services | grep -q productpage"
check "wrong token: 401 message, exit 1" bash -c "out=\$($atriumctl --addr 127.0.0.1:$port --token nope get services 2>&1); \
  test \$? -eq 1 && grep -q 'HTTP 401' <<<\"\$out\""
check "server down: a clear message" bash -c "$atriumctl --addr 127.0.0.1:1 --token x get services 2>&1 | grep -q 'cannot reach atriumd'"
check "--help on a subcommand" bash -c "$atriumctl apply --help | grep -q 'apply -f FILE'"
check "proxy-status prints the table header" bash -c "ctl proxy-status | grep -q '^NODE'"

kill -TERM "$pid"; wait "$pid"; status=$?; pid=
check "atriumd exits 0" test "$status" -eq 0
echo "$passes passed, $failures failed"
[ "$failures" -eq 0 ]
