# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""One Engine's container, on the Docker SDK.

:func:`docker_client` is the one place that turns the Docker connection
options (community.docker's names: ``docker_host``, ``tls``,
``validate_certs``, ``ca_path``, ``client_cert``, ``client_key``,
``tls_hostname``, ``api_version``, ``use_ssh_client``) into a connected
``docker.DockerClient``. :class:`EngineDocker` finds an Engine's container
by name and reads the facts the collection needs (state, image, version
from the tag, published port, brain volume and path, the image it
replaced). Env var *names* are reported, never their values.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ansible.module_utils.parsing.convert_bool import BOOLEANS_FALSE, BOOLEANS_TRUE

from ansible_collections.engineops.fleet.plugins.module_utils._version import VersionError, version_from_image

DOCKER_IMPORT_ERROR: str | None
DOCKER_IMPORT_TRACEBACK: str | None
DOCKER_SDK_VERSION: str | None
REQUESTS_VERSION: str | None
try:
    import docker
    from docker.errors import APIError, DockerException, NotFound, TLSParameterError
    from docker.tls import TLSConfig
    from requests import __version__ as REQUESTS_VERSION
    from requests.adapters import HTTPAdapter
except ImportError as _exc:  # pragma: no cover - exercised only without docker
    HAS_DOCKER = False
    DOCKER_SDK_VERSION = None
    REQUESTS_VERSION = None
    DOCKER_IMPORT_ERROR = str(_exc)
    DOCKER_IMPORT_TRACEBACK = traceback.format_exc()

    class DockerException(Exception):  # type: ignore[no-redef]
        pass

    class APIError(DockerException):  # type: ignore[no-redef]
        pass

    class NotFound(APIError):  # type: ignore[no-redef]
        pass

    class TLSParameterError(DockerException):  # type: ignore[no-redef]
        pass
else:
    HAS_DOCKER = True
    DOCKER_SDK_VERSION = docker.__version__
    DOCKER_IMPORT_ERROR = None
    DOCKER_IMPORT_TRACEBACK = None

# The oldest Docker SDK for Python the collection works with: what Debian 12 and
# Ubuntu 24.04 ship as python3-docker.
MIN_DOCKER_SDK = (5, 0, 3)
# requests 2.32 broke the SDK's unix socket and SSH transports ("Not supported URL
# scheme http+docker") until docker 7.1.
REQUESTS_BREAKING_OLD_SDK = (2, 32)
FIXED_SDK = (7, 1)

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
ENGINE_PORT = 8000
DATA_DIR = "/data"
DEFAULT_BRAIN_PATH = "/data/brain.sqlite"
BRAIN_PATH_ENV = "SQLITE_DB_PATH"
PREVIOUS_IMAGE_LABEL = "io.engineops.fleet.previous-image"


class EngineDockerError(Exception):
    """The Docker daemon or an Engine's container cannot be used as asked."""


# The Docker connection options, with the environment variable each falls back to
# (the Docker CLI's and community.docker's) and its default.
DOCKER_OPTION_ENV: dict[str, tuple[str | None, Any]] = {
    "docker_host": ("DOCKER_HOST", DEFAULT_DOCKER_HOST),
    "tls": ("DOCKER_TLS", False),
    "validate_certs": ("DOCKER_TLS_VERIFY", False),
    "ca_path": (None, None),
    "client_cert": (None, None),
    "client_key": (None, None),
    "tls_hostname": ("DOCKER_TLS_HOSTNAME", None),
    "api_version": ("DOCKER_API_VERSION", "auto"),
    "use_ssh_client": (None, False),
}
# Files of DOCKER_CERT_PATH used when the option is not set.
CERT_PATH_FILES = {"ca_path": "ca.pem", "client_cert": "cert.pem", "client_key": "key.pem"}
BOOL_OPTIONS = ("tls", "validate_certs", "use_ssh_client")


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in BOOLEANS_TRUE:
        return True
    if text in BOOLEANS_FALSE or text == "":
        return False
    raise EngineDockerError(f"{name}={value!r} is not a boolean; use true or false")


@dataclass(frozen=True)
class DockerConnection:
    """Where and how to reach one Docker daemon: the options resolved against the environment."""

    base_url: str
    api_version: str = "auto"
    tls: bool = False  # TLS at all (``tls`` or ``validate_certs``)
    verify: bool = False  # check the daemon's certificate (``validate_certs``)
    ca_path: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    tls_hostname: str | None = None
    use_ssh_client: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> "DockerConnection":
        """Resolve the options: a value given wins, then its environment variable, then the default.

        ``ca_path``, ``client_cert`` and ``client_key`` fall back to
        ``ca.pem``, ``cert.pem`` and ``key.pem`` of ``DOCKER_CERT_PATH``.
        ``tcp://`` becomes ``https://`` when TLS is on.
        """
        environ = os.environ if environ is None else environ
        unknown = sorted(set(options) - set(DOCKER_OPTION_ENV))
        if unknown:
            raise EngineDockerError(f"Unknown Docker connection option(s) {', '.join(unknown)}; "
                                    f"known: {', '.join(DOCKER_OPTION_ENV)}")
        values: dict[str, Any] = {}
        for name, (env_name, default) in DOCKER_OPTION_ENV.items():
            value = options.get(name)
            if value is None and env_name and environ.get(env_name) is not None:
                value = environ[env_name]
            if value is None and name in CERT_PATH_FILES and environ.get("DOCKER_CERT_PATH"):
                value = os.path.join(environ["DOCKER_CERT_PATH"], CERT_PATH_FILES[name])
            if value is None:
                value = default
            values[name] = _as_bool(name, value) if name in BOOL_OPTIONS else value
        host = str(values["docker_host"] or DEFAULT_DOCKER_HOST)
        if "://" not in host and not host.startswith("/"):
            raise EngineDockerError(f"docker_host={host!r} is not a URL; use e.g. unix:///var/run/docker.sock, "
                                    "tcp://host:2376 or ssh://user@host")
        use_tls = values["tls"] or values["validate_certs"]
        if use_tls and host.startswith("tcp://"):
            host = "https://" + host[len("tcp://"):]
        if bool(values["client_cert"]) != bool(values["client_key"]):
            given, missing = ("client_cert", "client_key") if values["client_cert"] else ("client_key", "client_cert")
            raise EngineDockerError(f"{given} is set but {missing} is not; a client certificate needs both "
                                    "(or DOCKER_CERT_PATH with cert.pem and key.pem)")
        return cls(
            base_url=host,
            api_version=str(values["api_version"] or "auto"),
            tls=bool(use_tls),
            verify=bool(values["validate_certs"]),
            ca_path=values["ca_path"] if values["validate_certs"] else None,
            client_cert=values["client_cert"],
            client_key=values["client_key"],
            tls_hostname=values["tls_hostname"],
            use_ssh_client=values["use_ssh_client"],
        )

    @property
    def scheme(self) -> str:
        return urlsplit(self.base_url).scheme if "://" in self.base_url else "unix"

    def tls_config(self) -> "_PinnedTLSConfig | None":
        """The SDK's TLS settings, or None for a plain connection."""
        if not self.tls or self.scheme != "https":
            return None
        cert = (self.client_cert, self.client_key) if self.client_cert else None
        for label, path in (("client_cert", self.client_cert), ("client_key", self.client_key),
                            ("ca_path", self.ca_path)):
            if path and not os.path.isfile(path):
                raise EngineDockerError(f"{label} {path!r} is not a file on this host; give the path of the PEM "
                                        "file on the host that runs the module")
        try:
            return _PinnedTLSConfig(self.tls_hostname, client_cert=cert, ca_cert=self.ca_path, verify=self.verify)
        except TLSParameterError as exc:
            raise EngineDockerError(f"Invalid TLS settings for {self.base_url}: {exc}") from None

    def client_kwargs(self, timeout: float = 60) -> dict[str, Any]:
        """The keyword arguments of ``docker.DockerClient`` for this connection."""
        kwargs: dict[str, Any] = {"base_url": self.base_url, "version": self.api_version, "timeout": int(timeout)}
        tls = self.tls_config()
        if tls is not None:
            kwargs["tls"] = tls
        if self.use_ssh_client:
            kwargs["use_ssh_client"] = True
        return kwargs

    def describe_error(self, exc: BaseException) -> str:
        """What went wrong reaching the daemon, and what would fix it."""
        text = str(exc)
        lowered = text.lower()
        where = f"the Docker daemon at {self.base_url}"
        if "certificate verify failed" in lowered or "hostname" in lowered and "match" in lowered:
            return (f"Cannot verify the TLS certificate of {where}: {text}. Give ca_path (the CA that signed the "
                    "daemon's certificate), tls_hostname if the certificate names another host, or tls=true with "
                    "validate_certs=false to skip the check")
        if "certificate required" in lowered or "bad certificate" in lowered or "unknown ca" in lowered \
                or "certificate unknown" in lowered:
            held = f"client certificate {self.client_cert}" if self.client_cert else "no client certificate"
            return (f"{where} refused the TLS connection ({held}): {text}. Give client_cert and client_key signed by "
                    "the CA the daemon trusts (its --tlscacert), or DOCKER_CERT_PATH with cert.pem and key.pem")
        if "http request to an https server" in lowered:
            return (f"{where} speaks TLS: set tls=true or validate_certs=true (with ca_path, client_cert and "
                    f"client_key as the daemon requires). The error was: {text}")
        if "wrong version number" in lowered or "record layer failure" in lowered:
            return f"{where} does not speak TLS: set tls and validate_certs to false. The error was: {text}"
        if "paramiko" in lowered:
            return (f"Cannot reach {where}: {text}. Install paramiko on the host that runs the module, or set "
                    "use_ssh_client=true to use the ssh command")
        return (f"Cannot reach {where}: {text}. Start dockerd, or set docker_host (or DOCKER_HOST) to the "
                "daemon's socket, e.g. unix:///var/run/docker.sock, tcp://host:2376 or ssh://user@host")


class _PinnedTLSAdapter(HTTPAdapter if HAS_DOCKER else object):  # type: ignore[misc]
    """HTTPS to the Docker daemon with exactly the TLS settings given.

    requests lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` of the
    environment override the SDK's ``Session.verify`` (and so its CA or its
    ``verify=False``); this adapter sets ``verify`` and ``cert`` on every
    request, and checks the certificate against ``tls_hostname`` when set.
    """

    def __init__(self, verify: bool | str, cert: tuple[str, str] | None, tls_hostname: str | None) -> None:
        self.pinned_verify = verify
        self.pinned_cert = cert
        self.tls_hostname = tls_hostname
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self.tls_hostname:
            kwargs["assert_hostname"] = self.tls_hostname
        super().init_poolmanager(*args, **kwargs)

    def send(self, request: Any, **kwargs: Any) -> Any:
        kwargs["verify"] = self.pinned_verify
        kwargs["cert"] = self.pinned_cert
        return super().send(request, **kwargs)


class _PinnedTLSConfig(TLSConfig if HAS_DOCKER else object):  # type: ignore[misc]
    """The SDK's TLS settings, applied through :class:`_PinnedTLSAdapter` (the SDK calls this before its first request)."""

    def __init__(self, tls_hostname: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tls_hostname = tls_hostname

    def configure_client(self, client: Any) -> None:
        super().configure_client(client)
        client.mount("https://", _PinnedTLSAdapter(client.verify, client.cert, self.tls_hostname))


def docker_client(options: Mapping[str, Any], timeout: float = 60) -> "docker.DockerClient":
    """A connected ``docker.DockerClient`` for the Docker connection options in ``options``.

    Options not given (or None) fall back to their environment variables and
    defaults as :meth:`DockerConnection.from_options` says. The daemon is
    pinged; any failure raises :class:`EngineDockerError` saying what to fix.
    """
    if not HAS_DOCKER:
        raise EngineDockerError(f"The Python library docker is required: {DOCKER_IMPORT_ERROR}")
    conn = DockerConnection.from_options(options)
    kwargs = conn.client_kwargs(timeout)
    client = None
    try:
        client = docker.DockerClient(**kwargs)
        client.ping()
    except Exception as exc:  # the SDK raises DockerException, requests' and paramiko's errors alike
        if client is not None:
            client.close()
        raise EngineDockerError(conn.describe_error(exc)) from None
    return client


def _version_tuple(version: str | None) -> tuple[int, ...]:
    """The leading numbers of a version string: ``"7.2.0.dev0"`` -> (7, 2, 0); () if there are none."""
    parts = []
    for piece in str(version or "").split(".")[:3]:
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def docker_sdk_problem(version: str | None, python: str, requests_version: str | None = None) -> str | None:
    """Why the Docker SDK ``version`` (with ``requests_version``) of interpreter ``python`` will not do, or None."""
    wanted = ".".join(map(str, MIN_DOCKER_SDK))
    found = _version_tuple(version)
    how = ("Install the distribution's python3-docker and python3-requests (Debian 12 and Ubuntu 24.04 ship a "
           "working pair), or make a virtualenv with pip install 'docker>=7.1' requests and set "
           "ansible_python_interpreter to its python; the playbook engineops.fleet.host does either")
    if len(found) < 2 or found + (0,) * (3 - len(found)) < MIN_DOCKER_SDK:
        return (f"The Docker SDK for Python (docker) of {python} is {version or 'of an unknown version'}; "
                f"engineops.fleet needs {wanted} or newer. {how}")
    if found < FIXED_SDK and _version_tuple(requests_version) >= REQUESTS_BREAKING_OLD_SDK:
        return (f"The Docker SDK for Python (docker) {version} of {python} does not work with its requests "
                f"{requests_version} (2.32 and newer need docker 7.1 or newer). Upgrade docker to 7.1+, or use "
                f"requests older than 2.32. {how}")
    return None


def log_since(since: float | None) -> int | None:
    """``since`` (epoch seconds) as every supported SDK takes it for ``logs()``: whole seconds, None for all.

    The Docker SDK before 7 refuses a float ("since value should be datetime
    or positive int"); rounding down starts the window at most a second early.
    """
    if since is None or since <= 0:
        return None
    return int(since)


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
    """The Docker daemon the connection options name, seen from one Engine's side."""

    def __init__(self, options: Mapping[str, Any] | None = None, timeout: float = 60) -> None:
        options = options or {}
        self.docker_host = DockerConnection.from_options(options).base_url
        self.client = docker_client(options, timeout=timeout)

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
        raw = self.container(name).logs(stdout=True, stderr=True, since=log_since(since), tail=tail)
        return raw.decode("utf-8", errors="replace").splitlines()
