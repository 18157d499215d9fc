#!/usr/bin/env bash
# `ansible-test sanity` for this collection on both supported ansible-core
# lines, offline, without Docker.
#
#   scripts/sanity.sh [2.21|2.19|all] [ansible-test sanity args...]
#   scripts/sanity.sh --setup [2.21|2.19|all]   # venvs + bootstrap only
#
# For each line:
#   * a pinned tool venv, rebuilt only when its requirements file (or the
#     Python it sits on) changes (stamp = hash of both):
#       .venv-sanity-2.19  Python 3.11, tests/requirements-sanity-2.19.txt
#                          (also holds ansible-lint for scripts/lint.sh)
#       .venv-sanity-2.21  newest Python 3.12+ (PATH, then pyenv),
#                          tests/requirements-sanity-2.21.txt
#     The Makefile's .venv is not used: its ansible-core is a range, and
#     scripts/venv.sh may delete and rebuild it while this runs.
#   * offline stand-ins for the get-pip script ansible-test downloads
#     (~/.ansible/test/cache/get_pip_<ver>.py) when it bootstraps the
#     per-test venvs it keeps in ~/.ansible/test/venv;
#   * a copy of the files git would track (tracked + untracked, minus
#     .gitignore'd; never .venv*, .git, tests/output, .ansible, build) in a
#     temporary ansible_collections/<namespace>/<name> tree;
#   * `ansible-test sanity --local --python <controller>`: every test on the
#     controller's Python (each test still runs in its own pinned venv);
#   * compile + import (the only tests that depend on the target Python) once
#     more on every other Python the line supports for modules and
#     module_utils that this machine has (pyenv or PATH). Set
#     SANITY_PYTHONS="3.12 3.13" to choose, SANITY_PYTHONS=none to skip.
#     This pass is skipped when extra ansible-test args are given.
#
# Exits non-zero if any run fails. SANITY_KEEP=1 keeps the temporary trees.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAMP_FORMAT=1
GET_PIP_MARKER='engineops.fleet offline get-pip stand-in'

log() { echo "sanity: $*" >&2; }
# The ansible-core version of a venv (not `ansible --version | head -1`: that breaks its pipe).
core_version() { "$1/bin/python" -c "import ansible.release; print(ansible.release.__version__)"; }
die() { log "ERROR: $*"; exit 2; }
# The machine's pip configuration names local indexes that may not exist.
quiet_pip_noise() { grep -v "^WARNING: Location 'file://" || true; }

setup_only=0
if [ "${1:-}" = "--setup" ]; then setup_only=1; shift; fi
case "${1:-all}" in
  2.19|2.21) lines=("$1"); shift ;;
  all) lines=(2.19 2.21); [ $# -eq 0 ] || shift ;;
  -*) lines=(2.19 2.21) ;;
  *) die "usage: scripts/sanity.sh [--setup] [2.21|2.19|all] [ansible-test sanity args...]" ;;
esac
extra_args=("$@")

# ---------------------------------------------------------------- pythons
pyenv_roots() {
  local r seen=" "
  for r in "${PYENV_ROOT:-}" "$(pyenv root 2>/dev/null || true)" "$HOME/.pyenv" /root/.pyenv; do
    [ -n "$r" ] && [ -d "$r/versions" ] || continue
    case "$seen" in *" $r "*) continue ;; esac
    seen="$seen$r "
    echo "$r"
  done
}

# resolve_python X.Y: print the real executable of a working Python X.Y that
# can make venvs (venv + ensurepip), from PATH first, then pyenv.
resolve_python() {
  local want=$1 c exe r
  local -a cands=()
  c=$(command -v "python$want" 2>/dev/null) && cands+=("$c")
  while IFS= read -r r; do
    while IFS= read -r c; do
      [ -x "$c" ] && cands+=("$c")
    done < <(printf '%s\n' "$r/versions/$want".*/bin/"python$want" | sort -rV)
  done < <(pyenv_roots)
  for c in ${cands[@]+"${cands[@]}"}; do
    exe=$("$c" -c 'import sys, venv, ensurepip
if "%d.%d" % sys.version_info[:2] == sys.argv[1]: print(sys.executable)' "$want" 2>/dev/null) || continue
    [ -n "$exe" ] && { echo "$exe"; return 0; }
  done
  return 1
}

# The controller Python of each line: 2.19 on 3.11, the oldest controller
# Python the collection supports (falling back to 3.12/3.13); 2.21 on the
# newest 3.12+ available (ansible-core 2.21 needs 3.12 on the controller).
controller_python() {
  local order v
  case "$1" in
    2.19) order="3.11 3.12 3.13" ;;
    2.21) order="3.14 3.13 3.12" ;;
  esac
  for v in $order; do resolve_python "$v" && return 0; done
  die "no Python for ansible-core $1 (tried $order on PATH and in pyenv)"
}

py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }

# ------------------------------------------------------------------- venvs
# venv_ok LINE: the line's venv exists and matches its requirements and Python.
venv_ok() {
  local venv="$ROOT/.venv-sanity-$1" req="$ROOT/tests/requirements-sanity-$1.txt" py pyv want
  [ -f "$req" ] || die "missing $req"
  py=$(controller_python "$1") && pyv=$(py_version "$py") || return 1
  want=$({ cat "$req"; echo "python=$pyv format=$STAMP_FORMAT"; } | sha256sum | cut -c1-16)
  [ -f "$venv/.sanity-stamp" ] && [ "$(cat "$venv/.sanity-stamp")" = "$want" ] \
    && [ -x "$venv/bin/ansible-test" ] && "$venv/bin/python" -c '' 2>/dev/null
}

ensure_venv() {
  local line=$1 venv="$ROOT/.venv-sanity-$1" req="$ROOT/tests/requirements-sanity-$1.txt"
  local py pyv want out
  venv_ok "$line" && return 0
  py=$(controller_python "$line")
  pyv=$(py_version "$py")
  want=$({ cat "$req"; echo "python=$pyv format=$STAMP_FORMAT"; } | sha256sum | cut -c1-16)
  log "building $venv on Python $pyv ($py)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  if ! out=$("$venv/bin/python" -m pip install --disable-pip-version-check -q -r "$req" 2>&1); then
    printf '%s\n' "$out" | quiet_pip_noise >&2
    die "pip install -r $req failed"
  fi
  echo "$want" > "$venv/.sanity-stamp"
  log "ansible [core $(core_version "$venv")] in $venv"
}

# ansible-test bootstraps pip in each venv it makes with a get-pip script it
# downloads from a host this machine cannot reach; it uses a cached copy at
# ~/.ansible/test/cache/get_pip_<ver>.py if there is one. Ours runs ensurepip
# and then pip with the arguments it was given (pip==<ver>), from PyPI.
ensure_get_pip() {
  local venv="$ROOT/.venv-sanity-$1" cache="$HOME/.ansible/test/cache" src ver f
  src=$("$venv/bin/python" -c 'import ansible_test._internal.python_requirements as m; print(m.__file__)') \
    || die "ansible_test not found in $venv"
  mkdir -p "$cache"
  while IFS= read -r ver; do
    f="$cache/get_pip_${ver//./_}.py"
    if [ -f "$f" ] && ! grep -q "$GET_PIP_MARKER" "$f"; then
      continue   # a real get-pip script: leave it
    fi
    cat > "$f.tmp.$$" <<EOF
"""$GET_PIP_MARKER (written by scripts/sanity.sh).

ansible-test runs this as get-pip.py: bootstrap pip from the Python's own
ensurepip, then install what it asked for (pip==$ver) with that pip.
"""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
rc = subprocess.call([sys.executable, '-m', 'ensurepip', '--default-pip'])
if rc == 0:
    rc = subprocess.call([sys.executable, '-m', 'pip', 'install'] + args)
sys.exit(rc)
EOF
    mv -f "$f.tmp.$$" "$f"
  done < <(sed -n "s/^ *pip='\([0-9.]*\)'.*/\1/p" "$src" | sort -u)
}

# -------------------------------------------------------------- the tree
collection_id() {
  local ns name
  ns=$(sed -n 's/^namespace: *["'\'']\{0,1\}\([a-z0-9_]*\).*/\1/p' "$ROOT/galaxy.yml" 2>/dev/null | head -1)
  name=$(sed -n 's/^name: *["'\'']\{0,1\}\([a-z0-9_]*\).*/\1/p' "$ROOT/galaxy.yml" 2>/dev/null | head -1)
  echo "${ns:-engineops}/${name:-fleet}"
}

# NUL-separated list of the files to check, relative to ROOT.
list_files() {
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard
  else
    (cd "$ROOT" && find . -mindepth 1 \( -name .git -o -name '.venv*' -o -name .ansible \
        -o -path ./tests/output -o -path ./build -o -name __pycache__ \) -prune \
        -o \( -type f -o -type l \) -print0 | sed -z 's|^\./||')
  fi
}

copy_tree() {
  local dest=$1 f
  mkdir -p "$dest"
  list_files \
    | grep -z -v -E '^(\.venv[^/]*|\.git|tests/output|\.ansible|build)(/|$)' \
    | while IFS= read -r -d '' f; do
        # tracked but deleted in the work tree: skip
        if [ -e "$ROOT/$f" ] || [ -L "$ROOT/$f" ]; then printf '%s\0' "$f"; fi
      done \
    | tar -C "$ROOT" --null --no-recursion -T - -cf - \
    | tar -C "$dest" -xf -
}

# --------------------------------------------------------------- running

# PATH for ansible-test: pyenv shims answer for Pythons they cannot run.
clean_path() {
  local IFS=: d out=""
  for d in $PATH; do
    case "$d" in */.pyenv/shims|*/pyenv-virtualenv/shims|"") continue ;; esac
    out="$out${out:+:}$d"
  done
  echo "$out"
}

run_line() {
  local line=$1 venv="$ROOT/.venv-sanity-$1" tree bin ctrl rc=0 v exe supported wanted
  local -a extra=() missing=()
  tree="$WORK/$line/ansible_collections/$(collection_id)"
  bin="$WORK/$line/bin"
  mkdir -p "$bin"
  copy_tree "$tree" || { log "ERROR: could not copy $ROOT to $tree"; return 1; }
  ctrl=$(py_version "$venv/bin/python")
  local run_path
  run_path="$venv/bin:$bin:$(clean_path)"

  echo "=== ansible-test sanity: [core $(core_version "$venv")], controller Python $ctrl"
  (cd "$tree" && PATH="$run_path" ansible-test sanity --local --python "$ctrl" ${extra_args[@]+"${extra_args[@]}"}) 2>&1 \
    | quiet_pip_noise || rc=$?

  if [ ${#extra_args[@]} -gt 0 ] || [ "${SANITY_PYTHONS:-auto}" = none ]; then
    return "$rc"
  fi
  supported=$("$venv/bin/python" -c 'from ansible_test._util.target.common.constants import REMOTE_ONLY_PYTHON_VERSIONS as r, CONTROLLER_PYTHON_VERSIONS as c
print(" ".join(r + c))')
  wanted=${SANITY_PYTHONS:-auto}
  [ "$wanted" = auto ] && wanted=$supported
  for v in $wanted; do
    [ "$v" = "$ctrl" ] && continue
    case " $supported " in *" $v "*) ;; *) log "ansible-core $line does not support Python $v: skipped"; continue ;; esac
    if exe=$(resolve_python "$v"); then
      ln -sfn "$exe" "$bin/python$v"
      extra+=("$v")
    else
      missing+=("$v")
    fi
  done
  for v in ${extra[@]+"${extra[@]}"}; do
    echo "=== ansible-test sanity --test compile --test import: ansible-core $line, Python $v"
    (cd "$tree" && PATH="$run_path" ansible-test sanity --local --python "$v" --test compile --test import) 2>&1 \
      | quiet_pip_noise || rc=$?
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "WARNING: ansible-core $line: compile/import not run on Python ${missing[*]} (not on this machine)"
  fi
  return "$rc"
}

# One run at a time per user: ansible-test's venv cache (~/.ansible/test/venv)
# and ours are not safe to build concurrently. `--setup` with nothing to build
# (scripts/lint.sh) does not wait for a running check.
need_lock=1
if [ "$setup_only" = 1 ]; then
  need_lock=0
  for line in "${lines[@]}"; do venv_ok "$line" || need_lock=1; done
fi
if [ "$need_lock" = 1 ] && command -v flock >/dev/null 2>&1; then
  exec 9>"${TMPDIR:-/tmp}/engineops-fleet-sanity.$(id -u).lock"
  flock -n 9 || { log "waiting for another sanity run to finish..."; flock 9; }
fi

for line in "${lines[@]}"; do
  ensure_venv "$line"
  ensure_get_pip "$line"
done
[ "$setup_only" = 1 ] && exit 0

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fleet-sanity.XXXXXX")
trap 'if [ "${SANITY_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi' EXIT

status=0
summary=()
for line in "${lines[@]}"; do
  start=$SECONDS
  if run_line "$line"; then
    summary+=("ansible-core $line: passed ($((SECONDS - start))s)")
  else
    summary+=("ansible-core $line: FAILED ($((SECONDS - start))s)")
    status=1
  fi
done
echo "=== sanity summary"
printf '  %s\n' "${summary[@]}"
exit "$status"
