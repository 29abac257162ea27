# Sourced by the other scripts: creates .venv and installs the project into it when needed.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

bootstrap() {  # bootstrap [EXTRA]: install the project, with an optional extra such as "dev"
  local extra="${1:-}" python="${PYTHON:-python3}" stamp
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python 3.11 or newer is needed as '$python' (set PYTHON=/path/to/python3)" >&2
    exit 2
  fi
  [ -x "$VENV/bin/python" ] || "$python" -m venv "$VENV"
  stamp="$VENV/.installed${extra:+-$extra}"
  # Reinstall when the package's build inputs changed (the C extensions compile at install time).
  if [ ! -f "$stamp" ] || [ -n "$(find "$ROOT/pyproject.toml" "$ROOT/setup.py" \
      "$ROOT/pipeline/fetch/_fastlogs.c" "$ROOT/pipeline/_keccak.c" -newer "$stamp" 2>/dev/null)" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT${extra:+[$extra]}"
    touch "$stamp"
  fi
}
