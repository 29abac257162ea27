#!/usr/bin/env bash
# Bootstraps .venv, then runs `pipeline backfill` with these arguments (or the offline demo with --demo).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
bootstrap
if [ "${1:-}" = "--demo" ]; then
  shift
  exec "$VENV/bin/pipeline" demo "$@"
fi
exec "$VENV/bin/pipeline" backfill "$@"
