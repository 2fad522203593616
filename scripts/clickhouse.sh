#!/usr/bin/env bash
# Local ClickHouse for wagg's tests and demo: Debian's clickhouse-server (18.16 on bookworm),
# installed when missing, run as the calling user (root is fine) on 127.0.0.1 with
# scripts/clickhouse/config.xml + users.xml; data, tmp and logs under .cache/clickhouse/.
#
#   scripts/clickhouse.sh up       install if missing, start, await a real query (idempotent)
#   scripts/clickhouse.sh down     stop (SIGTERM, then SIGKILL after 30 s)
#   scripts/clickhouse.sh status   exit 0 when 'SELECT 1' answers
#   scripts/clickhouse.sh client … clickhouse-client against the local server
#
# Env: WAGG_CLICKHOUSE_PORT (native, 9000), WAGG_CLICKHOUSE_HTTP_PORT (8123),
#      WAGG_CLICKHOUSE_TIMEOUT (60 s), WAGG_CACHE_DIR (<repo>/.cache).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"

PORT=${WAGG_CLICKHOUSE_PORT:-9000}
HTTP_PORT=${WAGG_CLICKHOUSE_HTTP_PORT:-8123}
TIMEOUT=${WAGG_CLICKHOUSE_TIMEOUT:-60}

SERVER=/usr/sbin/clickhouse-server
CLIENT=/usr/bin/clickhouse-client
CONFIG=$HERE/clickhouse/config.xml
DIR=$WAGG_CACHE/clickhouse
PIDFILE=$DIR/clickhouse.pid
LOG=$DIR/log/clickhouse-server.log
ERRLOG=$DIR/log/clickhouse-server.err.log
OUT=$DIR/stdout.log

# Pid of the process this run started: a failed 'up' stops it again.
STARTED=

die() {
  log "clickhouse did not come up: $*"
  local f
  for f in "$OUT" "$ERRLOG"; do
    if [ -s "$f" ]; then
      log "---- last 30 lines of $f ----"
      tail -n 30 "$f" >&2 || true
    fi
  done
  if [ -n "$STARTED" ]; then
    stop_pid "$STARTED" 10 || true
    rm -f "$PIDFILE"
  elif [ -f "$PIDFILE" ]; then
    log "(an earlier server is still running: 'scripts/clickhouse.sh down' stops it)"
  fi
  exit 1
}

# The Debian package's own service (user clickhouse, /etc config). Containers
# usually forbid apt from starting it (policy-rc.d), but stop it if it runs.
stop_debian_service() {
  pgrep -u clickhouse -f "$SERVER" >/dev/null 2>&1 || return 0
  log "clickhouse: stopping the Debian clickhouse-server service (it takes the default ports)"
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now clickhouse-server || true
  else
    as_root /etc/init.d/clickhouse-server stop || true
  fi
}

ensure_installed() {
  if [ -x "$SERVER" ] && [ -x "$CLIENT" ]; then return 0; fi
  apt_install clickhouse-server clickhouse-client
  [ -x "$SERVER" ] || die "apt installed no $SERVER"
  stop_debian_service
}

answers() {
  timeout 10 "$CLIENT" --host 127.0.0.1 --port "$PORT" --query 'SELECT 1' >/dev/null 2>&1
}

# Wait for the server with pid $1 until it answers, or die with the reason.
await() {
  local pid=$1 deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    pid_alive "$pid" || die "the server process ($pid) exited"
    answers && return 0
    sleep 0.2
  done
  die "no answer to 'SELECT 1' on 127.0.0.1:$PORT within ${TIMEOUT}s"
}

up() {
  local pid start=$SECONDS
  mkdir -p "$DIR"
  exec 9>"$DIR/lock"
  flock 9
  if pid=$(live_pid "$PIDFILE" "$SERVER"); then
    await "$pid"
    log "clickhouse: up on 127.0.0.1:$PORT (http $HTTP_PORT, pid $pid, already running)"
    return 0
  fi
  rm -f "$PIDFILE"
  ensure_installed
  for p in "$PORT" "$HTTP_PORT"; do
    if port_open "$p"; then
      stop_debian_service
      sleep 1
    fi
    if port_open "$p"; then
      log "clickhouse did not come up: port $p is already in use by another process:"
      port_owner "$p" >&2
      exit 1
    fi
  done
  mkdir -p "$DIR/data" "$DIR/tmp" "$DIR/user_files" "$DIR/format_schemas" "$DIR/log"
  [ -f "$OUT" ] && mv -f "$OUT" "$OUT.1"
  log "clickhouse: starting server on 127.0.0.1:$PORT (log $LOG)"
  # Paths and ports go on the command line (after --), overriding config.xml.
  # (9>&-: the server must not inherit the lock.)
  (cd "$DIR" && start_detached "$PIDFILE" "$OUT" "$SERVER" --config-file="$CONFIG" -- \
    --path="$DIR/data/" --tmp_path="$DIR/tmp/" \
    --user_files_path="$DIR/user_files/" --format_schema_path="$DIR/format_schemas/" \
    --logger.log="$LOG" --logger.errorlog="$ERRLOG" \
    --tcp_port="$PORT" --http_port="$HTTP_PORT" 9>&-) || die "could not start $SERVER"
  pid=$(cat "$PIDFILE")
  STARTED=$pid
  await "$pid"
  log "clickhouse: up on 127.0.0.1:$PORT (http $HTTP_PORT, pid $pid, started in $((SECONDS - start))s)"
}

down() {
  stop_service clickhouse "$DIR" "$PIDFILE" "$SERVER"
}

status() {
  local pid
  if ! pid=$(live_pid "$PIDFILE" "$SERVER"); then
    log "clickhouse: not running"
    return 1
  fi
  if answers; then
    log "clickhouse: up on 127.0.0.1:$PORT (http $HTTP_PORT, pid $pid)"
  else
    log "clickhouse: process $pid is running but does not answer on 127.0.0.1:$PORT"
    return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  client)
    shift
    exec "$CLIENT" --host 127.0.0.1 --port "$PORT" "$@"
    ;;
  *)
    echo "usage: $0 up|down|status|client ARGS…" >&2
    exit 2
    ;;
esac
