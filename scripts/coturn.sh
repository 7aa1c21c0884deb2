#!/usr/bin/env bash
# A coturn (Debian's `turnserver`) on loopback, for trying and measuring the TURN
# relay by hand. The tests (tests/turn.rs) start their own; this is the same
# configuration.
#
#   scripts/coturn.sh start [PORT]   # default 3478; prints the ICE server to use
#   scripts/coturn.sh stop
#   scripts/coturn.sh status
#   scripts/coturn.sh log
#
# Long-term credentials user/pass, realm smallwebrtc.test, listening on 127.0.0.1
# only (UDP and TCP, no TLS/DTLS), relaying from 127.0.0.1 on ports 49152-49999,
# loopback peers allowed (everything here is on one machine), no CLI. The
# generated configuration, the pid file and the log live in $COTURN_DIR
# (default: a directory under ${TMPDIR:-/tmp}).
#
# Then, for example:
#   cargo run -- serve --ice-servers '{"urls":"turn:127.0.0.1:3478","username":"user","credential":"pass"}'
set -euo pipefail

DIR="${COTURN_DIR:-${TMPDIR:-/tmp}/smallwebrtc-coturn}"
PIDFILE="$DIR/turnserver.pid"

need_coturn() {
  if ! command -v turnserver >/dev/null; then
    echo "error: coturn is not installed: apt-get install -y coturn" >&2
    exit 2
  fi
}

running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

case "${1:-}" in
  start)
    need_coturn
    PORT="${2:-3478}"
    if running; then
      echo "coturn already running (pid $(cat "$PIDFILE")); stop it first" >&2
      exit 1
    fi
    mkdir -p "$DIR"
    cat >"$DIR/turnserver.conf" <<EOF
listening-ip=127.0.0.1
listening-port=$PORT
relay-ip=127.0.0.1
min-port=49152
max-port=49999
realm=smallwebrtc.test
lt-cred-mech
user=user:pass
fingerprint
allow-loopback-peers
no-tls
no-dtls
no-cli
no-rfc5780
userdb=$DIR/turndb
pidfile=$PIDFILE
log-file=$DIR/turnserver.log
simple-log
verbose
EOF
    rm -f "$DIR/turnserver.log"
    turnserver -c "$DIR/turnserver.conf" >/dev/null 2>&1 &
    echo $! >"$PIDFILE"
    # Ready when it listens.
    for _ in $(seq 50); do
      if grep -q "UDP listener opened" "$DIR/turnserver.log" 2>/dev/null; then
        echo "coturn on 127.0.0.1:$PORT (pid $(cat "$PIDFILE")), log $DIR/turnserver.log"
        echo "ICE server: {\"urls\":[\"turn:127.0.0.1:$PORT\",\"turn:127.0.0.1:$PORT?transport=tcp\"],\"username\":\"user\",\"credential\":\"pass\"}"
        exit 0
      fi
      sleep 0.1
    done
    echo "error: coturn did not start; see $DIR/turnserver.log" >&2
    exit 1
    ;;
  stop)
    if running; then
      kill "$(cat "$PIDFILE")"
      echo "coturn stopped"
    else
      echo "coturn not running"
    fi
    rm -f "$PIDFILE"
    ;;
  status)
    if running; then echo "running (pid $(cat "$PIDFILE"))"; else echo "not running"; exit 1; fi
    ;;
  log)
    cat "$DIR/turnserver.log"
    ;;
  *)
    echo "usage: $0 start [PORT] | stop | status | log" >&2
    exit 2
    ;;
esac
