#!/usr/bin/env bash
# Kafka and ClickHouse together, for `make test`, `make demo` and CI.
#
#   scripts/services.sh up       start both (in parallel) and await them; fails naming which did not come up
#   scripts/services.sh down     stop both
#   scripts/services.sh status   exit 0 when both answer
#
# Env: see scripts/kafka.sh and scripts/clickhouse.sh (WAGG_KAFKA_PORT, WAGG_CLICKHOUSE_PORT, …).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SERVICES=(kafka clickhouse)

# Run "scripts/NAME.sh ACTION" for each service in parallel, each line prefixed
# with its name; report the ones that failed.
run_all() {
  local action=$1 name failed=() pids=()
  for name in "${SERVICES[@]}"; do
    (
      set -o pipefail
      "$HERE/$name.sh" "$action" 2>&1 | sed -u "s/^/[$name] /"
    ) &
    pids+=($!)
  done
  local i
  for i in "${!SERVICES[@]}"; do
    wait "${pids[$i]}" || failed+=("${SERVICES[$i]}")
  done
  if [ ${#failed[@]} -gt 0 ]; then
    echo "services $action failed for: ${failed[*]}" >&2
    return 1
  fi
  echo "services $action: ok (${SERVICES[*]})" >&2
}

case "${1:-}" in
  up | down | status) run_all "$1" ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
