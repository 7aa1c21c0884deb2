#!/usr/bin/env bash
# Runs the browser interop tests against the server binary. Call it inside the
# loopback-only network namespace, after tests/browser/install.sh:
#
#   ../shared/tools/nsrun tests/browser/run.sh            # from the checkout
#   EXPECT_VIDEO=1 ../shared/tools/nsrun tests/browser/run.sh
#
# Env: SMALLWEBRTC_ARGS (extra `serve` flags, e.g. --video-bwe),
#      SMALLWEBRTC_BIN (default: the newer of target/release/smallwebrtc and target/debug/smallwebrtc),
# EXPECT_VIDEO=1 (check the bot's video), EXPECT_RENEGOTIATE=1 (fail, not skip,
# if the echo bot ignores the renegotiate trigger), ARTIFACTS_DIR (default
# artifacts/), extra arguments go to `node --test` (e.g. a test file).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

# Browsers gather candidates on every interface: refuse to run where there is
# any interface but loopback.
others="$(awk -F: 'NR > 2 { gsub(/ /, "", $1); if ($1 != "lo") print $1 }' /proc/net/dev)"
if [ -n "$others" ]; then
  echo "error: interfaces other than loopback are up ($(echo $others)); run me inside ../shared/tools/nsrun" >&2
  exit 2
fi
if [ ! -d "$here/node_modules" ] || [ ! -f "$here/dist/official-client.js" ]; then
  echo "error: run tests/browser/install.sh first (outside the namespace)" >&2
  exit 2
fi

bin="${SMALLWEBRTC_BIN:-}"
if [ -z "$bin" ]; then
  # The newer of the release and debug builds, so a stale one is never tested.
  for candidate in target/release/smallwebrtc target/debug/smallwebrtc; do
    if [ -x "$candidate" ] && { [ -z "$bin" ] || [ "$candidate" -nt "$bin" ]; }; then bin="$candidate"; fi
  done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "error: no server binary (build it with cargo build --release, or set SMALLWEBRTC_BIN)" >&2
  exit 2
fi

artifacts="${ARTIFACTS_DIR:-$repo/artifacts}"
mkdir -p "$artifacts"
export ARTIFACTS_DIR="$artifacts"
log="$artifacts/server.log"

port="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" "$bin" serve --host 127.0.0.1 --port "$port" ${SMALLWEBRTC_ARGS:-} >"$log" 2>&1 &
server_pid=$!
cleanup() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}
trap cleanup EXIT

export SMALLWEBRTC_URL="http://127.0.0.1:$port"
export SMALLWEBRTC_LOG="$log"
for _ in $(seq 1 100); do
  if node -e 'fetch(process.argv[1]).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))' "$SMALLWEBRTC_URL/status"; then
    break
  fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "error: the server exited; its log ($log):" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "server: $bin on $SMALLWEBRTC_URL (log: $log)"

cd "$here"
started=$(date +%s%3N)
set +e
if [ "$#" -gt 0 ]; then
  node --test --test-concurrency=1 --test-reporter=spec "$@"
else
  node --test --test-concurrency=1 --test-reporter=spec test/
fi
rc=$?
set -e
elapsed=$(( $(date +%s%3N) - started ))
printf 'browser tests: exit %s in %d.%01d s\n' "$rc" $((elapsed / 1000)) $((elapsed % 1000 / 100))
if [ "$rc" -ne 0 ]; then
  echo "--- last lines of the server log ($log):"
  tail -n 40 "$log"
fi
exit "$rc"
