#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages bothy needs on its host. Idempotent: when every
# package is already installed it does nothing (no apt-get update, no network).
set -euo pipefail

PACKAGES=(
  crun passt nftables mmdebstrap e2fsprogs fuse3 uidmap iproute2 util-linux procps
  python3 python3-venv curl ca-certificates build-essential pkg-config
)

if [[ $(id -u) -ne 0 ]]; then
  echo "deps.sh: run as root (sudo $0): it installs packages with apt-get" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps.sh: apt-get not found: bothy supports Debian 12 and Ubuntu 22.04+ hosts;" \
    "install the equivalent of: ${PACKAGES[*]}" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
