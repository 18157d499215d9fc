# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""One Engine's container, on the Docker SDK.

:class:`EngineDocker` finds an Engine's container by name and reads the
facts the collection needs (state, image, version from the tag, published
port, brain volume and path, the image it replaced). Env var *names* are
reported, never their values.
"""

from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

from ansible_collections.engineops.fleet.plugins.module_utils._version import VersionError, version_from_image

DOCKER_IMPORT_ERROR: str | None
DOCKER_IMPORT_TRACEBACK: str | None
try:
    import docker
    from docker.errors import APIError, DockerException, NotFound
except ImportError as _exc:  # pragma: no cover - exercised only without docker
    HAS_DOCKER = False
    DOCKER_IMPORT_ERROR = str(_exc)
    DOCKER_IMPORT_TRACEBACK = traceback.format_exc()

    class DockerException(Exception):  # type: ignore[no-redef]
        pass

    class APIError(DockerException):  # type: ignore[no-redef]
        pass

    class NotFound(APIError):  # type: ignore[no-redef]
        pass
else:
    HAS_DOCKER = True
    DOCKER_IMPORT_ERROR = None
    DOCKER_IMPORT_TRACEBACK = None

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
ENGINE_PORT = 8000
DATA_DIR = "/data"
DEFAULT_BRAIN_PATH = "/data/brain.sqlite"
BRAIN_PATH_ENV = "SQLITE_DB_PATH"
PREVIOUS_IMAGE_LABEL = "io.engineops.fleet.previous-image"


class EngineDockerError(Exception):
    """The Docker daemon or an Engine's container cannot be used as asked."""


class EngineNotFoundError(EngineDockerError):
    """No container of that name."""


@dataclass
class EngineFacts:
    """What the container says about one Engine."""

    name: str
    id: str
    state: str  # created, running, restarting, exited, paused, dead
    running: bool
    restarting: bool
    restart_count: int
    exit_code: int | None
    started_at: str | None
    finished_at: str | None
    image: str
    image_id: str
    version: str | None
    version_error: str | None
    previous_image: str | None
    ports: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    volume: str | None = None
    volume_mountpoint: str | None = None
    brain_path: str = DEFAULT_BRAIN_PATH
    env_names: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    restart_policy: str | None = None

    def host_port(self, container_port: int = ENGINE_PORT) -> tuple[str, int] | None:
        """The (host address, port) publishing ``container_port``, if any."""
        for binding in self.ports.get(f"{container_port}/tcp") or []:
            port = binding.get("HostPort")
            if port:
                host = binding.get("HostIp") or "127.0.0.1"
                return ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host), int(port)
        return None

    def engine_url(self, container_port: int = ENGINE_PORT) -> str | None:
        """``http://<host>:<port>`` of the published Engine port, if published."""
        published = self.host_port(container_port)
        if published is None:
            return None
        host, port = published
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _env_pairs(env: list[str] | None) -> dict[str, str]:
    pairs = {}
    for item in env or []:
        key, _sep, value = item.partition("=")
        pairs[key] = value
    return pairs


def brain_path_of(attrs: dict[str, Any]) -> str:
    """The brain's path inside the container: ``SQLITE_DB_PATH`` of its env, else the default."""
    env = _env_pairs((attrs.get("Config") or {}).get("Env"))
    return env.get(BRAIN_PATH_ENV) or DEFAULT_BRAIN_PATH


def brain_mount(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The entry of ``docker inspect``'s ``Mounts`` that holds the brain (the innermost), if it is on a mount."""
    brain_path = brain_path_of(attrs)
    found = None
    for mount in attrs.get("Mounts") or []:
        destination = mount.get("Destination") or ""
        if brain_path == destination or brain_path.startswith(destination.rstrip("/") + "/"):
            if found is None or len(destination) >= len(found.get("Destination") or ""):
                found = mount  # the innermost mount holds the brain
    return found


def facts_from_inspect(attrs: dict[str, Any]) -> EngineFacts:
    """:class:`EngineFacts` from ``docker inspect`` output of a container."""
    config = attrs.get("Config") or {}
    state = attrs.get("State") or {}
    host_config = attrs.get("HostConfig") or {}
    image = config.get("Image") or ""
    try:
        version: str | None = str(version_from_image(image))
        version_error = None
    except VersionError as exc:
        version, version_error = None, str(exc)
    brain_path = brain_path_of(attrs)
    mount = brain_mount(attrs) or {}
    volume = mount.get("Name") or mount.get("Source")
    mountpoint = mount.get("Source")
    env = _env_pairs(config.get("Env"))
    status = state.get("Status") or "unknown"
    return EngineFacts(
        name=(attrs.get("Name") or "").lstrip("/"),
        id=attrs.get("Id") or "",
        state=status,
        running=bool(state.get("Running")) and not state.get("Restarting"),
        restarting=bool(state.get("Restarting")),
        restart_count=int(attrs.get("RestartCount") or 0),
        exit_code=None if status in ("running", "created") else state.get("ExitCode"),
        started_at=state.get("StartedAt"),
        finished_at=state.get("FinishedAt"),
        image=image,
        image_id=attrs.get("Image") or "",
        version=version,
        version_error=version_error,
        previous_image=(config.get("Labels") or {}).get(PREVIOUS_IMAGE_LABEL),
        ports=(attrs.get("NetworkSettings") or {}).get("Ports") or host_config.get("PortBindings") or {},
        volume=volume,
        volume_mountpoint=mountpoint,
        brain_path=brain_path,
        env_names=sorted(env),
        labels=dict(config.get("Labels") or {}),
        restart_policy=(host_config.get("RestartPolicy") or {}).get("Name") or None,
    )


class EngineDocker:
    """The Docker daemon at ``docker_host``, seen from one Engine's side."""

    def __init__(self, docker_host: str = DEFAULT_DOCKER_HOST, timeout: float = 60) -> None:
        if not HAS_DOCKER:
            raise EngineDockerError(f"The Python library docker is required: {DOCKER_IMPORT_ERROR}")
        try:
            self.client = docker.DockerClient(base_url=docker_host, timeout=int(timeout))
            self.client.ping()
        except DockerException as exc:
            raise EngineDockerError(
                f"Cannot reach the Docker daemon at {docker_host}: {exc}. Start dockerd, or set docker_host "
                "(or DOCKER_HOST) to the daemon's socket, e.g. unix:///var/run/docker.sock or tcp://host:2376"
            ) from None
        self.docker_host = docker_host

    def container(self, name: str):
        """The container called ``name``; :class:`EngineNotFoundError` if there is none."""
        try:
            return self.client.containers.get(name)
        except NotFound:
            raise EngineNotFoundError(
                f"No Engine container named {name!r} on {self.docker_host}; give the container's name "
                "as docker ps shows it (e.g. engine-042)"
            ) from None
        except APIError as exc:
            raise EngineDockerError(f"Cannot inspect container {name!r}: {exc.explanation or exc}") from None

    def facts(self, name: str) -> EngineFacts:
        return facts_from_inspect(self.container(name).attrs)

    def logs(self, name: str, since: float | None = None, tail: int | str = "all") -> list[str]:
        """The container's log lines (stdout and stderr), oldest first."""
        raw = self.container(name).logs(stdout=True, stderr=True, since=since, tail=tail)
        return raw.decode("utf-8", errors="replace").splitlines()
