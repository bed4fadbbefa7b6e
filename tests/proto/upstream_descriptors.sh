#!/usr/bin/env bash
# Compiles the UPSTREAM xDS .proto files (shipped by the npm package
# @grpc/grpc-js-xds, installed by scripts/setup.sh) into one descriptor set,
# which the golden tests hand to `protoc --encode/--decode`.
#   upstream_descriptors.sh OUT.desc
#
# The package's copy of protoc-gen-validate's validate.proto is older than its
# envoy files (StringRules and friends lack `ignore_empty`), which protoc
# rejects. Those are validation annotations, not wire fields, so we compile
# against a copy that declares the missing option fields.
set -euo pipefail
out=${1:?usage: upstream_descriptors.sh OUT.desc}
here=$(cd "$(dirname "$0")" && pwd)
deps="$here/../interop/node_modules/@grpc/grpc-js-xds/deps"
if [ ! -d "$deps/envoy-api" ]; then
  echo "upstream_descriptors: $deps is missing; run scripts/setup.sh (npm ci in tests/interop)" >&2
  exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/validate"
validate="$deps/protoc-gen-validate/validate/validate.proto"
if grep -q ignore_empty "$validate"; then
  cp "$validate" "$work/validate/validate.proto"
else
  awk '
    { print }
    /^message (Float|Double|Int32|Int64|UInt32|UInt64|SInt32|SInt64|Fixed32|Fixed64|SFixed32|SFixed64)Rules \{/ { print "    optional bool ignore_empty = 8;" }
    /^message StringRules \{/   { print "    optional bool ignore_empty = 26;" }
    /^message BytesRules \{/    { print "    optional bool ignore_empty = 14;" }
    /^message RepeatedRules \{/ { print "    optional bool ignore_empty = 5;" }
    /^message MapRules \{/      { print "    optional bool ignore_empty = 6;" }
  ' "$validate" >"$work/validate/validate.proto"
fi
protoc --descriptor_set_out="$out" --include_imports \
  -I "$work" -I "$deps/envoy-api" -I "$deps/xds" -I "$deps/googleapis" \
  -I "$deps/protoc-gen-validate" -I /usr/include \
  envoy/service/discovery/v3/ads.proto \
  envoy/config/listener/v3/listener.proto \
  envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto \
  envoy/extensions/filters/http/router/v3/router.proto \
  envoy/config/route/v3/route.proto \
  envoy/config/cluster/v3/cluster.proto \
  envoy/config/endpoint/v3/endpoint.proto \
  envoy/extensions/transport_sockets/tls/v3/tls.proto \
  envoy/extensions/transport_sockets/tls/v3/secret.proto \
  envoy/extensions/filters/http/rbac/v3/rbac.proto \
  google/rpc/status.proto
