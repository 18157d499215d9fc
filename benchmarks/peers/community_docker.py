# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Put community.docker where the plain peer playbook finds it, from PyPI's ``ansible`` package.

    .venv/bin/python benchmarks/peers/community_docker.py DEST

The ``ansible`` wheel bundles the community collections; only community.docker
(and the one collection it depends on) is unpacked, into
``DEST/ansible_collections``, so the venv's ansible-core stays as it is. Does
nothing when DEST already holds it.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "ansible>=14,<15"  # the ansible release made for ansible-core 2.21
COLLECTIONS = ("ansible_collections/community/docker/", "ansible_collections/community/library_inventory_filtering_v1/")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    dest = os.path.abspath(argv[0])
    if os.path.exists(os.path.join(dest, COLLECTIONS[0], "MANIFEST.json")):
        return 0
    with tempfile.TemporaryDirectory(prefix="ansible-wheel-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", PACKAGE, "-d", tmp], check=True)
        wheel = glob.glob(os.path.join(tmp, "ansible-*.whl"))[0]
        with zipfile.ZipFile(wheel) as archive:
            members = [n for n in archive.namelist() if n.startswith(COLLECTIONS)]
            archive.extractall(dest, members)
    print(f"community.docker from {os.path.basename(wheel)} in {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
