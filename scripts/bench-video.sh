#!/usr/bin/env bash
# Video echo benchmark: N concurrent camera-echo sessions over real WebRTC on loopback, each
# sending 640×480 at 30 fps VP8 to the server's `echo` bot, which sends the camera back.
#
#   scripts/bench-video.sh                               # full run: 30 s per step
#   DURATION=10 SESSIONS=1,2 scripts/bench-video.sh      # quick check
#
# Settings (environment):
#   SESSIONS=1,2,4,8           steps (N concurrent sessions each)
#   DURATION=30                measurement window of each step, seconds
#   RAMP=10/s                  session start rate
#   VIDEO_MEASURE=2            sessions per step that decode the echo and time the video round
#                              trip (a decode costs the load generator ~2% of a core each)
#   MEASURE=1                  sessions per step that time the audio round trip
#   SIZE=640x480 FPS=30 BITRATE=1000   the camera: size, frame rate, VP8 kbit/s of the loop
#   NOISE=3                    sensor noise in the camera loop (± luma; 0: a clean picture)
#   AUDIO=1                    0: send no audio (the audio m-line is still offered)
#   PRIORITY=nice              nice | rt | none, as in scripts/bench-audio.sh
#   BUILD=1                    0: use the release binaries already built
#   OUT=target/bench-video     where results and the server log go
#   SERVER_BIN=target/release/smallwebrtc   the server binary (to compare two builds, A/B)
#
# Builds happen here, outside the network namespace; every socket is opened inside
# ../shared/tools/nsrun (loopback only). Results: $OUT/results.md (also printed), $OUT/rust.json
# (the load generator's full figures) and the server log.
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS="${SESSIONS:-1,2,4,8}"
DURATION="${DURATION:-30}"
RAMP="${RAMP:-10/s}"
VIDEO_MEASURE="${VIDEO_MEASURE:-2}"
MEASURE="${MEASURE:-1}"
SIZE="${SIZE:-640x480}"
FPS="${FPS:-30}"
BITRATE="${BITRATE:-1000}"
NOISE="${NOISE:-3}"
AUDIO="${AUDIO:-1}"
PRIORITY="${PRIORITY:-nice}"
BUILD="${BUILD:-1}"
OUT="${OUT:-target/bench-video}"
SERVER_BIN="${SERVER_BIN:-target/release/smallwebrtc}"
PORT=7862

# Runs a command at the scheduling priority of a role (server or loadgen).
with_priority() {
  local role=$1
  shift
  case "$PRIORITY:$role" in
    rt:server) exec chrt -f 10 "$@" ;;
    rt:loadgen) exec chrt -f 20 "$@" ;;
    nice:server) exec nice -n -5 "$@" ;;
    nice:loadgen) exec nice -n -10 "$@" ;;
    *) exec "$@" ;;
  esac
}

# Waits until something listens on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 1 300); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "error: nothing listening on port $1 after 30 s" >&2
  return 1
}

if [ "${1:-}" = "--inside" ]; then
  # Inside the namespace: loopback only.
  ip addr show lo | grep -q 127.0.0.1 || { echo "error: no loopback" >&2; exit 1; }
  audio_flag=()
  [ "$AUDIO" = 1 ] || audio_flag=(--no-audio)
  echo "== our server: sessions $SESSIONS"
  (with_priority server "$SERVER_BIN" serve --host 127.0.0.1 --port "$PORT") \
    >"$OUT/rust-server.log" 2>&1 &
  pid=$!
  if ! wait_port "$PORT"; then
    kill "$pid" 2>/dev/null || true
    tail -20 "$OUT/rust-server.log" >&2
    exit 1
  fi
  sleep 1 # let it settle before the idle RSS is read
  rc=0
  (with_priority loadgen target/release/loadgen \
    --server "http://127.0.0.1:$PORT" --server-pid "$pid" --label "rust" \
    --sessions "$SESSIONS" --duration "$DURATION" --ramp "$RAMP" --measure "$MEASURE" \
    --video --video-size "$SIZE" --video-fps "$FPS" --video-bitrate "$BITRATE" --video-noise "$NOISE" \
    --video-measure "$VIDEO_MEASURE" "${audio_flag[@]}" \
    --json "$OUT/rust.json" --verbose) || rc=$?
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  exit "$rc"
fi

NSRUN="${NSRUN:-../shared/tools/nsrun}"
if [ ! -x "$NSRUN" ]; then
  echo "error: $NSRUN not found; run from a checkout with ../shared beside it (or set NSRUN)" >&2
  exit 2
fi
source scripts/deps.sh
# ip and unshare make the namespace; chrt and nice set priorities.
apt_install iproute2 util-linux

mkdir -p "$OUT"
rm -f "$OUT/rust.json"

if [ "$BUILD" = 1 ]; then
  echo "== build (release)"
  cargo build --release --locked --bin smallwebrtc --bin loadgen
fi

echo "== benchmark (inside $NSRUN; PRIORITY=$PRIORITY, DURATION=$DURATION s per step)"
echo "   machine before the run: $(uptime)"
export SESSIONS DURATION RAMP VIDEO_MEASURE MEASURE SIZE FPS BITRATE NOISE AUDIO PRIORITY OUT
status=0
"$NSRUN" bash "$0" --inside || status=$?

if [ ! -f "$OUT/rust.json" ]; then
  echo "error: no results" >&2
  exit 1
fi
echo
echo "== results ($OUT/results.md)"
target/release/loadgen --compare "$OUT/rust.json" --markdown "$OUT/results.md"
exit "$status"
