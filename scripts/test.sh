#!/usr/bin/env bash
# Bootstraps .venv with the dev tools and anvil (from npm, project-local), then runs the test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
bootstrap dev
cd "$ROOT"
"$VENV/bin/python" -c 'from pipeline.dev.devnet import find_anvil; print("anvil:", find_anvil())'
"$VENV/bin/ruff" check pipeline tests
exec "$VENV/bin/python" -m pytest "$@"
