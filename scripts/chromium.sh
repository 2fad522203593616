#!/usr/bin/env bash
# Installs Debian's chromium (for the dashboard's playwright-core end-to-end test) when
# /usr/bin/chromium is missing. Idempotent; prints the version.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"

CHROMIUM=/usr/bin/chromium

if [ ! -x "$CHROMIUM" ]; then
  apt_install chromium
  [ -x "$CHROMIUM" ] || { log "chromium: apt installed no $CHROMIUM"; exit 1; }
fi
log "chromium: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
