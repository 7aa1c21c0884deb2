#!/usr/bin/env bash
# Installs what the browser tests need, OUTSIDE the test network namespace
# (nothing inside it reaches a registry): Debian's chromium and firefox-esr,
# Node.js >= 20, the pinned npm packages (npm ci), and the esbuild bundles of
# the test pages. Then run the tests inside the namespace:
#
#   tests/browser/install.sh && ../shared/tools/nsrun tests/browser/run.sh
set -euo pipefail
cd "$(dirname "$0")"

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

# The browsers (the drivers never download one of their own).
apt_install chromium firefox-esr

node_major() { node -e 'console.log(process.versions.node.split(".")[0])' 2>/dev/null || echo 0; }
if ! command -v npm >/dev/null || [ "$(node_major)" -lt 20 ]; then
  apt_install nodejs npm
fi
if [ "$(node_major)" -lt 20 ]; then
  echo "error: the browser tests need Node.js >= 20 (playwright-core, node --test); found $(node --version 2>/dev/null || echo none)" >&2
  exit 1
fi

echo "== npm ci (tests/browser)"
PUPPETEER_SKIP_DOWNLOAD=1 PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
  npm ci --no-audit --no-fund --loglevel=error
echo "== bundling the test pages"
node build.mjs
