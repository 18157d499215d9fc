# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The wiring every Engine module shares.

:class:`EngineModule` builds the ``AnsibleModule`` with the common options
merged in (the same names, types and defaults as the ``engine`` doc
fragment), checks the libraries, and hands out the Docker wrapper and the
HTTP client, turning their errors into ``fail_json`` with what was done so
far.
"""

from __future__ import annotations

import sys
from typing import Any

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

from ansible_collections.engineops.fleet.plugins.module_utils._docker import (
    DEFAULT_DOCKER_HOST,
    DOCKER_IMPORT_TRACEBACK,
    DOCKER_OPTION_ENV,
    DOCKER_SDK_VERSION,
    HAS_DOCKER,
    REQUESTS_VERSION,
    EngineDocker,
    EngineDockerError,
    EngineFacts,
    docker_sdk_problem,
)
from ansible_collections.engineops.fleet.plugins.module_utils._engine_http import (
    HAS_REQUESTS,
    REQUESTS_IMPORT_TRACEBACK,
    EngineClient,
    EngineClientError,
)

# The Docker connection options under community.docker's names (env fallbacks,
# aliases and defaults as there); DOCKER_CERT_PATH is applied by _docker.py.
DOCKER_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "docker_host": {"type": "str", "default": DEFAULT_DOCKER_HOST, "aliases": ["docker_url"],
                    "fallback": (env_fallback, ["DOCKER_HOST"])},
    "tls": {"type": "bool", "default": False, "fallback": (env_fallback, ["DOCKER_TLS"])},
    "validate_certs": {"type": "bool", "default": False, "aliases": ["tls_verify"],
                       "fallback": (env_fallback, ["DOCKER_TLS_VERIFY"])},
    "ca_path": {"type": "path", "aliases": ["ca_cert", "tls_ca_cert", "cacert_path"]},
    "client_cert": {"type": "path", "aliases": ["tls_client_cert", "cert_path"]},
    "client_key": {"type": "path", "aliases": ["tls_client_key", "key_path"]},
    "tls_hostname": {"type": "str", "fallback": (env_fallback, ["DOCKER_TLS_HOSTNAME"])},
    "api_version": {"type": "str", "default": "auto", "aliases": ["docker_api_version"],
                    "fallback": (env_fallback, ["DOCKER_API_VERSION"])},
    "use_ssh_client": {"type": "bool", "default": False},
}

COMMON_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    **DOCKER_ARGUMENT_SPEC,
    "engine_url": {"type": "str"},
    "engine_key": {"type": "str", "no_log": True, "fallback": (env_fallback, ["ENGINE_KEY"])},
    "engine_validate_certs": {"type": "bool", "default": True},
    "engine_ca_path": {"type": "path"},
    "request_timeout": {"type": "float", "default": 10.0},
}


def docker_options(params: dict[str, Any]) -> dict[str, Any]:
    """The Docker connection options out of a module's parameters."""
    return {name: params.get(name) for name in DOCKER_OPTION_ENV}


def engine_tls_verify(params: dict[str, Any]) -> bool | str:
    """``requests``' ``verify`` for the Engine's HTTPS: off, the CA bundle ``engine_ca_path``, or the system CAs."""
    if params.get("engine_validate_certs") is False:  # None (a null passed through) keeps the default
        return False
    return params.get("engine_ca_path") or True


class EngineModule:
    """An ``AnsibleModule`` for one Engine, with its Docker wrapper and HTTP client."""

    def __init__(self, argument_spec: dict[str, Any], *, needs_http: bool = True, **kwargs: Any) -> None:
        spec = dict(COMMON_ARGUMENT_SPEC)
        spec.update(argument_spec)
        kwargs.setdefault("supports_check_mode", True)
        self.module = AnsibleModule(argument_spec=spec, **kwargs)
        self.params = self.module.params
        if not HAS_DOCKER:
            self.module.fail_json(msg=missing_required_lib("docker (the Docker SDK for Python, 5.0.3 or newer)"),
                                  exception=DOCKER_IMPORT_TRACEBACK)
        problem = docker_sdk_problem(DOCKER_SDK_VERSION, sys.executable, REQUESTS_VERSION)
        if problem:
            self.module.fail_json(msg=problem)
        if needs_http and not HAS_REQUESTS:
            self.module.fail_json(msg=missing_required_lib("requests"), exception=REQUESTS_IMPORT_TRACEBACK)
        self._docker: EngineDocker | None = None

    @property
    def check_mode(self) -> bool:
        return self.module.check_mode

    @property
    def diff_mode(self) -> bool:
        return self.module._diff

    @property
    def docker(self) -> EngineDocker:
        if self._docker is None:
            try:
                self._docker = EngineDocker(docker_options(self.params), timeout=max(self.params["request_timeout"], 60))
            except EngineDockerError as exc:
                self.fail(str(exc))
        return self._docker

    def facts(self, name: str) -> EngineFacts:
        """The Engine container's facts; fails the module with a clear message if there is none."""
        try:
            return self.docker.facts(name)
        except EngineDockerError as exc:
            self.fail(str(exc))
            raise  # unreachable: fail() exits

    def http(self, facts: EngineFacts | None = None) -> EngineClient:
        """The Engine's HTTP client, at ``engine_url`` or the container's published port."""
        url = self.params["engine_url"] or (facts.engine_url() if facts else None)
        if not url:
            name = facts.name if facts else "the Engine"
            self.fail(f"Cannot tell the URL of {name}: its container publishes no port 8000; set engine_url")
        try:
            return EngineClient(
                url,
                key=self.params["engine_key"],
                verify_tls=engine_tls_verify(self.params),
                timeout=self.params["request_timeout"],
            )
        except EngineClientError as exc:
            self.fail(f"Invalid engine_url or engine_key: {exc}")
            raise  # unreachable

    def fail(self, msg: str, **partial: Any) -> None:
        self.module.fail_json(msg=msg, **partial)

    def exit(self, **result: Any) -> None:
        self.module.exit_json(**result)
