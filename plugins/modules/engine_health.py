#!/usr/bin/python
# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: engine_health
short_description: Wait until an Engine is ready, by code and body of /health
version_added: 0.1.0
description:
  - Probes the Engine's C(GET /health) until it answers HTTP 200 B(and) a body with C(status) V(ok), as the Engine's
    documentation requires both to be checked.
  - While waiting it watches the Engine's container. If the container exits or restarts (a crash at boot, a missing
    environment variable, a brain migrated by a newer release), it fails at once with the exit code, the last error
    the Engine logged and the last log lines, instead of waiting for the time-out.
  - With O(wait=false) it probes once and reports the health as data without failing.
options:
  name:
    description:
      - Name of the Engine's container. Needed to watch the container and to find its URL.
      - Without it, O(engine_url) must be set and the container is not watched.
    type: str
  wait:
    description:
      - Wait until the Engine is ready and fail if it is not within O(timeout).
      - If V(false), probe once and report.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for the Engine to be ready (migrations run at boot count against it).
    type: float
    default: 120
  interval:
    description:
      - Seconds between two probes.
    type: float
    default: 1
  log_lines:
    description:
      - How many of the container's last log lines to return when it died while waiting.
    type: int
    default: 20
extends_documentation_fragment:
  - engineops.fleet.engine
  - engineops.fleet.engine.actiongroup
attributes:
  check_mode:
    support: full
    description: Only reads; probes the same way in check mode.
  diff_mode:
    support: none
    description: Changes nothing.
  idempotent:
    support: full
    description: Only reads.
author:
  - engineops.fleet contributors (@engineops)
"""

EXAMPLES = r"""
- name: Wait until the Engine is ready after its upgrade
  engineops.fleet.engine_health:
    name: engine-042
    timeout: 300

- name: Probe once and report, without failing
  engineops.fleet.engine_health:
    name: engine-042
    wait: false
  register: health

- name: Probe an Engine by URL only
  engineops.fleet.engine_health:
    engine_url: https://engine.example.com
"""

RETURN = r"""
ready:
  description: Whether C(/health) answered HTTP 200 with C(status) V(ok).
  returned: always
  type: bool
reason:
  description: Why the Engine is not ready, when it is not.
  returned: always
  type: str
  sample: "HTTP 503, status 'migrating'"
url:
  description: The health URL probed.
  returned: always
  type: str
  sample: http://127.0.0.1:9001/health
status_code:
  description: HTTP status of the last probe, V(null) when the Engine could not be reached.
  returned: always
  type: int
status:
  description: The C(status) field of the last answer.
  returned: always
  type: str
  sample: ok
subsystems:
  description: The C(subsystems) of the last answer.
  returned: always
  type: dict
  sample: {"database": "ok", "llm_provider": "ok", "asset_directory": "ok"}
failing_subsystems:
  description: Subsystems not V(ok).
  returned: always
  type: list
  elements: str
uptime_seconds:
  description: The Engine's uptime from the last answer.
  returned: always
  type: float
waited_seconds:
  description: How long the module waited.
  returned: always
  type: float
probes:
  description: How many probes were made.
  returned: always
  type: int
container_event:
  description: What happened to the container while waiting (exited or restarted), when it did.
  returned: when the container died while waiting
  type: dict
  contains:
    reason:
      description: V(exited) or V(restarted).
      type: str
    exit_code:
      description: The container's exit code.
      type: int
    restart_count:
      description: Docker's restart count.
      type: int
    error:
      description: Code and message of the last ERROR line the Engine logged.
      type: str
      sample: "MIGRATION_REQUIRED: brain has migrations unknown to this release: 0003_feedback"
    log_tail:
      description: The container's last log lines.
      type: list
      elements: str
"""

from ansible_collections.engineops.fleet.plugins.module_utils._common import EngineModule
from ansible_collections.engineops.fleet.plugins.module_utils._docker import EngineDockerError
from ansible_collections.engineops.fleet.plugins.module_utils._health import container_watcher, report_fields, wait_ready


def main() -> None:
    em = EngineModule(
        {
            "name": {"type": "str"},
            "wait": {"type": "bool", "default": True},
            "timeout": {"type": "float", "default": 120.0},
            "interval": {"type": "float", "default": 1.0},
            "log_lines": {"type": "int", "default": 20},
        },
        required_one_of=[("name", "engine_url")],
    )
    params = em.params
    for option in ("timeout", "interval"):
        if params[option] < 0:
            em.fail(f"{option}={params[option]} is negative; give a number of seconds >= 0")
    facts, watch = (None, None)
    if params["name"]:
        try:
            facts, watch = container_watcher(em.docker, params["name"], params["log_lines"])
        except EngineDockerError as exc:
            em.fail(str(exc))
    client = em.http(facts)
    if not params["wait"]:
        em.exit(changed=False, **report_fields(client.health()), waited_seconds=0.0, probes=1)
    outcome = wait_ready(client.health, watch, params["timeout"], params["interval"])
    result = {"changed": False, **outcome.result()}
    if outcome.ready:
        em.exit(**result)
    em.fail(outcome.failure(params["name"] or client.base_url), **result)


if __name__ == "__main__":
    main()
