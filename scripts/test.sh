#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what it needs,
# builds everything outside the network namespace (nothing inside reaches a
# registry), then runs every test inside ../shared/tools/nsrun, where the only
# interface is loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

NSRUN="${NSRUN:-../shared/tools/nsrun}"
if [ ! -x "$NSRUN" ]; then
  echo "error: $NSRUN not found; run from a checkout with ../shared beside it (or set NSRUN)" >&2
  exit 2
fi

need_apt=()
command -v ip >/dev/null || need_apt+=(iproute2)
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v cmake >/dev/null || need_apt+=(cmake)
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "== installing ${need_apt[*]}"
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi

echo "== format and lints"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings

echo "== build"
cargo test --locked --no-run

echo "== tests (inside a loopback-only network namespace)"
"$NSRUN" cargo test --offline --locked
