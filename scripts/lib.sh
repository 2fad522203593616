# shellcheck shell=bash disable=SC2034
# Shared helpers for scripts/kafka.sh, scripts/clickhouse.sh, scripts/chromium.sh.
# Sourced, not run. Callers set -euo pipefail themselves.

# Repo root (scripts/..) and the git-ignored cache under it.
WAGG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WAGG_CACHE=${WAGG_CACHE_DIR:-$WAGG_ROOT/.cache}

log() { printf '%s\n' "$*" >&2; }

# Run a command as root (sudo only when not root already).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt-get update + noninteractive install, serialised across our scripts
# (they may run in parallel) and patient with other apt users.
apt_install() {
  local lock=/tmp/wagg-apt.lock
  log "installing with apt-get: $*"
  as_root flock "$lock" env DEBIAN_FRONTEND=noninteractive bash -c '
    set -euo pipefail
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -q "$@"
  ' _ "$@"
}

# True when PID is a live process: any of its threads is not a zombie. After
# a SIGKILL the main thread of a JVM turns zombie while the others are still
# exiting and still hold the process's ports, so the main thread alone says
# "gone" too early.
pid_alive() {
  local pid=$1 stat state
  [ -n "$pid" ] && [ -d "/proc/$pid/task" ] || return 1
  for stat in /proc/"$pid"/task/*/stat; do
    # The state follows the command name, which may hold spaces and parentheses.
    state=$(sed 's/.*) //' "$stat" 2>/dev/null) || continue
    [ "${state%% *}" = Z ] || [ -z "$state" ] || return 0
  done
  return 1
}

# PID from a pid file if that process is alive and its command line contains PATTERN.
live_pid() {
  local file=$1 pattern=$2 pid
  [ -f "$file" ] || return 1
  pid=$(cat "$file" 2>/dev/null || true)
  pid_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern" || return 1
  echo "$pid"
}

# True when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Who listens on PORT (for error messages).
port_owner() {
  if command -v ss >/dev/null; then
    ss -Hltnp "sport = :$1" 2>/dev/null | sed 's/^/    /' || true
  fi
}

# Stop PID: SIGTERM, wait up to GRACE seconds, then SIGKILL.
stop_pid() {
  local pid=$1 grace=${2:-30} i
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  log "process $pid still alive after ${grace}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  return 1
}

# Start a detached background command (own session, no stdin) writing its own
# pid to PIDFILE and its output to LOGFILE: start_detached PIDFILE LOGFILE CMD...
start_detached() {
  local pidfile=$1 logfile=$2
  shift 2
  # shellcheck disable=SC2016 # $$ and $@ expand in the child shell
  nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >"$logfile" 2>&1 </dev/null &
  # Wait for the pid file (written at once by the child).
  local i
  for ((i = 0; i < 50; i++)); do
    [ -s "$pidfile" ] && return 0
    sleep 0.1
  done
  return 1
}

# Stop a service started by our scripts: stop_service NAME DIR PIDFILE PATTERN
# (serialised with its up/down lock in DIR).
stop_service() {
  local name=$1 dir=$2 pidfile=$3 pattern=$4 pid
  mkdir -p "$dir"
  exec 9>"$dir/lock"
  flock 9
  if pid=$(live_pid "$pidfile" "$pattern"); then
    log "$name: stopping pid $pid"
    stop_pid "$pid" 30 || { log "$name: could not stop pid $pid"; exit 1; }
    log "$name: stopped"
  else
    log "$name: not running"
  fi
  rm -f "$pidfile"
}
