#!/usr/bin/python
# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: engine_info
short_description: Read the facts of one Engine
version_added: 0.1.0
description:
  - Reads what the Engine's container says about it (state, restart count, exit code, image, the version from the
    image tag, the image it replaced, published ports, the brain's volume and path, environment variable names) and
    a schema fingerprint of its brain.
  - Works with the Engine running, stopped or in a restart loop. Never changes anything.
  - Environment variable values are never read into the result, only their names.
options:
  name:
    description:
      - Name of the Engine's container, for example V(engine-042).
    type: str
    required: true
  fingerprint:
    description:
      - Compute the schema fingerprint of the brain.
      - The brain is read on this host through the volume's mount point, read-only; where the mount point is not
        readable (a remote O(docker_host)), the result says so in RV(fingerprint_error).
    type: bool
    default: true
  migrations_table:
    description:
      - Name of the table in which the Engine records applied migrations.
      - The Engine's documentation does not name it; by default any table whose name contains C(migration) and has
        an id-like text column is used.
    type: str
extends_documentation_fragment:
  - engineops.fleet.engine
  - engineops.fleet.engine.actiongroup
attributes:
  check_mode:
    support: full
    description: Reads only; the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing.
  idempotent:
    support: full
    description: Reads only.
author:
  - engineops.fleet contributors (@engineops)
"""

EXAMPLES = r"""
- name: Read the facts of one Engine
  engineops.fleet.engine_info:
    name: engine-042
  register: engine

- name: Show its version
  ansible.builtin.debug:
    msg: "{{ engine.engine.name }} runs {{ engine.engine.version }} ({{ engine.brain.fingerprint }})"
"""

RETURN = r"""
engine:
  description: The container's facts.
  returned: success
  type: dict
  contains:
    name:
      description: Container name.
      type: str
      sample: engine-042
    id:
      description: Container id.
      type: str
    state:
      description: Docker's state of the container.
      type: str
      sample: running
    running:
      description: Whether the container is running (and not restarting).
      type: bool
    restarting:
      description: Whether the container is in a restart loop.
      type: bool
    restart_count:
      description: How often Docker restarted the container.
      type: int
    exit_code:
      description: Exit code of the last run, or V(null) while it runs.
      type: int
    started_at:
      description: When the container last started.
      type: str
    finished_at:
      description: When the container last stopped.
      type: str
    image:
      description: The image reference the container runs.
      type: str
      sample: registry.example.com/september-engine:2.3.0
    image_id:
      description: The image's id.
      type: str
    version:
      description: The version read from the image tag (the Engine does not report it), or V(null) with RV(engine.version_error).
      type: str
      sample: 2.3.0
    version_error:
      description: Why no version could be read from the tag.
      type: str
    previous_image:
      description: The image this container replaced, as recorded by M(engineops.fleet.engine_container).
      type: str
    ports:
      description: Published ports, as Docker reports them.
      type: dict
    volume:
      description: Name of the volume holding the brain.
      type: str
      sample: engine-data-042
    volume_mountpoint:
      description: The volume's path on the Docker host.
      type: str
    brain_path:
      description: The brain's path inside the container (E(SQLITE_DB_PATH)).
      type: str
      sample: /data/brain.sqlite
    env_names:
      description: Names of the container's environment variables (never their values).
      type: list
      elements: str
    labels:
      description: Container labels.
      type: dict
    restart_policy:
      description: Docker restart policy.
      type: str
      sample: unless-stopped
engine_url:
  description: The Engine's HTTP base URL, from O(engine_url) or the published port.
  returned: success
  type: str
  sample: http://127.0.0.1:9001
brain:
  description: The brain's schema fingerprint, when O(fingerprint) is set and the brain could be read.
  returned: success and fingerprint
  type: dict
  contains:
    fingerprint:
      description: sha256 of the normalised schema and the applied migrations.
      type: str
    tables:
      description: Tables of the brain.
      type: list
      elements: str
    migrations:
      description: Applied migrations as the brain records them.
      type: list
      elements: str
    migrations_table:
      description: The table the migrations were read from.
      type: str
    migrations_column:
      description: The column of RV(brain.migrations_table) the migration ids were read from.
      type: str
fingerprint_error:
  description: Why the fingerprint could not be computed.
  returned: when the brain could not be read
  type: str
"""

import os

from ansible_collections.engineops.fleet.plugins.module_utils._brain import BrainError, schema_fingerprint
from ansible_collections.engineops.fleet.plugins.module_utils._common import EngineModule


def brain_file(facts) -> str | None:
    """The brain's path on this host, through the volume's mount point."""
    if not facts.volume_mountpoint:
        return None
    inside = os.path.relpath(facts.brain_path, "/data") if facts.brain_path.startswith("/data/") else None
    return os.path.join(facts.volume_mountpoint, inside) if inside else None


def main() -> None:
    em = EngineModule(
        {
            "name": {"type": "str", "required": True},
            "fingerprint": {"type": "bool", "default": True},
            "migrations_table": {"type": "str"},
        },
        needs_http=False,
    )
    facts = em.facts(em.params["name"])
    result = {"changed": False, "engine": facts.to_dict(), "engine_url": em.params["engine_url"] or facts.engine_url()}
    if em.params["fingerprint"]:
        path = brain_file(facts)
        if path is None or not os.path.exists(path):
            result["fingerprint_error"] = (
                f"The brain of {facts.name} is not readable on this host (volume {facts.volume!r}, "
                f"mount point {facts.volume_mountpoint!r}); run the module on the Engine's host"
            )
        else:
            try:
                result["brain"] = schema_fingerprint(path, migrations_table=em.params["migrations_table"]).to_dict()
            except BrainError as exc:
                result["fingerprint_error"] = f"Cannot fingerprint the brain of {facts.name} at {path}: {exc}"
    em.exit(**result)


if __name__ == "__main__":
    main()
