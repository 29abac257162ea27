#!/usr/bin/env bash
# Bootstraps .venv with the dev tools and anvil, then runs the benchmarks (python -m bench).
# No arguments: every scenario at quick sizes (a few minutes on 2 cores); --help lists the
# scenarios and their size flags. cryo is raced when its Python package is installed
# (.venv/bin/pip install cryo); without it those rows are skipped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_bootstrap.sh"
bootstrap dev
cd "$ROOT"
exec "$VENV/bin/python" -m bench.__main__ "$@"
