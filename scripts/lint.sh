#!/usr/bin/env bash
# ansible-lint, profile `production`, config .ansible-lint (empty skip_list).
#
#   scripts/lint.sh            # roles/, playbooks/, extensions/ and the collection metadata
#   scripts/lint.sh PATH...    # only these
#
# Runs from .venv-sanity-2.19 (ansible-core 2.19 + ansible-lint, pinned in
# tests/requirements-sanity-2.19.txt; scripts/sanity.sh --setup builds it):
# ansible-lint 26.10 knows ansible-core up to 2.19 as supported. Offline:
# this checkout is exposed as engineops.fleet through a temporary
# ANSIBLE_COLLECTIONS_PATH entry, so FQCNs of our own modules and roles
# resolve in syntax-check without installing anything from Galaxy.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv-sanity-2.19"

"$ROOT/scripts/sanity.sh" --setup 2.19

cd "$ROOT"
targets=()
if [ $# -gt 0 ]; then
  targets=("$@")
else
  for p in roles playbooks galaxy.yml meta/runtime.yml meta/execution-environment.yml extensions; do
    if [ -e "$p" ]; then targets+=("$p"); fi
  done
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "lint: nothing to lint (no roles/, playbooks/ or galaxy.yml)"
  exit 0
fi

ns=$(sed -n 's/^namespace: *["'\'']\{0,1\}\([a-z0-9_]*\).*/\1/p' galaxy.yml 2>/dev/null | head -1)
name=$(sed -n 's/^name: *["'\'']\{0,1\}\([a-z0-9_]*\).*/\1/p' galaxy.yml 2>/dev/null | head -1)
ns=${ns:-engineops} name=${name:-fleet}
colls=$(mktemp -d "${TMPDIR:-/tmp}/fleet-lint.XXXXXX")
trap 'rm -rf "$colls"' EXIT
mkdir -p "$colls/ansible_collections/$ns"
ln -s "$ROOT" "$colls/ansible_collections/$ns/$name"

echo "=== ansible-lint $("$VENV/bin/ansible-lint" --nocolor --version 2>/dev/null | head -1 | sed 's/^ansible-lint //') on: ${targets[*]}"
if [ ! -t 1 ] && [ -z "${FORCE_COLOR:-}" ]; then export NO_COLOR=1; fi
PATH="$VENV/bin:$PATH" \
ANSIBLE_COLLECTIONS_PATH="$colls${ANSIBLE_COLLECTIONS_PATH:+:$ANSIBLE_COLLECTIONS_PATH}" \
  ansible-lint -c "$ROOT/.ansible-lint" "${targets[@]}"
