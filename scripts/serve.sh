#!/usr/bin/env bash
# Build and run the server with its default bot (echo) on http://localhost:7860.
# Extra arguments go to `smallwebrtc serve` (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
exec cargo run --release --locked -- serve "$@"
