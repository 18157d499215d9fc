#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) on the newest
# Python the machine has: python3.x on PATH first, then pyenv's versions.
# ansible-core 2.21 needs Python 3.12+; on an older Python the requirements
# fall back to ansible-core 2.19. Fast when nothing changed (a stamp holds
# the hash of the requirement files).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

version_of() { "$1" -c 'import sys; print("%d.%03d" % sys.version_info[:2])' 2>/dev/null; }

newest_python() {
  local best="" best_v="0" c v
  for c in $(compgen -c python3. | sort -u) python3 /root/.pyenv/versions/*/bin/python3 "${PYENV_ROOT:-/nonexistent}"/versions/*/bin/python3; do
    command -v "$c" >/dev/null 2>&1 || [ -x "$c" ] || continue
    [[ "$c" =~ -config$ ]] && continue
    v=$(version_of "$c") || continue
    [ -n "$v" ] || continue
    if [ "$(printf '%s\n%s\n' "$v" "$best_v" | sort -V | tail -1)" = "$v" ] && [ "$v" != "$best_v" ]; then
      best=$(command -v "$c" || echo "$c"); best_v=$v
    fi
  done
  [ -n "$best" ] || { echo "venv: no python3 found on PATH or in pyenv" >&2; exit 1; }
  echo "$best"
}

want=$(cat requirements.txt requirements-test.txt | sha256sum | cut -c1-16)
stamp="$VENV/.requirements-$want"
[ -f "$stamp" ] && exit 0

python=$(newest_python)
echo "venv: building $VENV on $("$python" --version) ($python)" >&2
if [ -x "$VENV/bin/python" ] && [ "$(version_of "$VENV/bin/python")" != "$(version_of "$python")" ]; then
  rm -rf "$VENV"
fi
[ -x "$VENV/bin/python" ] || "$python" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1
# The machine's pip configuration may name local indexes that do not exist.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-test.txt \
  2> >(grep -v "^WARNING: Location 'file://" >&2)
rm -f "$VENV"/.requirements-*
touch "$stamp"
echo "venv: $("$VENV/bin/ansible" --version | head -1)" >&2
