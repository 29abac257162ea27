#!/usr/bin/env bash
# Bootstraps .venv with the dev tools and anvil (from npm, project-local), then runs the test suite.
#   scripts/test.sh [PYTEST ARGS]          everything (what CI runs)
#   scripts/test.sh --quick [PYTEST ARGS]  ruff and the tests not marked slow (under 2 minutes)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
args=()
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
