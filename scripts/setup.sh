#!/usr/bin/env bash
# Installs every Debian package Atrium needs to build, run and test.
# Idempotent: it asks dpkg what is missing and runs `apt-get update` and
# `apt-get install` only when something is.
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
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [ "$status" = "installed" ] || missing+=("$package")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
