# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # The options every Engine module takes; plugins/module_utils/_common.py
    # declares the same names, types and defaults.
    DOCUMENTATION = r"""
options:
  docker_host:
    description:
      - The Docker daemon that runs the Engine, as a URL seen from the host that runs the module.
      - V(unix:///var/run/docker.sock) for the local socket, V(tcp://192.0.2.10:2376) for a daemon on TCP (with
        O(tls) or O(validate_certs), C(tcp) becomes C(https)), V(ssh://user@192.0.2.10) for a daemon reached over SSH.
      - If not set, the value of the E(DOCKER_HOST) environment variable is used.
    type: str
    default: unix:///var/run/docker.sock
    aliases:
      - docker_url
  tls:
    description:
      - Talk TLS to the Docker daemon without checking its certificate. O(validate_certs=true) takes precedence.
      - If not set, the value of the E(DOCKER_TLS) environment variable is used.
    type: bool
    default: false
  validate_certs:
    description:
      - Talk TLS to the Docker daemon and check its certificate (against O(ca_path), else the system CAs) and host
        name (O(tls_hostname)).
      - This is the B(Docker daemon's) TLS, as in community.docker; the Engine's HTTPS has O(engine_validate_certs).
      - If not set, the value of the E(DOCKER_TLS_VERIFY) environment variable is used.
    type: bool
    default: false
    aliases:
      - tls_verify
  ca_path:
    description:
      - The CA certificate (PEM) that signed the Docker daemon's certificate, on the host that runs the module. Used with
        O(validate_certs=true).
      - If not set and E(DOCKER_CERT_PATH) is, the file C(ca.pem) of that directory is used.
    type: path
    aliases:
      - ca_cert
      - tls_ca_cert
      - cacert_path
  client_cert:
    description:
      - The client certificate (PEM) to show the Docker daemon, on the host that runs the module. Needs O(client_key).
      - If not set and E(DOCKER_CERT_PATH) is, the file C(cert.pem) of that directory is used.
    type: path
    aliases:
      - tls_client_cert
      - cert_path
  client_key:
    description:
      - The key (PEM) of O(client_cert), on the host that runs the module.
      - If not set and E(DOCKER_CERT_PATH) is, the file C(key.pem) of that directory is used.
    type: path
    aliases:
      - tls_client_key
      - key_path
  tls_hostname:
    description:
      - The host name the Docker daemon's certificate must name, when it is not the host of O(docker_host).
      - If not set, the value of the E(DOCKER_TLS_HOSTNAME) environment variable is used.
    type: str
  api_version:
    description:
      - The Docker API version to speak, or V(auto) for the newest both the daemon and the Docker SDK know.
      - If not set, the value of the E(DOCKER_API_VERSION) environment variable is used.
    type: str
    default: auto
    aliases:
      - docker_api_version
  use_ssh_client:
    description:
      - For an V(ssh://) O(docker_host), use the C(ssh) command (and its configuration) instead of paramiko.
    type: bool
    default: false
  engine_url:
    description:
      - Base URL of the Engine's HTTP API, for example V(http://127.0.0.1:9001).
      - By default the address the container publishes its port 8000 on, with 127.0.0.1 for an unspecified host address.
    type: str
  engine_key:
    description:
      - The Engine's key, sent as the C(X-Engine-Key) header. C(/health) needs none.
      - If not set, the value of the E(ENGINE_KEY) environment variable is used.
      - Never logged nor returned.
    type: str
  engine_validate_certs:
    description:
      - Verify the Engine's TLS certificate when O(engine_url) is HTTPS (against O(engine_ca_path), else the system CAs).
    type: bool
    default: true
  engine_ca_path:
    description:
      - A CA bundle (PEM), on the host that runs the module, to verify an HTTPS O(engine_url) against.
    type: path
  request_timeout:
    description:
      - Seconds to wait for the Engine or the Docker daemon to answer one request.
    type: float
    default: 10
notes:
  - The Docker connection options have community.docker's names, aliases and environment variables (E(DOCKER_HOST),
    E(DOCKER_TLS), E(DOCKER_TLS_VERIFY), E(DOCKER_CERT_PATH), E(DOCKER_TLS_HOSTNAME), E(DOCKER_API_VERSION)).
    Set them once for every Engine module with C(module_defaults) and C(group/engineops.fleet.engine).
  - O(docker_host=ssh://...) needs paramiko on the host that runs the module, or O(use_ssh_client=true) and the
    C(ssh) command.
requirements:
  - docker (Python library, the Docker SDK for Python, 5.0.3 or newer)
  - requests (Python library)
"""

    # Membership of the action group that module_defaults can set once.
    ACTIONGROUP = r"""
attributes:
  action_group:
    description: Use C(group/engineops.fleet.engine) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - engineops.fleet.engine
"""
