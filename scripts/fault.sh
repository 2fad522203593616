#!/usr/bin/env bash
# A private Kafka broker or ClickHouse server to hurt on purpose: the fault tests stop and start
# it while wagg runs, without touching the services that other tests share.
#
#   scripts/fault.sh kafka|clickhouse up DIR PORT     start one with its state in DIR, listening on PORT
#                                                     (Kafka's controller on PORT+1, ClickHouse's HTTP on PORT+1)
#   scripts/fault.sh kafka|clickhouse down DIR PORT   stop it (SIGTERM, then SIGKILL after 30 s)
#   scripts/fault.sh kafka|clickhouse kill DIR PORT   SIGKILL it at once, as a crash does
#
# Kafka reuses the jars of the shared broker (.cache/kafka/libs), so no Maven run is needed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"

[ $# -eq 4 ] || { log "usage: scripts/fault.sh kafka|clickhouse up|down|kill DIR PORT"; exit 2; }
kind=$1 action=$2 dir=$3 port=$4
mkdir -p "$dir"

case $kind in
kafka)
  export WAGG_KAFKA_LIBS=${WAGG_KAFKA_LIBS:-$WAGG_CACHE/kafka/libs}
  export WAGG_KAFKA_PORT=$port WAGG_KAFKA_CONTROLLER_PORT=$((port + 1)) WAGG_KAFKA_HEAP=${WAGG_KAFKA_HEAP:-512m}
  pidfile=$dir/kafka/kafka.pid
  ;;
clickhouse)
  export WAGG_CLICKHOUSE_PORT=$port WAGG_CLICKHOUSE_HTTP_PORT=$((port + 1))
  pidfile=$dir/clickhouse/clickhouse.pid
  ;;
*)
  log "fault.sh: unknown service $kind (want kafka or clickhouse)"
  exit 2
  ;;
esac
export WAGG_CACHE_DIR=$dir

case $action in
up | down) exec "$HERE/$kind.sh" "$action" ;;
kill)
  if [ -f "$pidfile" ] && pid=$(cat "$pidfile") && pid_alive "$pid"; then
    kill -9 "$pid"
    # SIGKILL is delivered at once, but a large process (a JVM) takes a
    # moment to go, and holds its ports until it has: an 'up' right after
    # would find them taken
    for ((i = 0; i < 100; i++)); do
      pid_alive "$pid" || exit 0
      sleep 0.1
    done
    log "fault.sh: process $pid still alive 10 s after SIGKILL"
    exit 1
  fi
  ;;
*)
  log "fault.sh: unknown action $action (want up, down or kill)"
  exit 2
  ;;
esac
