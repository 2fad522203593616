#!/usr/bin/env bash
# Local Apache Kafka 4.x for wagg's tests and demo: one KRaft node (broker + controller)
# on 127.0.0.1, jars from Maven Central (scripts/kafka/pom.xml), state under .cache/kafka/.
#
#   scripts/kafka.sh up        resolve jars if missing, format storage once, start, await (idempotent)
#   scripts/kafka.sh down      stop (SIGTERM, then SIGKILL after 30 s)
#   scripts/kafka.sh status    exit 0 when the broker answers
#   scripts/kafka.sh topics …  run kafka-topics (TopicCommand) against the local broker
#   scripts/kafka.sh tool CLASS …  run any Kafka tool main class with the cached classpath
#
# Env: WAGG_KAFKA_PORT (9092), WAGG_KAFKA_CONTROLLER_PORT (9093), WAGG_KAFKA_TIMEOUT (120 s),
#      WAGG_KAFKA_HEAP (1g), WAGG_CACHE_DIR (<repo>/.cache),
#      WAGG_KAFKA_LIBS (the jars, default $WAGG_CACHE_DIR/kafka/libs: a second broker can share them).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"

PORT=${WAGG_KAFKA_PORT:-9092}
CPORT=${WAGG_KAFKA_CONTROLLER_PORT:-9093}
TIMEOUT=${WAGG_KAFKA_TIMEOUT:-120}
HEAP=${WAGG_KAFKA_HEAP:-1g}
BOOTSTRAP=127.0.0.1:$PORT

DIR=$WAGG_CACHE/kafka
LIBS=${WAGG_KAFKA_LIBS:-$DIR/libs}
DATA=$DIR/data
CONF=$DIR/server.properties
CLIENT_CONF=$DIR/client.properties
PIDFILE=$DIR/kafka.pid
LOG=$DIR/kafka.log
POM=$HERE/kafka/pom.xml
MAIN=kafka.Kafka

# JVM flags for short-lived tool runs: quick start-up, small heap.
TOOL_JAVA_OPTS=(-Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
  "-Dlog4j2.configurationFile=$HERE/kafka/tools-log4j2.properties")

# Pid of the process this run started: a failed 'up' stops it again.
STARTED=

die() {
  log "kafka did not come up: $*"
  if [ -f "$LOG" ]; then
    log "---- last 40 lines of $LOG ----"
    tail -n 40 "$LOG" >&2 || true
  fi
  if [ -n "$STARTED" ]; then
    stop_pid "$STARTED" 10 || true
    rm -f "$PIDFILE"
  elif [ -f "$PIDFILE" ]; then
    log "(an earlier broker is still running: 'scripts/kafka.sh down' stops it)"
  fi
  exit 1
}

# Java and Maven come with the machine image; install them if a machine lacks them.
ensure_java() {
  local missing=()
  command -v java >/dev/null || missing+=(default-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

# Resolve the broker's jars into $LIBS, only when missing or when the pom changed.
ensure_libs() {
  local sum
  sum=$(sha256sum "$POM" | cut -d' ' -f1)
  if [ -f "$LIBS/.pom.sha256" ] && [ "$(cat "$LIBS/.pom.sha256")" = "$sum" ]; then
    return 0
  fi
  log "kafka: resolving jars with mvn into $LIBS"
  local tmp=$DIR/libs.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"
  if ! mvn -q -B -f "$POM" dependency:copy-dependencies \
    -DoutputDirectory="$tmp" -DincludeScope=runtime >"$DIR/mvn.log" 2>&1; then
    tail -n 30 "$DIR/mvn.log" >&2
    log "kafka did not come up: mvn could not resolve the Kafka jars (see $DIR/mvn.log)"
    exit 1
  fi
  echo "$sum" >"$tmp/.pom.sha256"
  rm -rf "$LIBS"
  mkdir -p "$(dirname "$LIBS")"
  mv "$tmp" "$LIBS"
}

# Run a Kafka tool main class with the cached classpath.
tool() {
  java "${TOOL_JAVA_OPTS[@]}" -cp "$LIBS/*" "$@"
}

write_config() {
  mkdir -p "$DATA"
  cat >"$CONF" <<EOF
# Written by scripts/kafka.sh; rewritten on every 'up'.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  # Client settings for the tools (scripts/kafka.sh tool … --command-config): fail fast.
  cat >"$CLIENT_CONF" <<EOF
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
}

# Format the storage once (a cluster id of its own), never over existing data.
ensure_formatted() {
  [ -f "$DATA/meta.properties" ] && return 0
  local id
  id=$(tool kafka.tools.StorageTool random-uuid | tail -n 1)
  log "kafka: formatting $DATA (cluster id $id)"
  tool kafka.tools.StorageTool format -t "$id" -c "$CONF" >"$DIR/format.log" 2>&1 ||
    die "storage format failed: $(tail -n 5 "$DIR/format.log")"
}

# Real check, without a JVM (fast even on a loaded machine): an ApiVersions v0
# round trip on the client port must answer correlation id 1, error 0. The broker
# enables request processing on that port only once it is registered and unfenced.
answers() {
  local reply
  # shellcheck disable=SC2016 # $0 expands in the child shell
  reply=$(timeout 5 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$0"
    printf "\x00\x00\x00\x0e\x00\x12\x00\x00\x00\x00\x00\x01\x00\x04wagg" >&3
    head -c 10 <&3 | od -An -v -tx1' "$PORT" 2>/dev/null) || return 1
  # size (4 bytes), correlation id (4), error code (2)
  [ "$(echo "$reply" | tr -d ' \n' | cut -c9-)" = 000000010000 ]
}

# Wait for the broker with pid $1 until it answers, or die with the reason.
await() {
  local pid=$1 deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    pid_alive "$pid" || die "the broker process ($pid) exited"
    answers && return 0
    sleep 0.3
  done
  die "no answer on $BOOTSTRAP within ${TIMEOUT}s"
}

up() {
  local pid start=$SECONDS
  mkdir -p "$DIR"
  # One 'up'/'down' at a time.
  exec 9>"$DIR/lock"
  flock 9
  if pid=$(live_pid "$PIDFILE" "$MAIN"); then
    [ -d "$LIBS" ] || die "running ($pid) but $LIBS is missing"
    await "$pid"
    log "kafka: up on $BOOTSTRAP (pid $pid, already running)"
    return 0
  fi
  rm -f "$PIDFILE"
  for p in "$PORT" "$CPORT"; do
    if port_open "$p"; then
      log "kafka did not come up: port $p is already in use by another process:"
      port_owner "$p" >&2
      exit 1
    fi
  done
  ensure_java
  ensure_libs
  write_config
  ensure_formatted
  [ -f "$LOG" ] && mv -f "$LOG" "$LOG.1"
  # (9>&-: the broker must not inherit the lock.)
  log "kafka: starting broker on $BOOTSTRAP (log $LOG)"
  start_detached "$PIDFILE" "$LOG" java -Xms256m "-Xmx$HEAP" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$HERE/kafka/log4j2.properties" "-Dkafka.logs.dir=$DIR" \
    -cp "$LIBS/*" "$MAIN" "$CONF" 9>&- || die "could not start java"
  pid=$(cat "$PIDFILE")
  STARTED=$pid
  await "$pid"
  log "kafka: up on $BOOTSTRAP (pid $pid, started in $((SECONDS - start))s)"
}

down() {
  stop_service kafka "$DIR" "$PIDFILE" "$MAIN"
}

status() {
  local pid
  if ! pid=$(live_pid "$PIDFILE" "$MAIN"); then
    log "kafka: not running"
    return 1
  fi
  if answers; then
    log "kafka: up on $BOOTSTRAP (pid $pid)"
  else
    log "kafka: process $pid is running but does not answer on $BOOTSTRAP"
    return 1
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  topics)
    shift
    tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" "$@"
    ;;
  tool)
    shift
    tool "$@"
    ;;
  *)
    echo "usage: $0 up|down|status|topics ARGS…|tool CLASS ARGS…" >&2
    exit 2
    ;;
esac
