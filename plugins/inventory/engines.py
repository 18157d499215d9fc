# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: engines
short_description: The Engine containers of one or more Docker hosts, grouped by version, Docker host and cohort
version_added: 0.1.0
description:
  - Lists the Engine containers on each Docker host of O(docker_hosts), one Docker API call per host, all hosts at
    once, and makes one inventory host per Engine.
  - An Engine is a container whose image repository is one of O(image_repositories) and that carries every label of
    O(labels).
  - Each Engine gets the variables C(engine_name) (the container's name), C(engine_url) (its published port
    O(engine_port) as seen from its Docker host, C(http://127.0.0.1:<port>) for a port published on every address),
    C(engine_version) (from the image tag), C(engine_image), C(engine_docker_host) (the Docker daemon as the modules
    see it from where they run), C(engine_docker_host_name), the Ansible connection variables of its Docker host and,
    with O(key_template), C(engine_key) as an unresolved template.
  - 'These variables are also available to O(compose), O(groups), O(keyed_groups) and O(hostname), but are not set on
    the host: C(engine_labels) (a dict), C(engine_state) (V(running), V(restarting), V(exited)...),
    C(engine_container_id), C(engine_image_id), C(engine_volume), C(engine_host_port), C(engine_version_error) and
    C(engine_previous_image).'
  - 'Groups, all children of O(engines_group): C(engine_version_<version>) (for example C(engine_version_2_3_0);
    C(engine_version_unknown) when the image tag is not an exact version), C(docker_host_<name>) per Docker host, and
    C(engine_canary) or C(engine_rest): the canary cohort that the P(engineops.fleet.canary_cohort#filter) filter draws
    from all the Engines of this source with O(canary_percent), the draw the upgrade playbook makes over the same
    Engines when its C(engine_canary_percent) is the same.'
  - Engine keys are never resolved by this plugin; see O(key_template). Values read from Docker (names, labels,
    images) are never templated.
  - With O(cache), the container listings are cached and the inventory is built from them again on each run, so a
    change of this file's other options takes effect at once. C(ansible-inventory --flush-cache) or the task
    C(ansible.builtin.meta) V(refresh_inventory) lists the containers again.
  - Uses a YAML configuration file whose name ends with C(.engines.yml) or C(.engines.yaml) (or is C(engines.yml)).
author:
  - engineops.fleet contributors (@engineops)
requirements:
  - docker (Python library, on the controller)
  - paramiko (Python library, on the controller) for V(ssh://) Docker hosts, also with O(docker_hosts[].use_ssh_client)
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description: The name of this plugin.
    type: str
    required: true
    choices: [engineops.fleet.engines]
  docker_hosts:
    description:
      - The Docker hosts to list Engines on, each with its Docker connection options (community.docker's names) and
        the Ansible connection variables its Engines get (how Ansible reaches that Docker host).
      - The connection options are used by this plugin on the controller; paths such as O(docker_hosts[].ca_path) are
        controller paths.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - The Docker host's name, in the group C(docker_host_<name>) and the variable C(engine_docker_host_name).
          - By default the host name of O(docker_hosts[].docker_host), V(localhost) for a socket.
        type: str
      docker_host:
        description:
          - The Docker daemon's URL, for example V(unix:///var/run/docker.sock), V(tcp://docker-a.example.com:2376)
            or V(ssh://engineops@docker-a.example.com:22).
        type: str
        required: true
      tls:
        description: Connect with TLS without verifying the daemon's certificate.
        type: bool
      validate_certs:
        description: Connect with TLS and verify the daemon's certificate against O(docker_hosts[].ca_path).
        type: bool
      ca_path:
        description: The CA certificate the daemon's certificate is checked against.
        type: path
      client_cert:
        description: The client certificate presented to the daemon.
        type: path
      client_key:
        description: The key of O(docker_hosts[].client_cert).
        type: path
      tls_hostname:
        description: The host name expected in the daemon's certificate.
        type: str
      api_version:
        description: The Docker API version, V(auto) to ask the daemon.
        type: str
      use_ssh_client:
        description: Reach an V(ssh://) daemon with the C(ssh) command (and its configuration) instead of paramiko.
        type: bool
      ansible_connection:
        description:
          - The Engines' C(ansible_connection). V(local) when the Docker host is this machine.
          - By default V(local) for a V(unix://) socket, else Ansible's default (SSH).
        type: str
      ansible_host:
        description:
          - The Engines' C(ansible_host), the address Ansible reaches the Docker host at.
          - By default the host of an V(ssh://) O(docker_hosts[].docker_host). Required for a V(tcp://) daemon
            unless O(docker_hosts[].ansible_connection=local).
        type: str
      ansible_port:
        description: The Engines' C(ansible_port); by default the port of an V(ssh://) O(docker_hosts[].docker_host).
        type: int
      ansible_user:
        description: The Engines' C(ansible_user); by default the user of an V(ssh://) O(docker_hosts[].docker_host).
        type: str
      engine_docker_host:
        description:
          - The Docker daemon as the modules see it from where they run, the Engines' C(engine_docker_host).
          - By default O(docker_hosts[].docker_host) when the Engines' connection is V(local), else the Docker host's
            own socket V(unix:///var/run/docker.sock).
          - By default with the V(local) connection, the Docker host's other connection options are passed on too, as
            the variables the roles and playbooks give the modules, C(engine_docker_<option>) (C(engine_docker_tls),
            C(engine_docker_ca_path)...).
        type: str
      vars:
        description:
          - More variables for the Engines of this Docker host, for example C(ansible_python_interpreter).
          - A C(engine_key) here must be a template, as O(key_template).
        type: dict
  docker_host_defaults:
    description:
      - Keys every item of O(docker_hosts) gets unless it sets them itself, for example V(use_ssh_client) or
        V(vars) (replaced whole, not merged, by an item's own V(vars)).
    type: dict
    default: {}
  image_repositories:
    description:
      - The image repositories of Engines, without tag. A repository without registry matches it on any registry
        (V(september-engine) matches C(registry.example.com/september-engine:2.3.0)); one with a registry matches
        only that registry.
      - Set V([]) to select by O(labels) alone.
    type: list
    elements: str
    default: [september-engine]
  labels:
    description:
      - Labels every Engine container carries, each V(key) or V(key=value); the Docker daemon filters by them.
    type: list
    elements: str
    default: []
  include_stopped:
    description: List stopped Engine containers too (by default only running, restarting and paused ones).
    type: bool
    default: false
  engine_port:
    description: The port the Engine listens on inside its container; C(engine_url) is where it is published.
    type: int
    default: 8000
  hostname:
    description:
      - A Jinja2 expression (as in O(compose)) for each Engine's inventory host name, over the variables above.
      - Use V(engine_docker_host_name ~ '-' ~ engine_name) when Engines on different Docker hosts share names.
    type: str
    default: engine_name
  key_template:
    description:
      - The Engines' C(engine_key), kept as a template that Ansible resolves only when a task needs the key, so the
        key itself is never in the inventory, its cache or C(ansible-inventory --list).
      - For one key in an environment variable (an AWX credential), V({{ lookup('ansible.builtin.env', 'ENGINE_KEY') }});
        for one key per Engine, a lookup over C(engine_name), for example
        V({{ lookup('ansible.builtin.file', '/etc/engineops/keys/' ~ engine_name) }}).
      - Must contain a template; a literal key is refused.
    type: str
  canary_percent:
    description: The share of the Engines in the group C(engine_canary), above 0 and at most 100 (at least one).
    type: float
    default: 5
  engines_group:
    description: The group every Engine is in, the parent of the other groups this plugin makes.
    type: str
    default: engines
  timeout:
    description: Seconds to wait for each Docker daemon to answer.
    type: int
    default: 60
notes:
  - An Engine whose image reference Docker no longer reports (its tag was moved to another image) shows its image id,
    so it has no version (group C(engine_version_unknown)) and matches no O(image_repositories).
"""

EXAMPLES = r"""
# engineops.engines.yml: per-user Engines on two Docker hosts reached over SSH, one key from the environment
plugin: engineops.fleet.engines
docker_hosts:
  - docker_host: ssh://engineops@docker-a.example.com
  - docker_host: ssh://engineops@docker-b.example.com:2222
    vars:
      ansible_python_interpreter: /opt/engineops/venv/bin/python3.11
docker_host_defaults:
  use_ssh_client: true
  vars:
    ansible_python_interpreter: /opt/engineops/venv/bin/python
key_template: "{{ lookup('ansible.builtin.env', 'ENGINE_KEY') }}"

# A daemon with TLS client certificates; the modules run on that host through SSH
plugin: engineops.fleet.engines
docker_hosts:
  - name: docker-c
    docker_host: tcp://docker-c.example.com:2376
    validate_certs: true
    ca_path: /etc/engineops/docker/ca.pem
    client_cert: /etc/engineops/docker/cert.pem
    client_key: /etc/engineops/docker/key.pem
    ansible_host: docker-c.example.com
    ansible_user: engineops
labels:
  - io.example.role=engine
image_repositories: []
# One key per Engine, looked up when a task needs it
key_template: "{{ lookup('ansible.builtin.file', '/etc/engineops/keys/' ~ engine_name) }}"
canary_percent: 2
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/engineops-inventory
cache_timeout: 600
keyed_groups:
  - key: engine_labels['io.example.tier'] | default('none')
    prefix: tier
groups:
  engines_restarting: engine_state == 'restarting'
"""

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ansible.errors import AnsibleError, AnsibleFilterError, AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.engineops.fleet.plugins.filter.fleet import canary_cohort
from ansible_collections.engineops.fleet.plugins.module_utils._docker import (
    DEFAULT_DOCKER_HOST,
    DOCKER_IMPORT_ERROR,
    DOCKER_OPTION_ENV,
    HAS_DOCKER,
    DockerException,
    EngineDockerError,
    EngineFacts,
    docker_client,
    facts_from_inspect,
)
from ansible_collections.engineops.fleet.plugins.module_utils._version import (
    VersionError,
    _looks_like_registry,
    parse_image_ref,
)

DOCKER_OPTIONS = tuple(DOCKER_OPTION_ENV)  # docker_host, tls, validate_certs, ca_path, ... as community.docker
CONNECTION_VARS = ("ansible_connection", "ansible_host", "ansible_port", "ansible_user")
ENTRY_KEYS = ("name", *DOCKER_OPTIONS, *CONNECTION_VARS, "engine_docker_host", "vars")
# What the plugin keeps of a container of GET /containers/json (and caches).
SUMMARY_FIELDS = ("Id", "Names", "Image", "ImageID", "State", "Labels", "Ports", "Mounts")
MOUNT_FIELDS = ("Type", "Name", "Source", "Destination")
MAX_PARALLEL_HOSTS = 32
KEY_EXAMPLE = "\"{{ lookup('ansible.builtin.env', 'ENGINE_KEY') }}\""


def require_lazy_key(value: Any, where: str) -> None:
    """Refuse a key that is not a template. The message never repeats the value: it may be the key."""
    if not isinstance(value, str) or "{{" not in value:
        raise AnsibleParserError(
            f"{where} must be a template that looks the Engine key up when a task needs it, such as {KEY_EXAMPLE}; "
            "a literal key would be stored in the inventory (and its cache) and shown by ansible-inventory --list"
        )


@dataclass(frozen=True)
class DockerHostEntry:
    """One Docker host of the configuration: how to list its containers, what its Engines' variables are."""

    name: str
    docker_options: dict[str, Any]
    host_vars: dict[str, Any]

    @property
    def docker_host(self) -> str:
        return self.docker_options["docker_host"]


def engine_connection(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The Ansible connection variables of a Docker host's Engines: as given, else what its URL implies."""
    url = raw["docker_host"]
    parts = urlsplit(url)
    try:
        url_port = parts.port
    except ValueError:
        raise AnsibleParserError(f"{where}.docker_host={url!r} has a port that is not a number") from None
    connection = {key: raw[key] for key in CONNECTION_VARS if raw.get(key) is not None}
    local = connection.get("ansible_connection") == "local"
    if parts.scheme == "ssh" and not local:
        derived = {"ansible_host": parts.hostname, "ansible_port": url_port, "ansible_user": parts.username}
        return {**{k: v for k, v in derived.items() if v is not None}, **connection}
    if parts.scheme in ("unix", "npipe") and "ansible_host" not in connection:
        return {"ansible_connection": "local", **connection}
    if "ansible_host" not in connection and not local:
        raise AnsibleParserError(
            f"{where} ({url}) needs ansible_host, the address Ansible reaches that Docker host at over SSH, "
            "or ansible_connection: local to run the modules on this machine against that daemon"
        )
    return connection


def docker_host_entry(raw: Any, index: int) -> DockerHostEntry:
    """Check one item of ``docker_hosts`` and fill in what its URL implies."""
    where = f"docker_hosts[{index}]"
    if not isinstance(raw, Mapping):
        raise AnsibleParserError(f"{where} must be a mapping with at least docker_host, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(ENTRY_KEYS))
    if unknown:
        raise AnsibleParserError(f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(ENTRY_KEYS)}")
    url = raw.get("docker_host")
    scheme = urlsplit(url).scheme if isinstance(url, str) else ""
    if scheme not in ("unix", "npipe", "tcp", "http", "https", "ssh"):
        raise AnsibleParserError(
            f"{where}.docker_host={url!r} is not a Docker daemon URL; use e.g. unix:///var/run/docker.sock, "
            "tcp://docker-a.example.com:2376 or ssh://engineops@docker-a.example.com"
        )
    parts = urlsplit(url)
    connection = engine_connection(raw, where)
    local = connection.get("ansible_connection") == "local"
    name = raw.get("name") or (parts.hostname if scheme not in ("unix", "npipe") else "localhost")
    if not isinstance(name, str) or not name:
        raise AnsibleParserError(f"{where}.name must be a non-empty string, got {name!r}")
    extra = raw.get("vars") or {}
    if not isinstance(extra, Mapping):
        raise AnsibleParserError(f"{where}.vars must be a mapping of variable names to values")
    clashing = sorted(set(extra) & set(ENTRY_KEYS))
    if clashing:
        raise AnsibleParserError(f"{where}.vars sets {', '.join(clashing)}: set them on {where} itself")
    if "engine_key" in extra:
        require_lazy_key(extra["engine_key"], f"{where}.vars.engine_key")
    docker_options = {key: raw[key] for key in DOCKER_OPTIONS if raw.get(key) is not None}
    if raw.get("engine_docker_host"):
        module_docker = {"engine_docker_host": raw["engine_docker_host"]}
    elif local:  # the modules run here and reach the daemon as this plugin does
        module_docker = {f"engine_{key}" if key == "docker_host" else f"engine_docker_{key}": value
                         for key, value in docker_options.items()}
    else:  # the modules run on the Docker host itself
        module_docker = {"engine_docker_host": DEFAULT_DOCKER_HOST}
    return DockerHostEntry(name=name, docker_options=docker_options,
                           host_vars={**module_docker, **extra, **connection})


def docker_host_entries(raw: Any, defaults: Any = None) -> list[DockerHostEntry]:
    """Every item of ``docker_hosts``, with the keys of ``docker_host_defaults`` it does not set."""
    if not isinstance(raw, list) or not raw:
        raise AnsibleParserError("docker_hosts must be a non-empty list of Docker hosts, each with its docker_host URL")
    if not isinstance(defaults or {}, Mapping):
        raise AnsibleParserError("docker_host_defaults must be a mapping of docker_hosts keys to values")
    entries = [
        docker_host_entry({**(defaults or {}), **item} if isinstance(item, Mapping) else item, index)
        for index, item in enumerate(raw)
    ]
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.name in seen:
            raise AnsibleParserError(
                f"Two Docker hosts are named {entry.name!r} ({seen[entry.name]} and {entry.docker_host}); "
                "give each a distinct name"
            )
        seen[entry.name] = entry.docker_host
    return entries


def repository_path(repository: str) -> str:
    """A repository without its registry: ``registry.example.com/team/engine`` -> ``team/engine``."""
    first, sep, rest = repository.partition("/")
    return rest if sep and _looks_like_registry(first) else repository


@dataclass(frozen=True)
class EngineSelector:
    """Which containers are Engines: every label (the daemon filters), one of the repositories (checked here)."""

    labels: tuple[str, ...] = ()
    image_repositories: tuple[str, ...] = ()
    include_stopped: bool = False

    @classmethod
    def from_options(cls, labels: Any, image_repositories: Any, include_stopped: bool) -> EngineSelector:
        for label in labels or []:
            if not isinstance(label, str) or not label or label.startswith("="):
                raise AnsibleParserError(f"labels: {label!r} is not a label; use key or key=value, e.g. io.example.role=engine")
        for repository in image_repositories or []:
            try:
                ref = parse_image_ref(repository)
            except VersionError as exc:
                raise AnsibleParserError(f"image_repositories: {exc}") from None
            if ref.tag is not None or ref.digest is not None:
                raise AnsibleParserError(
                    f"image_repositories: {repository!r} has a tag or digest; give the repository alone, "
                    f"e.g. {ref.repository!r}, so that every version matches"
                )
        return cls(tuple(labels or ()), tuple(image_repositories or ()), bool(include_stopped))

    def docker_filters(self) -> dict[str, list[str]]:
        return {"label": list(self.labels)} if self.labels else {}

    def matches(self, summary: Mapping[str, Any]) -> bool:
        if not self.image_repositories:
            return True
        try:
            repository = parse_image_ref(summary.get("Image") or "").repository
        except VersionError:
            return False  # not an image reference
        return any(
            repository == wanted or (repository_path(wanted) == wanted and repository_path(repository) == wanted)
            for wanted in self.image_repositories
        )


def trimmed_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a ``/containers/json`` item the plugin reads, as cached."""
    kept = {key: summary.get(key) for key in SUMMARY_FIELDS}
    kept["Mounts"] = [{key: m.get(key) for key in MOUNT_FIELDS} for m in summary.get("Mounts") or []]
    return kept


def inspect_shape(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A ``/containers/json`` item in the shape of ``docker inspect``, for :func:`facts_from_inspect`.

    The list has no env: the brain path is the default one.
    """
    ports: dict[str, list[dict[str, str]]] = {}
    for port in summary.get("Ports") or []:
        if port.get("PublicPort"):
            key = f"{port.get('PrivatePort')}/{port.get('Type') or 'tcp'}"
            ports.setdefault(key, []).append({"HostIp": port.get("IP") or "", "HostPort": str(port["PublicPort"])})
    names = summary.get("Names") or []
    # A legacy link adds names such as /other/alias; the container's own name has one slash.
    name = next((n for n in names if n.count("/") == 1), names[0] if names else "")
    state = summary.get("State") or "unknown"
    return {
        "Id": summary.get("Id") or "",
        "Name": name,
        "Image": summary.get("ImageID") or "",
        "Config": {"Image": summary.get("Image") or "", "Labels": summary.get("Labels") or {}},
        "State": {"Status": state, "Running": state == "running", "Restarting": state == "restarting"},
        "NetworkSettings": {"Ports": ports},
        "Mounts": summary.get("Mounts") or [],
    }


def engine_variables(facts: EngineFacts, entry: DockerHostEntry, engine_port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(host variables, variables only for compose/groups/keyed_groups/hostname)`` of one Engine."""
    host_vars: dict[str, Any] = {
        "engine_name": facts.name,
        "engine_image": facts.image,
        "engine_docker_host_name": entry.name,
        **entry.host_vars,
    }
    url = facts.engine_url(engine_port)
    if url is not None:
        host_vars["engine_url"] = url
    if facts.version is not None:
        host_vars["engine_version"] = facts.version
    published = facts.host_port(engine_port)
    extra = {
        "engine_labels": facts.labels,
        "engine_state": facts.state,
        "engine_container_id": facts.id,
        "engine_image_id": facts.image_id,
        "engine_volume": facts.volume,
        "engine_host_port": published[1] if published else None,
        "engine_version_error": facts.version_error,
        "engine_previous_image": facts.previous_image,
    }
    return host_vars, extra


def list_engine_containers(entries: list[DockerHostEntry], selector: EngineSelector, timeout: float) -> dict[str, list]:
    """``{Docker host name: [trimmed /containers/json items]}``: one call per host, every host at once."""

    def list_one(entry: DockerHostEntry) -> list | Exception:
        try:
            client = docker_client(entry.docker_options, timeout=timeout)
            try:
                found = client.api.containers(all=selector.include_stopped, filters=selector.docker_filters())
            finally:
                client.close()
        except (EngineDockerError, DockerException, OSError) as exc:
            return exc
        return [trimmed_summary(summary) for summary in found]

    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_HOSTS, len(entries))) as pool:
        results = list(pool.map(list_one, entries))
    failures = [f"{e.name} ({e.docker_host}): {r}" for e, r in zip(entries, results) if isinstance(r, Exception)]
    if failures:
        raise AnsibleError("Cannot list the Engine containers of Docker host " + "; of ".join(failures))
    return {entry.name: result for entry, result in zip(entries, results)}


def listing_fingerprint(entries: list[DockerHostEntry], selector: EngineSelector) -> list:
    """What a cached listing was made for: a cache made for other hosts or labels is not used."""
    return [sorted([e.name, e.docker_host] for e in entries), sorted(selector.labels), selector.include_stopped]


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """The Engine containers of the configured Docker hosts."""

    NAME = "engineops.fleet.engines"

    def verify_file(self, path: str) -> bool:
        return super().verify_file(path) and (
            path.endswith((".engines.yml", ".engines.yaml")) or path.rsplit("/", 1)[-1] in ("engines.yml", "engines.yaml")
        )

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        self._build(path, cache)

    def _build(self, path: str, cache: bool) -> None:
        """Check the options, list the containers (or read the cache) and make the hosts and groups."""
        if not HAS_DOCKER:
            raise AnsibleError(f"The engineops.fleet.engines inventory needs the Python library docker: {DOCKER_IMPORT_ERROR}")
        entries = docker_host_entries(self.get_option("docker_hosts"), self.get_option("docker_host_defaults"))
        selector = EngineSelector.from_options(
            self.get_option("labels"), self.get_option("image_repositories"), self.get_option("include_stopped"))
        key_template = self.get_option("key_template")
        if key_template is not None:
            require_lazy_key(key_template, "key_template")
        if "engine_key" in (self.get_option("compose") or {}):
            raise AnsibleParserError(
                "compose sets engine_key, but compose is resolved when the inventory is built, which would put the key "
                "in the inventory; use key_template, which stays a template until a task needs the key"
            )
        try:
            canary_cohort([], self.get_option("canary_percent"))
        except AnsibleFilterError as exc:
            raise AnsibleParserError(f"canary_percent: {exc}") from None
        listing = self._listing(path, cache, entries, selector)
        self._populate(entries, selector, listing, key_template)

    def _listing(self, path: str, cache: bool, entries: list[DockerHostEntry], selector: EngineSelector) -> dict[str, list]:
        """The containers of every Docker host: from the cache when it is on, fresh, and made for this config."""
        use_cache = bool(self.get_option("cache"))
        cache_key = self.get_cache_key(path)
        fingerprint = listing_fingerprint(entries, selector)
        if use_cache and cache:
            try:
                cached = self._cache[cache_key]
            except KeyError:
                cached = None
            if isinstance(cached, Mapping) and cached.get("fingerprint") == fingerprint:
                return cached["hosts"]
        listing = list_engine_containers(entries, selector, self.get_option("timeout"))
        if use_cache:
            self._cache[cache_key] = {"fingerprint": fingerprint, "hosts": listing}
        return listing

    def _populate(self, entries: list[DockerHostEntry], selector: EngineSelector, listing: dict[str, list],
                  key_template: str | None) -> None:
        strict = self.get_option("strict")
        engine_port = self.get_option("engine_port")
        parent = self.inventory.add_group(self.get_option("engines_group"))
        engines: dict[str, tuple[DockerHostEntry, dict[str, Any], dict[str, Any]]] = {}
        unknown_versions = []
        for entry in entries:
            for summary in sorted(listing.get(entry.name) or [], key=lambda item: item.get("Names") or []):
                if not selector.matches(summary):
                    continue
                host_vars, extra = engine_variables(facts_from_inspect(inspect_shape(summary)), entry, engine_port)
                if key_template is not None:
                    host_vars["engine_key"] = key_template
                name = self._host_name(host_vars, extra)
                if name in engines:
                    raise AnsibleParserError(
                        f"Two Engines get the inventory name {name!r} (on Docker hosts {engines[name][0].name} and "
                        f"{entry.name}); set hostname, e.g. hostname: \"engine_docker_host_name ~ '-' ~ engine_name\""
                    )
                engines[name] = (entry, host_vars, extra)
                if extra["engine_version_error"]:
                    unknown_versions.append(name)
        if unknown_versions:
            self.display.warning(
                f"{len(unknown_versions)} Engine(s) have no exact version in their image reference, grouped in "
                f"engine_version_unknown: {', '.join(sorted(unknown_versions)[:10])}"
            )
        canary = set(canary_cohort(list(engines), self.get_option("canary_percent")))
        for name, (entry, host_vars, extra) in engines.items():
            self.inventory.add_host(name, group=parent)
            for var, value in host_vars.items():
                self.inventory.set_variable(name, var, value)
            for group in (
                f"engine_version_{host_vars.get('engine_version') or 'unknown'}",
                f"docker_host_{entry.name}",
                "engine_canary" if name in canary else "engine_rest",
            ):
                group = self.inventory.add_group(self._sanitize_group_name(group))
                self.inventory.add_child(parent, group)
                self.inventory.add_child(group, name)
            variables = {**host_vars, **extra}
            self._set_composite_vars(self.get_option("compose"), variables, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), variables, name, strict=strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, name, strict=strict)

    def _host_name(self, host_vars: dict[str, Any], extra: dict[str, Any]) -> str:
        expression = self.get_option("hostname")
        variables = {**host_vars, **extra}
        if expression.isidentifier() and expression in variables:
            return self._checked_host_name(expression, variables[expression], host_vars)  # no template to compile
        try:
            name = self._compose(expression, variables)
        except Exception as exc:
            raise AnsibleParserError(
                f"hostname {expression!r} fails for the Engine {host_vars['engine_name']!r}: {exc}") from None
        return self._checked_host_name(expression, name, host_vars)

    @staticmethod
    def _checked_host_name(expression: str, name: Any, host_vars: dict[str, Any]) -> str:
        if not isinstance(name, str) or not name:
            raise AnsibleParserError(
                f"hostname {expression!r} gives {name!r} for the Engine {host_vars['engine_name']!r}; "
                "it must give a non-empty string"
            )
        return name
