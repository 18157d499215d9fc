#!/usr/bin/python
# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: engine_staging
short_description: Run a throwaway staging Engine of a target release on a copy of a production brain
version_added: 0.1.0
description:
  - The runbook's staging step for major upgrades. With O(state=present), creates a throwaway Engine container
    O(staging_name) on O(image), configured like the production Engine O(name) (its environment, command, labels,
    networks and the mount path of its brain, as M(engineops.fleet.engine_container) carries them to a new image),
    with O(env) merged in, on a new Docker volume C(<staging_name>-data) seeded with the brain file of snapshot
    O(snapshot), and starts it.
  - The snapshot is one taken by M(engineops.fleet.engine_snapshot) (O(snapshot_dir)/<name>/<snapshot>.db with its
    manifest). It is verified against its manifest (size, sha256) and with C(PRAGMA integrity_check) before anything is
    created. The brain is uploaded through a throwaway helper container and the Docker API, as a restore does.
  - The staging Engine publishes its port 8000 on 127.0.0.1 with a host port Docker chooses (the production Engine
    keeps its port), has no restart policy, no network aliases, static addresses or chosen hostname (those stay
    production's), no C(com.docker.compose.*) labels (compose would take it for a replica of the service) and no
    C(io.engineops.fleet.previous-image) label. A production Engine on network C(host), C(none) or C(container:...)
    gets a staging Engine on the default bridge.
  - It carries the label C(io.engineops.fleet.staging) with the production Engine's name, and
    C(io.engineops.fleet.staging.snapshot) with the snapshot's name; its volume carries the first.
  - The production container and its brain volume are never touched. Other bind mounts and volumes of the production
    container are carried as they are.
  - O(state=absent) removes the staging container and its volume, but only when they carry the label
    C(io.engineops.fleet.staging) with O(name); anything else of that name is refused, so a production Engine is never
    removed by mistake.
  - Whether the staging Engine becomes healthy is M(engineops.fleet.engine_health)'s job (give it RV(staging.url) as
    O(engine_url)); its evals are M(engineops.fleet.engine_eval)'s.
options:
  name:
    description:
      - Name of the production Engine's container, for example V(engine-042). It must exist with O(state=present).
      - It also names the folder of its snapshots in O(snapshot_dir).
    type: str
    required: true
  state:
    description:
      - V(present) makes sure the staging Engine runs O(image) on a copy of O(snapshot); a staging Engine of O(name) on
        another image, from another snapshot, with another O(env), or not running, is replaced with its volume.
      - V(absent) removes the staging Engine and its volume.
    type: str
    choices: [present, absent]
    default: present
  staging_name:
    description:
      - Name of the staging Engine's container. By default C(<name>-staging). Its volume is C(<staging_name>-data).
    type: str
  image:
    description:
      - The release to stage, pinned to an exact version tag, for example
        V(registry.example.com/september-engine:3.0.0). Required with O(state=present).
    type: str
  env:
    description:
      - Environment variables merged over the production Engine's own, for example those a major version requires.
      - Values are strings (quote booleans); they are never logged nor returned, only the names.
    type: dict
  snapshot:
    description:
      - Name of the snapshot of O(name) whose brain the staging Engine runs on, as M(engineops.fleet.engine_snapshot)
        returns it in RV(engineops.fleet.engine_snapshot#module:snapshot.name). Required with O(state=present).
    type: str
  snapshot_dir:
    description:
      - Folder holding the snapshots, on the host the module runs on; the snapshots of O(name) are in its subfolder
        O(name), as M(engineops.fleet.engine_snapshot) keeps them.
    type: path
    default: /var/lib/engineops/snapshots
  pull:
    description:
      - V(missing) pulls O(image) when the Docker host does not have it, V(always) pulls it every time, V(never) uses
        only the Docker host's image.
      - In check mode nothing is pulled; the registry is asked whether it has the image.
    type: str
    choices: [always, missing, never]
    default: missing
  timeout:
    description:
      - Seconds the copy of the brain into the staging volume may take in all.
    type: float
    default: 600
extends_documentation_fragment:
  - engineops.fleet.engine
  - engineops.fleet.engine.actiongroup
attributes:
  check_mode:
    support: full
    description: Verifies the snapshot and the names, asks the registry for the image, reports what would be created
      or removed, and changes nothing.
  diff_mode:
    support: full
    description: Shows the staging Engine's name, image, state, snapshot and volume before and after (never env values).
  idempotent:
    support: full
    description: A running staging Engine of O(name) on O(image) from O(snapshot) with O(env) is not touched; an absent
      one is not removed again.
notes:
  - The target image must ship the C(sqlite3) CLI (the Engine's documentation promises it), and C(id), C(rm), C(mv) and
    C(sync), used in the helper container that seeds the brain.
  - The staging Engine has the production Engine's key and provider keys. Remove it (O(state=absent)) once its evals
    are done.
  - O(engine_url), O(engine_key), O(engine_validate_certs) and O(engine_ca_path) are not used.
seealso:
  - module: engineops.fleet.engine_snapshot
  - module: engineops.fleet.engine_container
  - module: engineops.fleet.engine_health
  - module: engineops.fleet.engine_eval
author:
  - engineops.fleet contributors (@engineops)
"""

EXAMPLES = r"""
- name: Snapshot the production brain
  engineops.fleet.engine_snapshot:
    name: engine-042
    reason: pre-upgrade
  register: pre_upgrade

- name: Stage the major release on a copy of it
  engineops.fleet.engine_staging:
    name: engine-042
    image: registry.example.com/september-engine:3.0.0
    snapshot: "{{ pre_upgrade.snapshot.name }}"
    env:
      LLM_EMBEDDING_MODEL: text-embedding-3-small
  register: staging

- name: Wait until the staging Engine is healthy
  engineops.fleet.engine_health:
    name: "{{ staging.staging.name }}"
    engine_url: "{{ staging.staging.url }}"

- name: Remove the staging Engine and its volume
  engineops.fleet.engine_staging:
    name: engine-042
    state: absent
"""

RETURN = r"""
staging:
  description:
    - The staging Engine afterwards. In check mode with O(state=present), the one that would be created (RV(staging.id)
      and RV(staging.url) are then null); with O(state=absent), RV(staging.state) is V(absent).
  returned: success
  type: dict
  contains:
    name:
      description: Container name.
      type: str
      sample: engine-042-staging
    id:
      description: Container id.
      type: str
    state:
      description: Docker's state of the container, or V(absent).
      type: str
      sample: running
    running:
      description: Whether the container runs.
      type: bool
    image:
      description: The image reference it runs.
      type: str
      sample: registry.example.com/september-engine:3.0.0
    url:
      description: The staging Engine's base URL, on 127.0.0.1 and the host port Docker chose.
      type: str
      sample: http://127.0.0.1:32781
    volume:
      description: The staging Engine's own volume, holding the copy of the brain.
      type: str
      sample: engine-042-staging-data
    snapshot:
      description: The snapshot its brain was copied from.
      type: str
      sample: engine-042_20250310T120000Z_pre-upgrade_2.3.0
    engine:
      description: The production Engine it is the staging copy of.
      type: str
      sample: engine-042
    env_names:
      description: Names of its environment variables (never their values).
      type: list
      elements: str
snapshot:
  description: The manifest of the snapshot used (engine, image, version, fingerprint, size, sha256, created...).
  returned: with O(state=present)
  type: dict
actions:
  description: What was done (in check mode, what would be done), in order.
  returned: success
  type: list
  elements: str
  sample:
    - created volume engine-042-staging-data
    - created container engine-042-staging on registry.example.com/september-engine:3.0.0
    - copied the snapshot into engine-042-staging-data as /data/brain.sqlite
    - started engine-042-staging
reasons:
  description: Why an existing staging Engine is (or would be) replaced.
  returned: with O(state=present)
  type: list
  elements: str
carried:
  description: Names of the settings kept from the production container and of those left to the new image.
  returned: when a staging Engine was (or would be) created
  type: dict
"""

import os

from ansible_collections.engineops.fleet.plugins.module_utils._brain_copy import BrainTransfer, Deadline
from ansible_collections.engineops.fleet.plugins.module_utils._common import EngineModule
from ansible_collections.engineops.fleet.plugins.module_utils._container import (
    PULL_POLICIES,
    ContainerError,
    check_env,
    ensure_image,
    own_image,
)
from ansible_collections.engineops.fleet.plugins.module_utils._docker import facts_from_inspect
from ansible_collections.engineops.fleet.plugins.module_utils._snapshot import (
    DEFAULT_SNAPSHOT_DIR,
    SnapshotError,
    list_snapshots,
    snapshot_paths,
    validate_snapshot_name,
    verify_snapshot,
)
from ansible_collections.engineops.fleet.plugins.module_utils._staging import (
    StagingDocker,
    StagingError,
    default_staging_name,
    plan_absent,
    plan_present,
    staging_labels,
    staging_of,
    staging_spec,
    staging_view,
    staging_volume_name,
)
from ansible_collections.engineops.fleet.plugins.module_utils._version import VersionError, version_from_image

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "staging_name": {"type": "str"},
    "image": {"type": "str"},
    "env": {"type": "dict", "no_log": True},
    "snapshot": {"type": "str"},
    "snapshot_dir": {"type": "path", "default": DEFAULT_SNAPSHOT_DIR},
    "pull": {"type": "str", "default": "missing", "choices": list(PULL_POLICIES)},
    "timeout": {"type": "float", "default": 600.0},
}


class EngineStaging:
    """Create or remove the staging Engine of one production Engine."""

    def __init__(self, em: EngineModule) -> None:
        self.em = em
        self.params = em.params
        self.engine = self.params["name"]
        self.staging_name = self.params["staging_name"] or default_staging_name(self.engine)
        self.volume = staging_volume_name(self.staging_name)
        self.env = self.params["env"] or {}
        self.result: dict = {"changed": False, "actions": []}

    def fail(self, msg: str, **partial) -> None:
        self.result.update(partial)
        self.em.fail(msg, **self.result)

    # -- input ------------------------------------------------------------------

    def validate(self) -> None:
        """Every check that needs no Docker, before anything is read or touched."""
        p = self.params
        if self.staging_name == self.engine:
            self.fail(f"staging_name {self.staging_name!r} is the production Engine's own name; give another one "
                      f"(default {default_staging_name(self.engine)})")
        if self.params["state"] == "absent":
            return
        if p["timeout"] <= 0:
            self.fail(f"timeout={p['timeout']:g} is invalid: it must be a positive number of seconds")
        try:
            version_from_image(p["image"])
        except VersionError as exc:
            self.fail(f"Cannot stage {self.engine} on image {p['image']!r}: {exc}. Nothing was changed")
        try:
            check_env(self.env)
        except ContainerError as exc:
            self.fail(f"Cannot stage {self.engine}: {exc}. Nothing was changed")

    def verified_snapshot(self):
        """The snapshot's paths and manifest, verified (size, sha256, integrity) against its manifest."""
        name = self.params["snapshot"]
        folder = os.path.join(self.params["snapshot_dir"], self.engine)
        doing = f"stage {self.engine} from snapshot {name!r}"
        try:
            validate_snapshot_name(self.engine)
            paths = snapshot_paths(folder, name)
        except SnapshotError as exc:
            self.fail(f"Cannot {doing}: {exc}")
            raise  # unreachable: fail() exits
        if not os.path.exists(paths.db) and not os.path.exists(paths.manifest):
            try:
                known = ", ".join(sorted(m.name for m in list_snapshots(folder))) or "none"
            except SnapshotError as exc:
                known = f"unknown ({exc})"
            self.fail(f"Cannot {doing}: there is no such snapshot in {folder}; snapshots there: {known}. "
                      "Nothing was changed")
        check = verify_snapshot(folder, name)
        if not check.ok:
            self.fail(f"Cannot {doing}: the snapshot does not verify: {'; '.join(check.reasons)}. Nothing was changed",
                      verify=check.to_dict())
        if check.manifest.engine != self.engine:
            self.em.module.warn(f"Snapshot {name!r} in the folder of {self.engine} was taken of {check.manifest.engine}")
        self.result["snapshot"] = check.manifest.to_dict()
        return paths, check.manifest

    # -- states -----------------------------------------------------------------

    def set_diff(self, before: dict, after: dict) -> None:
        if self.em.diff_mode:
            keys = ("name", "state", "image", "snapshot", "volume", "engine")
            self.result["diff"] = {"before": {k: before.get(k) for k in keys}, "after": {k: after.get(k) for k in keys}}

    def present(self, docker: StagingDocker) -> None:
        p = self.params
        image, snapshot = p["image"], p["snapshot"]
        paths, manifest = self.verified_snapshot()
        prod = docker.container_attrs(self.engine)
        if prod is None:
            self.fail(f"Cannot stage {self.engine}: no Engine container named {self.engine!r} on {p['docker_host']}. "
                      "Nothing was changed")
        owner = staging_of((prod.get("Config") or {}).get("Labels"))
        if owner is not None:
            self.fail(f"Cannot stage {self.engine}: it is itself the staging Engine of {owner}; give the production "
                      "Engine's name. Nothing was changed")
        current = docker.container_attrs(self.staging_name)
        volume_exists, volume_labels = docker.volume_labels(self.volume)
        plan = plan_present(self.engine, self.staging_name, image, snapshot, self.env, current, volume_labels,
                            volume_exists)
        self.result["reasons"] = plan.reasons
        before = staging_view(facts_from_inspect(current) if current else None, name=self.staging_name,
                              volume=self.volume)
        if not plan.changed:
            self.result["staging"] = before
            self.set_diff(before, before)
            return
        client = docker.client
        try:
            check = ensure_image(client, image, p["pull"], check_mode=self.em.check_mode,
                                 owner=f"the staging Engine {self.staging_name}")
        except ContainerError as exc:
            self.fail(str(exc))
            raise  # unreachable
        try:
            prod_image = own_image(client, prod)
        except ContainerError as exc:
            self.fail(f"Cannot stage {self.engine}: {exc}. Nothing was changed")
            raise  # unreachable
        spec = staging_spec(prod, prod_image, image, staging_name=self.staging_name, volume=self.volume,
                            snapshot=snapshot, env=self.env)
        self.result["carried"] = spec.summary()
        after = {"name": self.staging_name, "id": None, "state": "running", "running": True, "image": image,
                 "url": None, "volume": self.volume, "snapshot": snapshot, "engine": self.engine,
                 "env_names": sorted(e.partition("=")[0] for e in spec.config.get("Env") or [])}
        self.result["changed"] = True
        if self.em.check_mode:
            self.result["actions"] = (
                ([f"pull {image}"] if check.pulled else [])
                + ([f"remove container {self.staging_name}"] if plan.remove_container else [])
                + ([f"remove volume {self.volume}"] if plan.remove_volume else [])
                + [f"create volume {self.volume}", f"create container {self.staging_name} on {image}",
                   f"copy snapshot {snapshot} into {self.volume}", f"start {self.staging_name}"])
            self.result["staging"] = after
            self.set_diff(before, after)
            return
        if check.pulled:
            docker.actions.append(f"pulled {image}")
        try:
            docker.remove(self.staging_name if plan.remove_container else None,
                          self.volume if plan.remove_volume else None)
            started = docker.create(spec, self.volume, staging_labels(self.engine, snapshot), paths.db, manifest.sha256,
                                    Deadline(p["timeout"], f"copy of snapshot {snapshot} into {self.volume}"))
        except StagingError as exc:
            self.result["changed"] = bool(docker.actions)
            self.fail(str(exc), **exc.partial)
            raise  # unreachable
        self.result["actions"] = docker.actions
        self.result["staging"] = staging_view(facts_from_inspect(started), name=self.staging_name, volume=self.volume)
        self.set_diff(before, self.result["staging"])

    def absent(self, docker: StagingDocker) -> None:
        current = docker.container_attrs(self.staging_name)
        volume_exists, volume_labels = docker.volume_labels(self.volume)
        plan = plan_absent(self.engine, self.staging_name, current, volume_labels, volume_exists)
        before = staging_view(facts_from_inspect(current) if current else None, name=self.staging_name,
                              volume=self.volume)
        after = staging_view(None, name=self.staging_name, volume=self.volume)
        if not current and volume_exists:
            before["state"] = "volume only"
        self.result["staging"] = after if plan.changed else before
        self.set_diff(before, after)
        if not plan.changed:
            return
        self.result["changed"] = True
        container = self.staging_name if plan.remove_container else None
        volume = self.volume if plan.remove_volume else None
        if self.em.check_mode:
            planned = (("container", container), ("volume", volume))
            self.result["actions"] = [f"remove {kind} {what}" for kind, what in planned if what]
            return
        try:
            docker.remove(container, volume)
        finally:
            self.result["actions"] = docker.actions

    def run(self) -> dict:
        self.validate()
        docker = StagingDocker(BrainTransfer(self.em.docker, timeout=self.params["timeout"]))
        try:
            if self.params["state"] == "present":
                self.present(docker)
            else:
                self.absent(docker)
        except StagingError as exc:
            self.result["actions"] = docker.actions
            self.fail(str(exc), **exc.partial)
        return self.result


def main() -> None:
    em = EngineModule(
        ARGUMENT_SPEC,
        needs_http=False,
        required_if=[("state", "present", ("image", "snapshot"))],
    )
    em.exit(**EngineStaging(em).run())


if __name__ == "__main__":
    main()
