"""Make the repository importable as ``ansible_collections.engineops.fleet``.

The repository root is the collection root. Tests import the collection's
code by its collection name, as Ansible does, so a symlink tree under the
ignored ``.ansible/`` folder points that name at this checkout.
"""
from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TREE = os.path.join(_ROOT, ".ansible", "pytest-collections")
_LINK = os.path.join(_TREE, "ansible_collections", "engineops", "fleet")

if not os.path.islink(_LINK) or os.readlink(_LINK) != _ROOT:
    os.makedirs(os.path.dirname(_LINK), exist_ok=True)
    if os.path.lexists(_LINK):
        os.unlink(_LINK)
    os.symlink(_ROOT, _LINK)
if _TREE not in sys.path:
    sys.path.insert(0, _TREE)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
