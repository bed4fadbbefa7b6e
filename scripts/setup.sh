#!/usr/bin/env bash
# Installs every Debian package Atrium needs to build, run and test, and the
# npm packages of the interop tests. Idempotent: it asks dpkg what is missing
# and runs `apt-get update` and `apt-get install` only when something is.
set -euo pipefail

packages=(
  build-essential
  cmake
  pkg-config
  libsqlite3-dev
  libcmocka-dev
  libevent-dev
  libjansson-dev
  sqlite3
  curl
  protobuf-c-compiler
  libprotobuf-c-dev
  protobuf-compiler
  libprotobuf-dev
  libssl-dev
  libcurl4-openssl-dev
  libyaml-dev
  clang
  clang-format
  clang-tidy
  libclang-rt-14-dev
  wrk
  libgrpc-dev
  python3-grpcio
  python3-protobuf
  libxxhash-dev
  openssl
  libhttp-parser-dev
  nginx-light
  haproxy
)
# Node.js and npm run the interop tests' real xDS clients and bring the upstream
# .proto files for the golden tests. A machine that already has npm (for
# example from another Node.js distribution) keeps it.
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$package")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} Debian packages present"
else
  sudo_cmd=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo_cmd=(sudo)
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm packages of the interop tests, exactly as locked in package-lock.json.
# `npm ci` runs only when node_modules is missing or older than the lock file.
interop="$(dirname "$0")/../tests/interop"
if [ ! -f "$interop/node_modules/.package-lock.json" ] ||
   [ "$interop/package-lock.json" -nt "$interop/node_modules/.package-lock.json" ]; then
  echo "setup: npm ci in tests/interop"
  (cd "$interop" && npm ci --no-audit --no-fund --loglevel=error)
else
  echo "setup: tests/interop npm packages present"
fi
