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
      - The Docker daemon that runs the Engine, as a URL.
      - If not set, the value of the E(DOCKER_HOST) environment variable is used.
    type: str
    default: unix:///var/run/docker.sock
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
  validate_certs:
    description:
      - Verify the Engine's TLS certificate when O(engine_url) is HTTPS.
    type: bool
    default: true
  request_timeout:
    description:
      - Seconds to wait for the Engine or the Docker daemon to answer one request.
    type: float
    default: 10
requirements:
  - docker (Python library, 7.1 or newer)
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
