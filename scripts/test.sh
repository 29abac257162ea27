#!/usr/bin/env bash
# Bootstraps .venv with the dev tools and anvil (from npm, project-local), then runs the test suite.
#   scripts/test.sh [PYTEST ARGS]          everything (what CI runs)
#   scripts/test.sh --quick [PYTEST ARGS]  ruff and the tests not marked slow (about 2 minutes)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
# One pytest process per core (-n auto): most of a test's time is waiting (backoffs, latency),
# and each has its own anvil. The Ray tests share one cluster, so they run in one process
# (--dist loadgroup with their xdist_group). `-n 0` after it runs everything in one process.
args=(-n auto --dist loadgroup)
for arg in "$@"; do
  if [ "$arg" = "--quick" ]; then
    args+=(-m "not slow")
  else
    args+=("$arg")
  fi
done
bootstrap dev
cd "$ROOT"
"$VENV/bin/python" -c 'from pipeline.dev.devnet import find_anvil; print("anvil:", find_anvil())'
"$VENV/bin/ruff" check pipeline tests
# ${args[@]+...}: bash < 4.4 treats an empty array as unset under `set -u`.
exec "$VENV/bin/python" -m pytest ${args[@]+"${args[@]}"}
