# Sourced by scripts/serve and scripts/test: make (or reuse) the virtualenv and install Winnow.
# torch is pinned to the CPU build through constraints/cpu.txt; see README "GPU install".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WINNOW_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Winnow needs Python >= 3.11" >&2; exit 1; }
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/constraints/cpu.txt" -e "$ROOT[$1]"
