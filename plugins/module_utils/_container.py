# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Move an Engine's container to another image and keep everything else.

The old container's ``docker inspect`` mixes two things: what the container
was created with (env, mounts, ports, labels, restart policy, networks,
command, limits) and what its *image* set (``ENV``, ``LABEL``, ``CMD``,
``ENTRYPOINT``, ``WORKDIR``, ``EXPOSE``, ``VOLUME``, ``STOPSIGNAL``,
``HEALTHCHECK``, ``USER``). The reference Engine, like many, bakes its
behaviour knobs into its image's ``ENV``: carrying those over would pin the
new image to the old one's defaults. :func:`derive_spec` (pure, over inspect
dicts) keeps only what differs from the old image's config, so the new image
supplies its own defaults; :func:`ensure_image` pulls first (by policy);
:class:`Swapper` creates the new container while the old one still runs,
then stops the old one, renames it aside, gives the new one the name,
starts it, waits until it is healthy and removes the old one, and undoes
all of that if the new one cannot be created, named or started.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

from ansible_collections.engineops.fleet.plugins.module_utils._docker import PREVIOUS_IMAGE_LABEL
from ansible_collections.engineops.fleet.plugins.module_utils._version import parse_image_ref

PULL_POLICIES = ("always", "missing", "never")
ASIDE_INFIX = "-previous-"
NEXT_INFIX = "-next-"
# Networks that take no endpoint settings (aliases, static addresses) and no second network.
_SPECIAL_NETWORK_MODES = ("host", "none")
_DEFAULT_BRIDGE = ("default", "bridge")
# Container-config keys the image sets and the container inherits, compared one by one with the old image.
_IMAGE_SCALARS = ("User", "WorkingDir", "StopSignal", "Shell")
# Container-config keys only a container has: kept as they are.
_CONTAINER_ONLY = (
    "Domainname",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "StopTimeout",
    "MacAddress",
    "NetworkDisabled",
)
_ASIDE_RE_TEMPLATE = r"^{name}" + re.escape(ASIDE_INFIX) + r"[0-9a-f]{{12}}$"


class ContainerError(Exception):
    """A swap could not be planned or done. ``partial`` says what was done (and undone)."""

    def __init__(self, message: str, partial: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.partial = partial or {}


class ImageUnavailableError(ContainerError):
    """The target image cannot be had under the pull policy (nothing was touched)."""


# --------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------


def normalize_image(image: str) -> str:
    """``image`` in a canonical spelling: Docker Hub's implicit ``docker.io/library/`` removed.

    ``september-engine:2.3.0``, ``library/september-engine:2.3.0`` and
    ``docker.io/library/september-engine:2.3.0`` are the same image.
    """
    text = image.strip()
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    if text.startswith("library/") and text.count("/") == 1:
        text = text[len("library/"):]
    return text


def same_image_name(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return normalize_image(a) == normalize_image(b)


def aside_name(name: str, container_id: str) -> str:
    """The name the old container is renamed to while its successor is created: ``<name>-previous-<short id>``."""
    return f"{name}{ASIDE_INFIX}{container_id[:12]}"


def is_aside_name(candidate: str, name: str) -> bool:
    return re.match(_ASIDE_RE_TEMPLATE.format(name=re.escape(name)), candidate.lstrip("/")) is not None


def env_to_dict(env: Sequence[str] | None) -> dict[str, str | None]:
    """``["K=V", ...]`` as a dict; an entry without ``=`` maps to ``None``."""
    pairs: dict[str, str | None] = {}
    for item in env or []:
        key, sep, value = item.partition("=")
        pairs[key] = value if sep else None
    return pairs


def env_value(value: Any, key: str) -> str:
    """An ``env`` option value as the string Docker needs; booleans are refused as ambiguous."""
    if isinstance(value, bool):
        raise ContainerError(
            f"env {key}: the boolean {value!r} is ambiguous (true, True or 1?); quote the value, e.g. {key}: 'true'"
        )
    if value is None:
        raise ContainerError(f"env {key}: no value; give a string (quote it), or leave {key} out")
    if isinstance(value, (dict, list)):
        raise ContainerError(f"env {key}: a {type(value).__name__} cannot be an environment value; give a string")
    return str(value)


def check_env(env: Mapping[str, Any] | None) -> None:
    """Raise :class:`ContainerError` naming the first ``env`` option entry that cannot be a variable."""
    for key, value in (env or {}).items():
        if not key or "=" in key:
            raise ContainerError(f"env name {key!r} is not a valid variable name (no '=', not empty)")
        env_value(value, key)


def env_changes(container_attrs: Mapping[str, Any], env: Mapping[str, Any] | None) -> list[str]:
    """Names of ``env`` entries the container does not have with that value (sorted)."""
    if not env:
        return []
    current = env_to_dict((container_attrs.get("Config") or {}).get("Env"))
    return sorted(k for k, v in env.items() if current.get(k) != env_value(v, k))


def image_config(image_attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``Config`` of an image inspect (older daemons only filled ``ContainerConfig``)."""
    if not image_attrs:
        return {}
    return dict(image_attrs.get("Config") or image_attrs.get("ContainerConfig") or {})


def _links_for_create(links: Sequence[str] | None) -> list[str] | None:
    """Inspect shows links as ``/other:/me/alias``; create wants ``other:alias``."""
    if not links:
        return None
    out = []
    for link in links:
        target, dummy, alias = link.partition(":")
        out.append(f"{target.lstrip('/')}:{alias.rsplit('/', 1)[-1]}" if alias else target.lstrip("/"))
    return out


def _bind_destination(bind: str) -> str:
    parts = bind.split(":")
    return parts[1] if len(parts) >= 2 else parts[0]


@dataclass
class ContainerSpec:
    """What to create the new container with, and what was kept or left to the new image."""

    name: str
    image: str
    config: dict[str, Any]  # the body of POST /containers/create, HostConfig and NetworkingConfig included
    extra_networks: dict[str, dict[str, Any]] = field(default_factory=dict)  # connected after create
    kept: dict[str, Any] = field(default_factory=dict)  # names only: what came from the old container
    from_image: dict[str, Any] = field(default_factory=dict)  # names only: what is left to the new image

    def summary(self) -> dict[str, Any]:
        return {"kept": self.kept, "left_to_image": self.from_image}


def _endpoint(settings: Mapping[str, Any], old_id: str, allow_aliases: bool) -> dict[str, Any]:
    endpoint: dict[str, Any] = {}
    if allow_aliases:
        aliases = [a for a in settings.get("Aliases") or [] if a and a != old_id[:12] and a != old_id]
        if aliases:
            endpoint["Aliases"] = aliases
    ipam = {k: v for k, v in (settings.get("IPAMConfig") or {}).items() if v}
    if ipam:
        endpoint["IPAMConfig"] = ipam
    links = _links_for_create(settings.get("Links"))
    if links:
        endpoint["Links"] = links
    if settings.get("DriverOpts"):
        endpoint["DriverOpts"] = dict(settings["DriverOpts"])
    return endpoint


def derive_spec(
    container_attrs: Mapping[str, Any],
    old_image_attrs: Mapping[str, Any] | None,
    image: str,
    *,
    env: Mapping[str, Any] | None = None,
    name: str | None = None,
    record_previous: bool | None = None,
) -> ContainerSpec:
    """The create body of a container like ``container_attrs`` on ``image``.

    Kept from the container: every ``HostConfig`` setting (mounts and
    binds, port bindings, restart policy, resource limits, log config,
    network mode, capabilities, DNS...), networks with their aliases and
    static addresses, anonymous volumes (bound by name so their data
    stays), and the container-level part of env, labels, command,
    entrypoint, working dir, user, exposed ports, volumes, stop signal and
    health check: what differs from the *old image's* config. What equals
    the old image's config is left out so the new image's defaults apply.
    ``env`` is merged over the kept env. The old image's reference goes to
    label ``PREVIOUS_IMAGE_LABEL`` when the image changes
    (``record_previous``, default: when the image names differ).
    """
    config = dict(container_attrs.get("Config") or {})
    host = dict(container_attrs.get("HostConfig") or {})
    old_id = str(container_attrs.get("Id") or "")
    old_image = str(config.get("Image") or "")
    img = image_config(old_image_attrs)
    name = name or str(container_attrs.get("Name") or "").lstrip("/")
    kept: dict[str, Any] = {}
    from_image: dict[str, Any] = {}
    body: dict[str, Any] = {"Image": image}

    # Env: only what the container itself set (differs from the old image's entry), then the env option.
    image_env = set(img.get("Env") or [])
    container_env = list(config.get("Env") or [])
    own_env = [e for e in container_env if e not in image_env]
    merged = env_to_dict(own_env)
    for key, value in (env or {}).items():
        merged[key] = env_value(value, key)
    body["Env"] = [k if v is None else f"{k}={v}" for k, v in merged.items()]
    kept["env"] = sorted(env_to_dict(own_env))
    from_image["env"] = sorted({e.partition("=")[0] for e in container_env if e in image_env} - set(merged))
    if env:
        kept["env_option"] = sorted(env)

    # Labels: the container's own, plus the image it replaces.
    image_labels = img.get("Labels") or {}
    labels = {k: v for k, v in (config.get("Labels") or {}).items() if k not in image_labels or image_labels[k] != v}
    from_image["labels"] = sorted(k for k, v in (config.get("Labels") or {}).items() if k not in labels)
    if record_previous is None:
        record_previous = not same_image_name(old_image, image)
    if record_previous and old_image:
        labels[PREVIOUS_IMAGE_LABEL] = old_image
    body["Labels"] = labels
    kept["labels"] = sorted(labels)

    # Command and entrypoint. Docker merges the image's Cmd only when no Entrypoint is given, so
    # an overridden Entrypoint keeps its (possibly empty) Cmd as it was.
    entrypoint, cmd = config.get("Entrypoint"), config.get("Cmd")
    own_entrypoint = bool(entrypoint) and entrypoint != img.get("Entrypoint")
    if own_entrypoint:
        body["Entrypoint"] = entrypoint
        body["Cmd"] = cmd
        kept["entrypoint"] = True
        kept["cmd"] = True
    else:
        if entrypoint:
            from_image["entrypoint"] = True
        if cmd and cmd != img.get("Cmd"):
            body["Cmd"] = cmd
            kept["cmd"] = True
        elif cmd:
            from_image["cmd"] = True
    for key in _IMAGE_SCALARS:
        value = config.get(key)
        if value and value != img.get(key):
            body[key] = value
            kept[key.lower()] = True
        elif value:
            from_image[key.lower()] = True
    if config.get("Healthcheck") and config.get("Healthcheck") != img.get("Healthcheck"):
        body["Healthcheck"] = config["Healthcheck"]
        kept["healthcheck"] = True
    elif config.get("Healthcheck"):
        from_image["healthcheck"] = True

    # Hostname: Docker defaults it to the short id; keep it only when it was chosen.
    hostname = config.get("Hostname")
    if hostname and hostname not in (old_id[:12], old_id):
        body["Hostname"] = hostname
        kept["hostname"] = True
    for key in _CONTAINER_ONLY:
        if config.get(key) not in (None, "", False):
            body[key] = config[key]

    # Exposed ports and volumes the container added; ports it publishes are exposed whatever the image says.
    image_ports = img.get("ExposedPorts") or {}
    exposed = {p: {} for p in (config.get("ExposedPorts") or {}) if p not in image_ports}
    for port in host.get("PortBindings") or {}:
        exposed.setdefault(port, {})
    if exposed:
        body["ExposedPorts"] = exposed
    image_volumes = img.get("Volumes") or {}
    volumes = {v: {} for v in (config.get("Volumes") or {}) if v not in image_volumes}
    if volumes:
        body["Volumes"] = volumes

    # HostConfig: all of it, as it was (it is the container's own by definition).
    host_config = {k: v for k, v in host.items() if v is not None}
    if host.get("Links"):
        host_config["Links"] = _links_for_create(host["Links"])
    # Anonymous volumes (the image's VOLUMEs, `-v /path`) would be new and empty: bind them by name.
    binds = list(host.get("Binds") or [])
    covered = {_bind_destination(b) for b in binds}
    covered |= {m.get("Target") for m in host.get("Mounts") or []}
    carried = []
    for mount in container_attrs.get("Mounts") or []:
        if mount.get("Type") == "volume" and mount.get("Name") and mount.get("Destination") not in covered:
            binds.append(f"{mount['Name']}:{mount['Destination']}" + ("" if mount.get("RW", True) else ":ro"))
            carried.append(mount["Destination"])
    if binds:
        host_config["Binds"] = binds
    kept["host_config"] = sorted(host_config)
    if carried:
        kept["anonymous_volumes"] = carried
    body["HostConfig"] = host_config

    # Networks: the primary one at create, the others connected before start.
    networks = dict((container_attrs.get("NetworkSettings") or {}).get("Networks") or {})
    mode = str(host.get("NetworkMode") or "default")
    extra: dict[str, dict[str, Any]] = {}
    if mode not in _SPECIAL_NETWORK_MODES and not mode.startswith("container:"):
        primary = "bridge" if mode == "default" else mode
        if primary in networks:
            endpoint = _endpoint(networks[primary], old_id, allow_aliases=primary not in _DEFAULT_BRIDGE)
            if endpoint:
                body["NetworkingConfig"] = {"EndpointsConfig": {mode: endpoint}}
        for net, settings in networks.items():
            if net == primary:
                continue
            extra[net] = _endpoint(settings, old_id, allow_aliases=net not in _DEFAULT_BRIDGE)
    kept["networks"] = sorted(networks) if networks else [mode]
    return ContainerSpec(name=name, image=image, config=body, extra_networks=extra, kept=kept, from_image=from_image)


# --------------------------------------------------------------------------
# Docker side
# --------------------------------------------------------------------------


@dataclass
class ImageCheck:
    """The target image under the pull policy."""

    image: str
    policy: str
    present_before: bool
    pulled: bool = False  # a pull ran (or, in check mode, would run)
    changed: bool = False  # the local image is new or another one than before
    id: str | None = None
    attrs: dict[str, Any] | None = None


def _docker_errors() -> tuple[type[BaseException], ...]:
    try:
        from docker.errors import DockerException
        from requests.exceptions import RequestException
    except ImportError:  # pragma: no cover
        return (Exception,)
    return (DockerException, RequestException)


def _not_found(exc: BaseException) -> bool:
    """Docker said the image or container asked for does not exist."""
    return type(exc).__name__ in ("ImageNotFound", "NotFound")


def _explain(exc: BaseException) -> str:
    return str(getattr(exc, "explanation", None) or exc).strip()


def local_image(client: Any, image: str) -> dict[str, Any] | None:
    """The local image's inspect, or ``None`` when the Docker host does not have it."""
    try:
        return client.images.get(image).attrs
    except _docker_errors() as exc:
        if _not_found(exc):
            return None
        raise ContainerError(f"Cannot inspect image {image}: {_explain(exc)}") from None


def own_image(client: Any, container_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The inspect of the image a container was created from; :class:`ContainerError` when it is gone.

    :func:`derive_spec` needs it to tell the container's own settings from the image's defaults.
    """
    config = container_attrs.get("Config") or {}
    image_id = str(container_attrs.get("Image") or "")
    attrs = local_image(client, image_id)
    if attrs is None:
        raise ContainerError(
            f"its current image {config.get('Image')} ({image_id}) is gone from the Docker host, so the container's "
            f"own settings cannot be told from the image's defaults; pull {config.get('Image')} again and rerun"
        )
    return attrs


def ensure_image(client: Any, image: str, policy: str, *, check_mode: bool = False, owner: str = "the Engine") -> ImageCheck:
    """Make sure the Docker host has ``image`` under ``policy``; raise :class:`ImageUnavailableError` if it cannot.

    ``never``: it must be there already. ``missing``: pulled when absent.
    ``always``: pulled. In check mode nothing is pulled: the registry is
    asked whether it has the image instead.
    """
    if policy not in PULL_POLICIES:
        raise ContainerError(f"pull {policy!r} is not one of {', '.join(PULL_POLICIES)}")
    before = local_image(client, image)
    check = ImageCheck(image, policy, present_before=before is not None, id=(before or {}).get("Id"), attrs=before)
    untouched = f"{owner} was not stopped"
    if policy == "never" or (policy == "missing" and before is not None):
        if before is None:
            raise ImageUnavailableError(
                f"Cannot move {owner} to image {image}: the Docker host does not have it and pull is 'never'; "
                f"pull it first (docker pull {image}) or set pull: missing. {untouched}"
            )
        return check
    check.pulled = True
    if check_mode:
        try:
            client.images.get_registry_data(image)
        except _docker_errors() as exc:
            if before is None:
                raise ImageUnavailableError(
                    f"Cannot move {owner} to image {image}: the registry does not give it ({_explain(exc)}); "
                    f"check the tag exists. {untouched}"
                ) from None
            # 'always' with a local copy: a registry that does not answer would only keep the local image.
            check.pulled = False
        return check
    ref = parse_image_ref(image)
    repository, tag = ref.repository, (ref.digest or ref.tag)
    try:
        for line in client.api.pull(repository, tag=tag, stream=True, decode=True):
            if isinstance(line, dict) and line.get("error"):
                raise ContainerError(str(line.get("error")).strip())
    except (ContainerError,) + _docker_errors() as exc:
        raise ImageUnavailableError(
            f"Cannot move {owner} to image {image}: pulling it failed: {_explain(exc)}; check the image reference "
            f"and that the registry has that tag (docker pull {image}). {untouched}"
        ) from None
    after = local_image(client, image)
    if after is None:
        raise ImageUnavailableError(
            f"Cannot move {owner} to image {image}: the pull reported no error but the image is not on the Docker "
            f"host. {untouched}"
        )
    check.attrs = after
    check.id = after.get("Id")
    check.changed = before is None or before.get("Id") != after.get("Id")
    return check


@dataclass
class SwapTimings:
    """When each step of one Engine's swap happened (epoch seconds), and the durations an operator reads."""

    drain_started: float | None = None  # SIGTERM went to the old container (the old release stops answering ok)
    old_stopped: float | None = None
    new_created: float | None = None
    new_started: float | None = None
    healthy: float | None = None  # the first ok /health of the new container

    def to_dict(self) -> dict[str, Any]:
        def span(since: float | None, until: float | None) -> float | None:
            return None if since is None or until is None else round(until - since, 3)

        return {
            "drain_started": self.drain_started,
            "old_stopped": self.old_stopped,
            "new_created": self.new_created,
            "new_started": self.new_started,
            "healthy": self.healthy,
            "stop_seconds": span(self.drain_started, self.old_stopped),
            "switch_seconds": span(self.old_stopped, self.new_started),
            "boot_to_healthy_seconds": span(self.new_started, self.healthy),
            "outage_seconds": span(self.drain_started, self.healthy),
        }


@dataclass
class SwapResult:
    old_id: str
    old_name: str
    old_image: str
    new_id: str | None = None
    new_name: str | None = None
    aside: str | None = None
    started: bool = False
    old_removed: bool = False
    actions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    drain: Any = None  # the DrainReport, when the old container was running
    health: Any = None  # what ``wait_healthy`` returned (its ``ready`` says whether the new container got healthy)
    timings: SwapTimings = field(default_factory=SwapTimings)

    @property
    def healthy(self) -> bool | None:
        return None if self.health is None else bool(self.health.ready)

    def to_dict(self) -> dict[str, Any]:
        return {
            "old_id": self.old_id,
            "old_name": self.old_name,
            "old_image": self.old_image,
            "new_id": self.new_id,
            "new_name": self.new_name,
            "aside": self.aside,
            "started": self.started,
            "old_removed": self.old_removed,
        }


def next_name(name: str, container_id: str) -> str:
    """The name the new container is created under while the old one still runs: ``<name>-next-<old short id>``."""
    return f"{name}{NEXT_INFIX}{container_id[:12]}"


class Swapper:
    """Replace ``old`` (a docker-py container) by a container made from ``spec``, undoing on failure.

    The new container is created (under :func:`next_name`, with its extra
    networks) while the old one still runs, so that the Engine is out only
    for its own stop and boot. Then: ``stop_old`` drains the old container
    (only when it runs; it returns the drain report), the old one is renamed
    aside, the new one takes the name and is started (``start``), and
    ``wait_healthy`` (given the new container's id; it returns an outcome
    whose ``ready`` says whether the Engine got healthy) is waited for
    before the old container is removed. A failure up to and including the
    start removes the new container, renames the old one back and starts it
    again if it was running, then raises :class:`ContainerError` saying
    what happened and what was undone. A new container that starts but does
    not get healthy is not undone: the result says so (``healthy`` false)
    and deciding what to do (a rollback, a brain restore) is left to the
    caller. ``clock`` gives the epoch seconds of :class:`SwapTimings`.
    """

    def __init__(self, client: Any, old: Any, spec: ContainerSpec, *, start: bool,
                 stop_old: Callable[[Any], Any], was_running: bool,
                 wait_healthy: Callable[[str], Any] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.old = old
        self.spec = spec
        self.start = start
        self.stop_old = stop_old
        self.was_running = was_running
        self.wait_healthy = wait_healthy
        self.clock = clock
        self.old_stopped = False  # by this swap: the undo starts it again
        self.result = SwapResult(
            old_id=old.id,
            old_name=old.name,
            old_image=str((old.attrs.get("Config") or {}).get("Image") or ""),
        )

    def _fail(self, what: str, exc: BaseException | str) -> None:
        cause = exc if isinstance(exc, str) else _explain(exc)
        undone = self._undo()
        raise ContainerError(
            f"Cannot move {self.spec.name} to image {self.spec.image}: {what} failed: {cause}. Undone: "
            + ("; ".join(undone) if undone else "nothing to undo"),
            partial={"swap": self.result.to_dict(), "actions": self.result.actions, "undo": undone,
                     "timings": self.result.timings.to_dict()},
        )

    def _undo(self) -> list[str]:
        done = []
        errors = _docker_errors()
        if self.result.new_id:
            try:
                self.client.api.remove_container(self.result.new_id, force=True)
                done.append(f"removed the new container {self.result.new_id[:12]}")
            except errors as exc:
                done.append(f"could NOT remove the new container {self.result.new_id[:12]}: {_explain(exc)}")
        if self.result.aside and self.old.name != self.spec.name:
            try:
                self.old.rename(self.spec.name)
                self.old.reload()
                done.append(f"renamed {self.result.aside} back to {self.spec.name}")
            except errors as exc:
                done.append(f"could NOT rename {self.result.aside} back to {self.spec.name}: {_explain(exc)}")
        if self.old_stopped:
            try:
                self.old.start()
                done.append(f"started the old container {self.old.id[:12]} again")
            except errors as exc:
                done.append(f"could NOT start the old container {self.old.id[:12]} again: {_explain(exc)}")
        return done

    def _clear_stale_next(self, temp: str) -> None:
        """Remove a container an interrupted swap created under ``temp`` and never started."""
        errors = _docker_errors()
        try:
            stale = self.client.api.inspect_container(temp)
        except errors as exc:
            if _not_found(exc):
                return
            self._fail(f"looking for a container left under {temp}", exc)
        if (stale.get("State") or {}).get("Running"):
            self._fail(f"making room for the new container under {temp}",
                       f"a container {temp} already runs; remove or rename it (docker rm -f {temp})")
        try:
            self.client.api.remove_container(stale.get("Id") or temp, force=True)
        except errors as exc:
            self._fail(f"removing {temp}, left by an interrupted swap", exc)
        self.result.actions.append(f"removed {temp}, left created by an interrupted swap")

    def _create(self) -> None:
        errors = _docker_errors()
        res = self.result
        temp = next_name(self.spec.name, self.old.id)
        self._clear_stale_next(temp)
        try:
            created = self.client.api.create_container_from_config(self.spec.config, name=temp)
            res.new_id = created.get("Id")
            res.new_name = temp
        except errors as exc:
            self._fail(f"creating the new container on {self.spec.image}", exc)
        res.timings.new_created = self.clock()
        res.actions.append(f"created {temp} on {self.spec.image}")
        for net, endpoint in self.spec.extra_networks.items():
            ipam = endpoint.get("IPAMConfig") or {}
            links = [tuple(link.split(":", 1)) if ":" in link else (link, None) for link in endpoint.get("Links") or []]
            try:
                self.client.api.connect_container_to_network(
                    res.new_id,
                    net,
                    aliases=endpoint.get("Aliases"),
                    links=links or None,
                    ipv4_address=ipam.get("IPv4Address"),
                    ipv6_address=ipam.get("IPv6Address"),
                    link_local_ips=ipam.get("LinkLocalIPs"),
                    driver_opt=endpoint.get("DriverOpts"),
                )
            except errors as exc:
                self._fail(f"connecting the new container to network {net}", exc)
            res.actions.append(f"connected {temp} to network {net}")

    def _stop_old(self) -> None:
        res = self.result
        res.timings.drain_started = self.clock()
        try:
            res.drain = self.stop_old(self.old)
        except Exception as exc:  # noqa: BLE001 - whatever the drain raises, the new container must go
            try:
                self.old.reload()
                self.old_stopped = not (self.old.attrs.get("State") or {}).get("Running")
            except _docker_errors():
                pass  # not known to be stopped: not started again
            self._fail(f"draining {self.old.name}", str(exc))
        self.old_stopped = True
        res.timings.old_stopped = self.clock()
        res.actions.append(f"drained {self.old.name}")

    def run(self) -> SwapResult:
        errors = _docker_errors()
        res = self.result
        self._create()
        if self.was_running:
            self._stop_old()
        if self.old.name != self.spec.name and is_aside_name(self.old.name, self.spec.name):
            res.aside = self.old.name  # resumed: already aside
        else:
            target = aside_name(self.spec.name, self.old.id)
            try:
                self.old.rename(target)
                self.old.reload()
            except errors as exc:
                self._fail(f"renaming the old container to {target}", exc)
            res.aside = target
            res.actions.append(f"renamed {self.spec.name} to {target}")
        try:
            self.client.api.rename(res.new_id, self.spec.name)
        except errors as exc:
            self._fail(f"renaming the new container to {self.spec.name}", exc)
        res.actions.append(f"renamed {res.new_name} to {self.spec.name}")
        res.new_name = self.spec.name
        if self.start:
            try:
                self.client.api.start(res.new_id)
            except errors as exc:
                self._fail("starting the new container", exc)
            res.timings.new_started = self.clock()
            res.started = True
            res.actions.append(f"started {self.spec.name}")
            if self.wait_healthy is not None:
                res.health = self.wait_healthy(res.new_id)
                if res.health.ready:
                    res.timings.healthy = self.clock()
                    res.actions.append(f"{self.spec.name} is healthy")
        try:
            self.old.remove(v=False)
            res.old_removed = True
            res.actions.append(f"removed the old container {res.aside} ({self.old.id[:12]})")
        except errors as exc:
            res.warnings.append(
                f"The new {self.spec.name} is there, but the old container {res.aside} could not be removed: "
                f"{_explain(exc)}; remove it by hand (docker rm {res.aside})"
            )
        return res


def observe(client: Any, container_id: str, settle: float, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """The container's inspect ``settle`` seconds after start (0: at once)."""
    if settle > 0:
        sleep(settle)
    return client.api.inspect_container(container_id)
