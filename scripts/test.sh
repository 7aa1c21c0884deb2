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

# No incremental state: CI builds from a clean clone once, and it would add
# gigabytes to a disk that has already run out once.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

source scripts/deps.sh
# ip and unshare make the test namespace; nginx fronts the two-node test;
# coturn is the TURN server of the relay tests (openssl makes its TLS certificate).
apt_install iproute2 util-linux nginx-light coturn openssl
# Debian starts a system nginx on install; the tests run their own.
if command -v service >/dev/null && service nginx status >/dev/null 2>&1; then
  service nginx stop >/dev/null 2>&1 || true
fi

echo "== format and lints"
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet

echo "== build"
cargo test --locked --no-run

echo "== tests (inside a loopback-only network namespace)"
"$NSRUN" cargo test --offline --locked

echo "== browser tests: official client in Chromium and Firefox, our /client/ page, a raw RTCPeerConnection"
tests/browser/install.sh
SMALLWEBRTC_BIN=target/debug/smallwebrtc "$NSRUN" tests/browser/run.sh

echo "== fuzzing: every target for a short run (seed corpus replayed, then ${FUZZ_SECONDS:-10} s of new inputs)"
# Outside the namespace: cargo-fuzz is installed from crates.io on first use, and no
# fuzz target opens a socket.
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" scripts/fuzz.sh
