# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""A throwaway staging Engine of a target release on a copy of a production brain.

The runbook's step for majors: before any production Engine is touched,
run the target release on a copy of production's brain and run the full
evals there. :func:`staging_spec` (pure, over inspect dicts) turns the
production container into the staging one with :func:`derive_spec` (env,
command, labels, networks carried as an upgrade would carry them), then
makes it harmless: a new volume at the brain's mount path, port 8000 on
127.0.0.1 with an ephemeral host port, no restart policy, no network
aliases or static addresses (production keeps its name and address), no
compose labels (compose would take it for a replica), and the staging
labels. :func:`plan_present` and :func:`plan_absent` decide from labels
alone what may be created or removed, so a container that is not a
staging Engine is never removed. :class:`StagingDocker` does the Docker
side: create the volume and the container, seed the brain from the
snapshot through a helper (the same upload-and-rename as a restore),
start, and remove everything it made when a step fails.
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.engineops.fleet.plugins.module_utils._brain_copy import (
    BrainCopyError,
    BrainTransfer,
    Deadline,
    Owner,
)
from ansible_collections.engineops.fleet.plugins.module_utils._compose import COMPOSE_LABEL_PREFIX
from ansible_collections.engineops.fleet.plugins.module_utils._container import (
    ContainerSpec,
    _bind_destination,
    derive_spec,
    env_changes,
    same_image_name,
)
from ansible_collections.engineops.fleet.plugins.module_utils._docker import (
    ENGINE_PORT,
    PREVIOUS_IMAGE_LABEL,
    APIError,
    DockerException,
    EngineFacts,
    brain_mount,
    brain_path_of,
    facts_from_inspect,
)

STAGING_LABEL = "io.engineops.fleet.staging"  # value: the production Engine's name
STAGING_SNAPSHOT_LABEL = "io.engineops.fleet.staging.snapshot"
_SPECIAL_NETWORK_MODES = ("host", "none")


class StagingError(Exception):
    """Staging cannot be done as asked. ``partial`` says what was done (and undone)."""

    def __init__(self, message: str, partial: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.partial = partial or {}


# --------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------


def default_staging_name(engine: str) -> str:
    return f"{engine}-staging"


def staging_volume_name(staging_name: str) -> str:
    """The staging Engine's own volume: ``<staging name>-data``."""
    return f"{staging_name}-data"


def staging_labels(engine: str, snapshot: str) -> dict[str, str]:
    return {STAGING_LABEL: engine, STAGING_SNAPSHOT_LABEL: snapshot}


def staging_of(labels: Mapping[str, str] | None) -> str | None:
    """The production Engine a container or volume is the staging copy of, or ``None`` if it is none."""
    value = (labels or {}).get(STAGING_LABEL)
    return value or None


def brain_destination(attrs: Mapping[str, Any]) -> str:
    """Where the brain's volume is mounted in the container; the brain's folder when it is on no mount."""
    mount = brain_mount(dict(attrs))
    if mount and mount.get("Destination"):
        return str(mount["Destination"])
    return posixpath.dirname(brain_path_of(dict(attrs)))


def _without_address(endpoint: Mapping[str, Any]) -> dict[str, Any]:
    """Endpoint settings without aliases and static addresses: those belong to production."""
    return {k: v for k, v in endpoint.items() if k not in ("Aliases", "IPAMConfig")}


def staging_spec(prod_attrs: Mapping[str, Any], prod_image_attrs: Mapping[str, Any] | None, image: str, *,
                 staging_name: str, volume: str, snapshot: str, env: Mapping[str, Any] | None = None) -> ContainerSpec:
    """The create body of the staging Engine of the production container ``prod_attrs``.

    What an upgrade to ``image`` would keep (:func:`derive_spec`), then: the
    brain's mount on ``volume``; port 8000 published on 127.0.0.1 with a host
    port Docker chooses, and no other port; no restart policy; no network
    aliases, static addresses or chosen hostname; no previous-image or compose
    labels; the staging labels. Networks ``host``, ``none`` and
    ``container:...`` become the default bridge (a staging Engine must be
    reachable and must not take production's port).
    """
    engine = str(prod_attrs.get("Name") or "").lstrip("/")
    spec = derive_spec(prod_attrs, prod_image_attrs, image, env=env, name=staging_name, record_previous=False)
    body = copy.deepcopy(spec.config)
    labels = {k: v for k, v in (body.get("Labels") or {}).items()
              if k != PREVIOUS_IMAGE_LABEL and not k.startswith(COMPOSE_LABEL_PREFIX)}
    labels.update(staging_labels(engine, snapshot))
    body["Labels"] = labels
    body.pop("Hostname", None)
    port = f"{ENGINE_PORT}/tcp"
    body["ExposedPorts"] = {**(body.get("ExposedPorts") or {}), port: {}}

    host = body["HostConfig"]
    destination = brain_destination(prod_attrs)
    binds = [b for b in host.get("Binds") or [] if _bind_destination(b) != destination]
    mounts = [m for m in host.get("Mounts") or [] if m.get("Target") != destination]
    binds.append(f"{volume}:{destination}")
    host["Binds"] = binds
    if mounts:
        host["Mounts"] = mounts
    else:
        host.pop("Mounts", None)
    host["PortBindings"] = {port: [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    host["PublishAllPorts"] = False
    host["RestartPolicy"] = {"Name": "no", "MaximumRetryCount": 0}
    host["AutoRemove"] = False

    mode = str(host.get("NetworkMode") or "default")
    extra = {net: _without_address(ep) for net, ep in spec.extra_networks.items()}
    if mode in _SPECIAL_NETWORK_MODES or mode.startswith("container:"):
        host["NetworkMode"] = "default"
        body.pop("NetworkingConfig", None)
        extra = {}
    elif body.get("NetworkingConfig"):
        endpoints = {net: _without_address(ep) for net, ep in body["NetworkingConfig"]["EndpointsConfig"].items()}
        body["NetworkingConfig"] = {"EndpointsConfig": {n: ep for n, ep in endpoints.items() if ep}}
        if not body["NetworkingConfig"]["EndpointsConfig"]:
            body.pop("NetworkingConfig")

    kept = dict(spec.kept)
    kept["labels"] = sorted(labels)
    kept["staging"] = {"volume": f"{volume}:{destination}", "port": f"127.0.0.1::{ENGINE_PORT}",
                       "restart_policy": "no", "network_mode": host.get("NetworkMode") or "default"}
    return ContainerSpec(name=staging_name, image=image, config=body, extra_networks=extra, kept=kept,
                         from_image=spec.from_image)


@dataclass
class Plan:
    """What :func:`plan_present` or :func:`plan_absent` decided."""

    remove_container: bool = False
    remove_volume: bool = False
    create: bool = False
    reasons: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.remove_container or self.remove_volume or self.create


def _refuse(kind: str, name: str, labels: Mapping[str, str] | None, engine: str, doing: str) -> None:
    """Raise unless ``labels`` make ``name`` the staging copy of ``engine``."""
    owner = staging_of(labels)
    if owner is None:
        raise StagingError(
            f"Cannot {doing}: {kind} {name} exists and is not a staging Engine (it has no label {STAGING_LABEL}); "
            f"it may be a production Engine, so it is left alone. Choose another staging_name, or remove {name} by hand "
            "if it is really a leftover"
        )
    if owner != engine:
        raise StagingError(
            f"Cannot {doing}: {kind} {name} is the staging Engine of {owner}, not of {engine}; choose another "
            "staging_name"
        )


def plan_present(engine: str, staging_name: str, image: str, snapshot: str, env: Mapping[str, Any] | None,
                 container_attrs: Mapping[str, Any] | None, volume_labels: Mapping[str, str] | None,
                 volume_exists: bool) -> Plan:
    """Whether to (re)create the staging Engine; raises :class:`StagingError` on a name taken by anything else.

    A staging container of ``engine`` on ``image``, from ``snapshot``, with
    ``env``, running, is kept. Any other staging container of ``engine``
    is replaced with its volume (a fresh copy of the brain).
    """
    doing = f"stage {engine} on {image} as {staging_name}"
    volume = staging_volume_name(staging_name)
    plan = Plan(create=True)
    if container_attrs is not None:
        config = container_attrs.get("Config") or {}
        _refuse("container", staging_name, config.get("Labels"), engine, doing)
        state = container_attrs.get("State") or {}
        if not same_image_name(config.get("Image"), image):
            plan.reasons.append(f"it runs {config.get('Image')}, not {image}")
        if (config.get("Labels") or {}).get(STAGING_SNAPSHOT_LABEL) != snapshot:
            plan.reasons.append(f"it was made from snapshot {(config.get('Labels') or {}).get(STAGING_SNAPSHOT_LABEL)}, "
                                f"not {snapshot}")
        changed_env = env_changes(container_attrs, env)
        if changed_env:
            plan.reasons.append(f"env {', '.join(changed_env)} differs")
        if not state.get("Running") or state.get("Restarting"):
            plan.reasons.append(f"it is {state.get('Status') or 'not running'}")
        if not plan.reasons:
            return Plan()
        plan.remove_container = True
    if volume_exists:
        _refuse("volume", volume, volume_labels, engine, doing)
        plan.remove_volume = True
        if container_attrs is None:
            plan.reasons.append(f"volume {volume} was left by an earlier staging")
    return plan


def plan_absent(engine: str, staging_name: str, container_attrs: Mapping[str, Any] | None,
                volume_labels: Mapping[str, str] | None, volume_exists: bool) -> Plan:
    """What removing the staging Engine removes; raises :class:`StagingError` before anything that is not one."""
    doing = f"remove the staging Engine {staging_name} of {engine}"
    plan = Plan()
    if container_attrs is not None:
        _refuse("container", staging_name, (container_attrs.get("Config") or {}).get("Labels"), engine, doing)
        plan.remove_container = True
    if volume_exists:
        _refuse("volume", staging_volume_name(staging_name), volume_labels, engine, doing)
        plan.remove_volume = True
    return plan


def staging_view(facts: EngineFacts | None, *, name: str, volume: str, image: str | None = None,
                 snapshot: str | None = None) -> dict[str, Any]:
    """The staging Engine as the module returns it: names and addresses, env names only (never values)."""
    if facts is None:
        return {"name": name, "id": None, "state": "absent", "running": False, "image": image, "url": None,
                "volume": volume, "snapshot": snapshot, "engine": None, "env_names": []}
    return {"name": facts.name, "id": facts.id, "state": facts.state, "running": facts.running, "image": facts.image,
            "url": facts.engine_url(), "volume": facts.volume or volume,
            "snapshot": facts.labels.get(STAGING_SNAPSHOT_LABEL), "engine": staging_of(facts.labels),
            "env_names": list(facts.env_names)}


# --------------------------------------------------------------------------
# Docker side
# --------------------------------------------------------------------------


def _explain(exc: BaseException) -> str:
    return str(getattr(exc, "explanation", None) or exc).strip()


class StagingDocker:
    """Create and remove staging Engines on the Docker daemon of ``transfer``."""

    def __init__(self, transfer: BrainTransfer) -> None:
        self.transfer = transfer
        self.client = transfer.docker.client
        self.actions: list[str] = []

    def container_attrs(self, name: str) -> dict[str, Any] | None:
        try:
            return self.client.api.inspect_container(name)
        except (APIError, DockerException) as exc:
            if type(exc).__name__ == "NotFound":
                return None
            raise StagingError(f"Cannot inspect container {name}: {_explain(exc)}") from None

    def volume_labels(self, name: str) -> tuple[bool, dict[str, str]]:
        """Whether volume ``name`` exists, and its labels."""
        try:
            attrs = self.client.api.inspect_volume(name)
        except (APIError, DockerException) as exc:
            if type(exc).__name__ == "NotFound":
                return False, {}
            raise StagingError(f"Cannot inspect volume {name}: {_explain(exc)}") from None
        return True, dict(attrs.get("Labels") or {})

    def remove(self, container: str | None, volume: str | None) -> None:
        """Remove the container (forced: it is a throwaway) and then its volume."""
        try:
            if container:
                self.client.api.remove_container(container, force=True)
                self.actions.append(f"removed container {container}")
            if volume:
                self.client.api.remove_volume(volume)
                self.actions.append(f"removed volume {volume}")
        except (APIError, DockerException) as exc:
            raise StagingError(f"Cannot remove {container or volume}: {_explain(exc)}",
                               partial={"actions": list(self.actions)}) from None

    def seed(self, facts: EngineFacts, snapshot_db: str, sha256: str, deadline: Deadline) -> dict[str, Any]:
        """Upload the snapshot as the staging Engine's brain, owned by the user the Engine runs as."""
        with self.transfer.helper(facts) as helper:
            ids = [self.transfer.run(helper, ["id", flag], deadline) for flag in ("-u", "-g")]
            owner = Owner(mode=0o644)
            if all(out.ok and out.stdout.strip().isdigit() for out in ids):
                owner = Owner(uid=int(ids[0].stdout.strip()), gid=int(ids[1].stdout.strip()), mode=0o644)
            return self.transfer.swap_in(helper, facts.brain_path, snapshot_db, sha256, owner, deadline)

    def create(self, spec: ContainerSpec, volume: str, labels: dict[str, str], snapshot_db: str, sha256: str,
               deadline: Deadline) -> dict[str, Any]:
        """Volume, container, brain, networks, start; the started container's inspect. Undone on any failure."""
        made_container = made_volume = None
        try:
            self.client.api.create_volume(volume, labels=labels)
            made_volume = volume
            self.actions.append(f"created volume {volume}")
            created = self.client.api.create_container_from_config(spec.config, name=spec.name)
            made_container = created["Id"]
            self.actions.append(f"created container {spec.name} on {spec.image}")
            facts = facts_from_inspect(self.client.api.inspect_container(made_container))
            seeded = self.seed(facts, snapshot_db, sha256, deadline)
            self.actions.append(f"copied the snapshot into {volume} as {facts.brain_path} (sha256 {seeded['sha256']})")
            for net, endpoint in spec.extra_networks.items():
                self.client.api.connect_container_to_network(made_container, net, links=None,
                                                             driver_opt=endpoint.get("DriverOpts"))
                self.actions.append(f"connected {spec.name} to network {net}")
            self.client.api.start(made_container)
            self.actions.append(f"started {spec.name}")
            return self.client.api.inspect_container(made_container)
        except (APIError, DockerException, BrainCopyError) as exc:
            done = list(self.actions)
            undo = StagingDocker(self.transfer)
            try:
                undo.remove(made_container, made_volume)
                undone = "; ".join(undo.actions) or "nothing to undo"
            except StagingError as cleanup:
                undone = f"{'; '.join(undo.actions)}; could NOT finish: {cleanup}"
            raise StagingError(
                f"Cannot create the staging Engine {spec.name} on {spec.image}: {_explain(exc)}. Undone: {undone}",
                partial={"actions": done, "undo": undo.actions},
            ) from None
