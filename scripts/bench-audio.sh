#!/usr/bin/env bash
# Audio echo benchmark: N concurrent echo sessions over real WebRTC on loopback, against our
# server and against Pipecat's Python original (pipecat-ai from PyPI), side by side.
#
#   scripts/bench-audio.sh                          # full run: 60 s per step
#   DURATION=10 SESSIONS=1,10 PY_SESSIONS=1 scripts/bench-audio.sh   # quick check
#
# Settings (environment):
#   SESSIONS=1,10,50,100,200   steps against our server
#   PY_SESSIONS=1,5,10,20      steps against the Python original (it falls over beyond that)
#   DURATION=60                measurement window of each step, seconds
#   RAMP=50/s  MEASURE=10      session start rate; sessions whose echo is timed per step
#   PRIORITY=nice              nice | rt | none: scheduling of the server and the load
#                              generator. On a machine busy with other work, `rt` (SCHED_FIFO,
#                              load generator above the server) keeps the figures clean, at
#                              the cost of starving that other work while it runs.
#   SKIP_PYTHON=1              our server only
#   PIPECAT_VERSION=1.14.0     the Python original's version
#   OUT=target/bench-audio     where results, logs and the Python venv go
#   SERVER_BIN=target/release/smallwebrtc   the server binary (to compare two builds, A/B)
#
# Builds and installs happen here, outside the network namespace; every socket is opened
# inside ../shared/tools/nsrun (loopback only). Results: $OUT/results.md (also printed),
# $OUT/rust.json and $OUT/python.json (the load generator's full figures), server logs.
set -euo pipefail
cd "$(dirname "$0")/.."

SESSIONS="${SESSIONS:-1,10,50,100,200}"
PY_SESSIONS="${PY_SESSIONS:-1,5,10,20}"
DURATION="${DURATION:-60}"
RAMP="${RAMP:-50/s}"
MEASURE="${MEASURE:-10}"
PRIORITY="${PRIORITY:-nice}"
SKIP_PYTHON="${SKIP_PYTHON:-0}"
PIPECAT_VERSION="${PIPECAT_VERSION:-1.14.0}"
OUT="${OUT:-target/bench-audio}"
SERVER_BIN="${SERVER_BIN:-target/release/smallwebrtc}"
PORT=7860
PY_PORT=7861

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

# Starts a server (logging to $1), runs the load generator against it, stops the server.
# Arguments: log label port sessions json -- server command...
bench_one() {
  local log=$1 label=$2 port=$3 sessions=$4 json=$5
  shift 6
  (with_priority server "$@") >"$log" 2>&1 &
  local pid=$!
  if ! wait_port "$port"; then
    kill "$pid" 2>/dev/null || true
    tail -20 "$log" >&2
    return 1
  fi
  sleep 1 # let it settle before the idle RSS is read
  local rc=0
  (with_priority loadgen target/release/loadgen \
    --server "http://127.0.0.1:$port" --server-pid "$pid" --label "$label" \
    --sessions "$sessions" --duration "$DURATION" --ramp "$RAMP" --measure "$MEASURE" \
    --json "$json" --verbose) || rc=$?
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return "$rc"
}

if [ "${1:-}" = "--inside" ]; then
  # Inside the namespace: loopback only.
  ip addr show lo | grep -q 127.0.0.1 || { echo "error: no loopback" >&2; exit 1; }
  status=0
  echo "== our server: sessions $SESSIONS"
  bench_one "$OUT/rust-server.log" "rust" "$PORT" "$SESSIONS" "$OUT/rust.json" -- \
    "$SERVER_BIN" serve --host 127.0.0.1 --port "$PORT" || status=$?
  if [ "$SKIP_PYTHON" != 1 ]; then
    echo "== Python original (pipecat-ai $PIPECAT_VERSION): sessions $PY_SESSIONS"
    # aioice leaves 127.0.0.1 out of its host candidates, so with loopback alone the Python
    # server's answer has no candidate and nothing connects. A second loopback address (this
    # namespace only) gives it one.
    ip addr add 127.0.0.2/8 dev lo 2>/dev/null || true
    bench_one "$OUT/python-server.log" "python (pipecat-ai $PIPECAT_VERSION)" "$PY_PORT" \
      "$PY_SESSIONS" "$OUT/python.json" -- \
      "$OUT/venv/bin/python" "$OUT/bot.py" -t webrtc --host 127.0.0.1 --port "$PY_PORT" ||
      status=$?
  fi
  exit "$status"
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
rm -f "$OUT/rust.json" "$OUT/python.json"

echo "== build (release)"
cargo build --release --locked --bin smallwebrtc --bin loadgen

if [ "$SKIP_PYTHON" != 1 ]; then
  echo "== Python original: pipecat-ai[webrtc,runner]==$PIPECAT_VERSION in $OUT/venv"
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install python3 python3-venv
  fi
  [ -x "$OUT/venv/bin/python" ] || python3 -m venv "$OUT/venv"
  if ! "$OUT/venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('pipecat-ai') != '$PIPECAT_VERSION')" 2>/dev/null; then
    "$OUT/venv/bin/pip" install --quiet --disable-pip-version-check \
      "pipecat-ai[webrtc,runner]==$PIPECAT_VERSION"
  fi
  # The echo bot: the client's microphone straight back, through Pipecat's own transport.
  cat >"$OUT/bot.py" <<'PY'
"""Echo bot on Pipecat's SmallWebRTC transport: every input audio frame goes straight back."""

from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.types import RunnerArguments
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.workers.runner import WorkerRunner


class Echo(FrameProcessor):
    """Turns every input audio frame into an output audio frame."""

    async def process_frame(self, frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(
                OutputAudioRawFrame(
                    audio=frame.audio,
                    sample_rate=frame.sample_rate,
                    num_channels=frame.num_channels,
                )
            )
        else:
            await self.push_frame(frame, direction)


async def bot(runner_args: RunnerArguments):
    transport = SmallWebRTCTransport(
        webrtc_connection=runner_args.webrtc_connection,
        params=TransportParams(audio_in_enabled=True, audio_out_enabled=True),
    )
    worker = PipelineWorker(
        Pipeline([transport.input(), Echo(), transport.output()]),
        idle_timeout_secs=None,
    )

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(transport, client):
        await worker.cancel()

    await WorkerRunner(handle_sigint=False).run(worker)


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
PY
fi

echo "== benchmark (inside $NSRUN; PRIORITY=$PRIORITY, DURATION=$DURATION s per step)"
export SESSIONS PY_SESSIONS DURATION RAMP MEASURE PRIORITY SKIP_PYTHON PIPECAT_VERSION OUT
status=0
"$NSRUN" bash "$0" --inside || status=$?

reports=()
for f in "$OUT/rust.json" "$OUT/python.json"; do
  [ -f "$f" ] && reports+=("$f")
done
if [ "${#reports[@]}" -eq 0 ]; then
  echo "error: no results" >&2
  exit 1
fi
echo
echo "== results ($OUT/results.md)"
target/release/loadgen --compare "${reports[@]}" --markdown "$OUT/results.md"
exit "$status"
