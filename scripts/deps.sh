#!/usr/bin/env bash
# System packages the build needs, installed only when missing (Debian, as root
# or with sudo). Sourced by serve.sh and test.sh.
set -euo pipefail

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "== installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# cmake, a C compiler and pkg-config build the crypto (aws-lc) and codecs.
# libvpx is VP8; nasm assembles OpenH264's fast paths.
apt_install cmake gcc g++ pkg-config libvpx-dev nasm
