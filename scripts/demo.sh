#!/usr/bin/env bash
# The demo: wagg serve in the background, the votes aggregator pushed and
# deployed, votes produced at a steady rate. `make demo` runs `up` (after
# building and starting Kafka and ClickHouse); `make demo-stop` runs `down`.
#   scripts/demo.sh up [ADDR] [KAFKA] [CLICKHOUSE] | down
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

DIR=$WAGG_CACHE/demo
ADDR=${2:-127.0.0.1:8080}
KAFKA=${3:-127.0.0.1:9092}
CLICKHOUSE=${4:-127.0.0.1:9000}
RATE=${WAGG_DEMO_RATE:-2000}
WAGG=$WAGG_ROOT/bin/wagg

down() {
  for p in produce serve; do
    if pid=$(live_pid "$DIR/$p.pid" "wagg"); then
      stop_pid "$pid" 30
    fi
    rm -f "$DIR/$p.pid"
  done
}

up() {
  mkdir -p "$DIR"
  down
  [ -x "$WAGG" ] || { log "demo: $WAGG is missing: run make demo"; exit 1; }
  # The demo runs with auth on: an HMAC key made once, tokens minted from it
  # (docs/security.md). Nothing here needs a token typed by hand.
  if [ ! -s "$DIR/demo.key" ]; then
    (umask 077; head -c 32 /dev/urandom | base64 > "$DIR/demo.key")
  fi
  cat > "$DIR/wagg.yaml" <<YAML
auth:
  hmac_key_files: [$DIR/demo.key]
  issuer: wagg-demo
  audience: wagg
YAML
  start_detached "$DIR/serve.pid" "$DIR/serve.log" \
    "$WAGG" serve -config "$DIR/wagg.yaml" -listen "$ADDR" -data-dir "$DIR/data" -kafka "$KAFKA" -clickhouse "$CLICKHOUSE" -database wagg_demo
  local i
  for ((i = 0; i < 120; i++)); do
    if curl -fsS "http://$ADDR/healthz" >/dev/null 2>&1; then break; fi
    if ! live_pid "$DIR/serve.pid" wagg >/dev/null; then
      log "demo: wagg serve exited:"; tail -n 20 "$DIR/serve.log" >&2; exit 1
    fi
    sleep 0.5
  done
  curl -fsS "http://$ADDR/healthz" >/dev/null || { log "demo: wagg serve is not healthy:"; tail -n 20 "$DIR/serve.log" >&2; exit 1; }
  export WAGG_SERVER="http://$ADDR"
  # A short-lived token for the set-up calls below, and a read-only one for
  # the dashboard and tail (live:votes, the SQL console and the deployment
  # list: it can neither push nor deploy).
  WAGG_TOKEN=$("$WAGG" token -config "$DIR/wagg.yaml" -sub demo-setup -scopes plugins:write,deployments:write -ttl 10m)
  export WAGG_TOKEN
  local view
  view=$("$WAGG" token -config "$DIR/wagg.yaml" -sub demo-viewer -scopes live:votes,sql:read,deployments:read -ttl 24h)
  # Create the topic with a first vote, then push and deploy.
  "$WAGG" produce -kafka "$KAFKA" -topic votes -partitions 12 -count 1 >/dev/null
  # The plugin's version names its bytes, so that a demo started again after
  # a rebuild pushes the new build instead of conflicting with the old one
  # (the deployment then moves to it, keeping its state).
  local version
  version=1-$(sha256sum "$WAGG_ROOT/bin/votes.wasm" | cut -c1-12)
  "$WAGG" plugin push -name votes -version "$version" "$WAGG_ROOT/bin/votes.wasm" >/dev/null
  sed "s/^plugin: votes@.*/plugin: votes@$version/" "$WAGG_ROOT/examples/votes/deploy.yaml" > "$DIR/deploy.yaml"
  "$WAGG" deploy -f "$DIR/deploy.yaml" >/dev/null
  start_detached "$DIR/produce.pid" "$DIR/produce.log" \
    "$WAGG" produce -kafka "$KAFKA" -topic votes -rate "$RATE"
  cat <<MSG

wagg is running: votes flow from Kafka through the votes aggregator.

  dashboard (read-only, 24 h):
               http://$ADDR/?aggregator=votes#token=$view
  live deltas: bin/wagg tail -server http://$ADDR -aggregator votes -windows total -token $view
  more tokens: bin/wagg token -config $DIR/wagg.yaml -scopes live:votes -ttl 1h
  SQL:         clickhouse-client -q "SELECT poll_id, option, votes FROM wagg_demo.votes WHERE window_name = 'total' ORDER BY votes DESC LIMIT 10"
  logs:        $DIR/serve.log, $DIR/produce.log
  stop:        make demo-stop

MSG
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) log "usage: $0 up [ADDR] [KAFKA] [CLICKHOUSE] | down"; exit 2 ;;
esac
