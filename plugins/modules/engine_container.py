#!/usr/bin/python
# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: engine_container
short_description: Move an Engine to another image and keep everything else
version_added: 0.1.0
description:
  - Recreates an Engine's container on another image, keeping every other setting of the old container, that is its environment,
    mounts and volumes (anonymous volumes too, by name), published ports, labels, restart policy, networks with their
    aliases and static addresses, command and entrypoint, working directory, user, health check, resource limits,
    log configuration and the rest of its host configuration.
  - Only what the container itself set is kept. What the old container inherited from the old image (its C(ENV),
    C(LABEL), C(CMD), C(ENTRYPOINT), C(WORKDIR), C(EXPOSE), C(VOLUME), C(STOPSIGNAL), C(HEALTHCHECK), C(USER)) is left
    out, so the new image's own defaults apply. A value the container set equal to the old image's default cannot be
    told apart from that default and follows the new image.
  - The image is pulled first, by O(pull). An image that cannot be had fails the module before the Engine is stopped.
  - The new container is created (as C(<name>-next-<short id of the old one>), with its networks) while the old one
    still runs, so that the Engine is out only for its own stop and boot. Then the running Engine is drained (SIGTERM,
    O(grace_period), then SIGKILL; see M(engineops.fleet.engine_drain)), the old container is renamed aside to
    C(<name>-previous-<short id>), the new one takes the name and is started, with O(wait_healthy) the module waits
    until it is healthy, and the old container is removed; its named volumes stay. If the new container cannot be
    created, named or started, the module removes it, renames the old one back, starts it again if it was running, and
    fails saying what happened.
  - Drain, swap and health wait are one call that waits only on its own Engine, so in a batch each Engine is out for
    its own stop and boot, not for the slowest of its batch. RV(timings) says when each step happened.
  - The image replaced is recorded in the new container's label C(io.engineops.fleet.previous-image), so a rollback
    knows where to go back (M(engineops.fleet.engine_info) returns it as C(previous_image)).
  - With O(wait_healthy), the module probes C(/health) after the start as M(engineops.fleet.engine_health) does
    (code and body, watching the container for an exit or restart). A new release that is not healthy within
    O(health_timeout) fails the module with RV(healthy=false) and is B(not) undone (it may have migrated the brain);
    rolling back is the caller's decision (the C(engineops.fleet.rollback) role). Without O(wait_healthy), the module
    reports whether the container runs and its restart count O(settle_time) seconds after the start.
  - If a swap was interrupted after the new container was created and before it took the name, the container left
    under C(<name>-next-<short id>) (never started) is removed and created again.
  - If a swap was interrupted after the old container was renamed aside and before the new one was created, the
    container is found under its aside name and the swap goes on from there.
  - An Engine that C(docker compose) made (labels C(com.docker.compose.project), C(.service),
    C(.project.config_files), C(.project.working_dir)) stays a member of its service (its labels are carried), and the
    project's files are kept in step with O(image), so that a later C(docker compose up -d) does not put the old image
    back. The files are read and edited on the Engine's Docker host, where the module runs; see O(compose_sync).
options:
  name:
    description:
      - Name of the Engine's container, for example V(engine-042). The container must exist.
    type: str
    required: true
  image:
    description:
      - The image to run, pinned to an exact version tag, for example V(registry.example.com/september-engine:2.4.0).
      - V(latest) and tags that are not an exact version are refused (the Engine's version is read from its tag).
      - By default the image the container runs now.
    type: str
  state:
    description:
      - V(started) makes sure the container runs O(image), recreating and starting it as needed.
      - V(present) makes sure the container is on O(image) without starting it; a container recreated for that is
        left created, not running (the Engine is drained first).
      - V(stopped) drains the Engine if it runs; with O(image), the container is also moved to it, not started.
      - V(pulled) only makes sure the Engine's Docker host has O(image) (as O(pull) says) and leaves the container
        alone; the pre-flight of a rollout uses it to pull the target image on every host before any Engine is
        touched. Requires O(image). For a compose-managed Engine it also checks that its compose project can be kept
        in step with O(image) (see O(compose_sync)) and returns RV(compose) with the edits a move would make.
    type: str
    choices: [started, stopped, present, pulled]
    default: started
  pull:
    description:
      - V(missing) pulls the image when the Docker host does not have it.
      - V(always) pulls it every time; if the tag now names another image, the container is recreated on it.
      - V(never) uses only the Docker host's image and fails when it is not there.
      - In check mode nothing is pulled; the registry is asked whether it has the image.
    type: str
    choices: [always, missing, never]
    default: missing
  grace_period:
    description:
      - Seconds between SIGTERM and SIGKILL when the running Engine is drained, as C(docker stop --timeout).
    type: int
    default: 30
  env:
    description:
      - Environment variables merged over the container's own, for example a variable a major version requires.
      - Values are strings (quote booleans); they are never logged nor returned, only the names.
      - A variable whose value differs from the container's makes the container be recreated.
    type: dict
  settle_time:
    description:
      - Seconds to wait after starting the new container before reading whether it runs and its restart count.
      - Not used with O(wait_healthy), where the container is read once the health wait ends.
    type: float
    default: 1
  wait_healthy:
    description:
      - With O(state=started), wait after the start until C(GET /health) answers HTTP 200 with C(status) V(ok), within
        O(health_timeout), while watching the container (a crash at boot fails at once with its exit code and last
        error).
      - Waits also when the container was left as it was (already on O(image) and running), so that success means
        healthy either way.
      - The Engine is probed at O(engine_url), else at the address its container publishes port 8000 on.
    type: bool
    default: false
  health_timeout:
    description:
      - Seconds the Engine may take to be healthy after the start (migrations run at boot count against it), with
        O(wait_healthy).
    type: float
    default: 120
  health_interval:
    description:
      - Seconds between two C(/health) probes, with O(wait_healthy).
    type: float
    default: 0.25
  compose_sync:
    description:
      - When the container belongs to a compose project and O(image) is given, make the project's files name
        O(image) for the container's service, after the container is on it.
      - The edit is made where compose takes the image from. That is the C(image) value of the last of the project's
        files that sets one (an override file overrides the main file), changed in place (comments, quoting and layout
        stay). For an image written with a variable, as in C(engine:${ENGINE_VERSION}), it is the variable's line in
        the project's env file (C(.env) in the project directory, or the file given with C(--env-file)) when the env
        file sets it, else the default in C(${ENGINE_VERSION:-2.3.0}).
      - Each file is backed up next to itself (C(<file>.<pid>.<date>@<time>~)) before it is changed.
      - The module fails before anything is changed when the files cannot be kept in step. That is when a file is
        not on this host, the service is built by the project (C(build)), its image comes through C(extends), a YAML
        merge key or anchor, or a variable that neither the env file sets nor a default gives (only the shell that
        runs compose knows it), or no single variable can make the image O(image).
      - V(false) leaves the files alone; a later C(docker compose up -d) then recreates the container on the image
        they name.
      - A variable set in the environment of the shell that runs C(docker compose) overrides the env file; the module
        cannot see it.
    type: bool
    default: true
extends_documentation_fragment:
  - engineops.fleet.engine
  - engineops.fleet.engine.actiongroup
attributes:
  check_mode:
    support: full
    description: Pulls, stops and creates nothing; reports what would change and asks the registry whether it has the
      image.
  diff_mode:
    support: full
    description: Shows the image and state before and after, and which O(env) names change (never their values);
      with compose files to edit, also each file's text before and after.
  idempotent:
    support: full
    description: A container already on O(image), with O(env), in O(state) is not touched.
notes:
  - O(engine_key) is used only to count the turns in flight from the Engine's event replay while it is drained, when
    its logs cannot. O(engine_url) is where the replay and, with O(wait_healthy), C(/health) are asked.
seealso:
  - module: engineops.fleet.engine_drain
  - module: engineops.fleet.engine_info
  - module: engineops.fleet.engine_health
author:
  - engineops.fleet contributors (@engineops)
"""

EXAMPLES = r"""
- name: Move engine-042 to the patch release
  engineops.fleet.engine_container:
    name: engine-042
    image: registry.example.com/september-engine:2.3.1
  register: swap

- name: Move engine-042 and wait until it is healthy, in one call that waits only on this Engine
  engineops.fleet.engine_container:
    name: engine-042
    image: registry.example.com/september-engine:2.3.1
    wait_healthy: true
    health_timeout: 300
  register: swap

- name: Show the Engine's outage
  ansible.builtin.debug:
    msg: "out {{ swap.timings.outage_seconds }}s, of which {{ swap.timings.boot_to_healthy_seconds }}s boot"

- name: Roll it back to the image it replaced
  engineops.fleet.engine_container:
    name: engine-042
    image: "{{ swap.previous_image }}"
    pull: never

- name: Pull the target image on the Engine's Docker host, leaving the Engine as it is
  engineops.fleet.engine_container:
    name: engine-042
    image: registry.example.com/september-engine:2.3.1
    state: pulled

- name: Move to a major release that needs a new variable
  engineops.fleet.engine_container:
    name: engine-042
    image: registry.example.com/september-engine:3.0.0
    env:
      LLM_EMBEDDING_MODEL: "{{ engine_embedding_model }}"

- name: Stage the new image in a window without starting it
  engineops.fleet.engine_container:
    name: engine-042
    image: registry.example.com/september-engine:2.4.0
    state: present
    pull: always

- name: Move a compose-managed Engine; its compose file (or .env) is kept in step
  engineops.fleet.engine_container:
    name: myproject-engine-1
    image: registry.example.com/september-engine:2.3.1
  register: swap

- name: Show what was edited
  ansible.builtin.debug:
    msg: "{{ swap.compose.edits }}"
  when: swap.compose is defined

- name: Stop an Engine gracefully, with a minute of grace
  engineops.fleet.engine_container:
    name: engine-042
    state: stopped
    grace_period: 60
"""

RETURN = r"""
container:
  description:
    - The facts of the Engine's container afterwards (in check mode, as it is now), as
      M(engineops.fleet.engine_info) returns them.
    - RV(container.running) and RV(container.restart_count) are read O(settle_time) seconds after a start.
  returned: success
  type: dict
  contains:
    name:
      description: Container name.
      type: str
      sample: engine-042
    id:
      description: Container id.
      type: str
    state:
      description: Docker's state of the container (V(created) for a container recreated with O(state=present)).
      type: str
      sample: running
    running:
      description: Whether the container runs (and is not restarting).
      type: bool
    restart_count:
      description: How often Docker restarted the container; above 0 soon after a start hints at a crash at boot.
      type: int
      sample: 0
    image:
      description: The image reference the container runs.
      type: str
      sample: registry.example.com/september-engine:2.3.1
    version:
      description: The version read from the image tag.
      type: str
      sample: 2.3.1
    previous_image:
      description: The image recorded in label C(io.engineops.fleet.previous-image).
      type: str
      sample: registry.example.com/september-engine:2.3.0
    env_names:
      description: Names of the container's environment variables (never their values).
      type: list
      elements: str
image:
  description: The image the container is on (or would be on, in check mode).
  returned: success
  type: str
  sample: registry.example.com/september-engine:2.3.1
previous_image:
  description: The image the container ran before this run replaced it, else the image recorded by an earlier swap.
  returned: when O(state) is not V(pulled)
  type: str
  sample: registry.example.com/september-engine:2.3.0
recreated:
  description: Whether the container was (or would be) recreated, on another image or with another O(env).
  returned: when O(state) is not V(pulled)
  type: bool
pulled:
  description: Whether the image was pulled (in check mode, would be).
  returned: success
  type: bool
image_changed:
  description: Whether the container's image changed (or would change).
  returned: when O(state) is not V(pulled)
  type: bool
env_changed:
  description: Names of O(env) entries whose value the container did not have.
  returned: when O(state) is not V(pulled)
  type: list
  elements: str
actions:
  description: What was done (in check mode, what would be done), in order.
  returned: success
  type: list
  elements: str
  sample:
    - pull registry.example.com/september-engine:2.3.1
    - created engine-042-next-3f2a9c1b7d4e on registry.example.com/september-engine:2.3.1
    - drained engine-042
    - renamed engine-042 to engine-042-previous-3f2a9c1b7d4e
    - renamed engine-042-next-3f2a9c1b7d4e to engine-042
    - started engine-042
    - engine-042 is healthy
    - removed the old container engine-042-previous-3f2a9c1b7d4e (3f2a9c1b7d4e)
drain:
  description: The drain report of the old container when it ran, as M(engineops.fleet.engine_drain) returns it.
  returned: when a running Engine was drained
  type: dict
carried:
  description: Names of the settings kept from the old container and of those left to the new image.
  returned: when the container was recreated
  type: dict
  contains:
    kept:
      description: What came from the old container (env and label names, host config keys, networks...).
      type: dict
    left_to_image:
      description: What the old container had from the old image and now comes from the new one.
      type: dict
swap:
  description: Ids and names of the old and new containers.
  returned: when the container was recreated
  type: dict
healthy:
  description: Whether the Engine answered C(/health) ok within O(health_timeout). V(false) fails the module.
  returned: with O(wait_healthy), when not in check mode
  type: bool
health:
  description: The health wait, as M(engineops.fleet.engine_health) returns it.
  returned: with O(wait_healthy), when not in check mode
  type: dict
  contains:
    ready:
      description: Whether the Engine got healthy.
      type: bool
    reason:
      description: Why the last probe was not ok.
      type: str
    status_code:
      description: HTTP status of the last probe.
      type: int
    status:
      description: The C(status) of the last body.
      type: str
    waited_seconds:
      description: How long the module waited.
      type: float
    probes:
      description: How many probes were made.
      type: int
    container_event:
      description: The container's exit or restart while waiting (reason, exit code, restart count, last error, log tail).
      type: dict
timings:
  description:
    - When each step of this run happened, in seconds since the epoch (UTC), and the spans an operator reads; V(null)
      for a step that did not happen (all of them in check mode or when nothing was done).
  returned: when O(state) is not V(pulled)
  type: dict
  contains:
    drain_started:
      description: When SIGTERM went to the old container; the old release stops answering ok from then on.
      type: float
    old_stopped:
      description: When the old container had stopped.
      type: float
    new_created:
      description: When the new container was created (before the old one was drained).
      type: float
    new_started:
      description: When this run started the container that runs now (the new release's start).
      type: float
    healthy:
      description: When C(/health) was first ok, with O(wait_healthy).
      type: float
    stop_seconds:
      description: From C(drain_started) to C(old_stopped), the old release's drain and stop.
      type: float
    switch_seconds:
      description: From C(old_stopped) to C(new_started), the rename and start of the new container.
      type: float
    boot_to_healthy_seconds:
      description: From C(new_started) to C(healthy), the new release's boot.
      type: float
    outage_seconds:
      description: From C(drain_started) to C(healthy), the Engine's outage (its stop, the switch and its boot).
      type: float
compose:
  description:
    - The container's compose project and what was (in check mode, would be) edited to keep it in step.
    - With O(state=pulled), the edits a move to O(image) would make (none is made).
  returned: when O(image) is given, O(compose_sync=true) and compose made the container
  type: dict
  contains:
    project:
      description: The compose project's name.
      type: str
      sample: myproject
    service:
      description: The container's service.
      type: str
      sample: engine
    working_dir:
      description: The project directory.
      type: str
      sample: /srv/myproject
    config_files:
      description: The project's compose files, in the order compose merges them.
      type: list
      elements: str
      sample: [/srv/myproject/compose.yaml, /srv/myproject/compose.override.yaml]
    env_files:
      description: The project's env files (by default C(.env) in the project directory, whether or not it exists).
      type: list
      elements: str
    image_file:
      description: The file whose C(image) value compose takes for the service.
      type: str
    image_value:
      description: That value as the file writes it, variables and all (before the edit).
      type: str
      sample: registry.example.com/september-engine:${ENGINE_VERSION}
    variable:
      description: The variable that was changed to make the image O(image), if the image is written with variables.
      type: str
      sample: ENGINE_VERSION
    image_before:
      description: The image the files named before (variables filled in from the env file).
      type: str
    image_after:
      description: The image the files name now.
      type: str
    changed:
      description: Whether a file was (or would be) edited.
      type: bool
    edits:
      description: One entry per file edited.
      type: list
      elements: dict
      contains:
        path:
          description: The file.
          type: str
        change:
          description: What was changed, V(image), V(variable NAME) or V(default of NAME).
          type: str
        before:
          description: The old value.
          type: str
        after:
          description: The new value.
          type: str
        backup:
          description: The backup of the file made before the edit (none in check mode).
          type: str
"""

import time

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.engineops.fleet.plugins.module_utils._common import EngineModule, engine_tls_verify
from ansible_collections.engineops.fleet.plugins.module_utils._compose import (
    ComposeError,
    plan_sync,
    project_of,
    read_project_files,
    write_edit,
)
from ansible_collections.engineops.fleet.plugins.module_utils._container import (
    PULL_POLICIES,
    ContainerError,
    Swapper,
    SwapTimings,
    check_env,
    derive_spec,
    env_changes,
    env_to_dict,
    ensure_image,
    is_aside_name,
    observe,
    own_image,
    same_image_name,
)
from ansible_collections.engineops.fleet.plugins.module_utils._docker import (
    EngineDockerError,
    EngineNotFoundError,
    facts_from_inspect,
)
from ansible_collections.engineops.fleet.plugins.module_utils._drain import (
    DEFAULT_GRACE_PERIOD,
    DrainError,
    DrainOptions,
    drain_container,
    drain_warnings,
    is_running,
)
from ansible_collections.engineops.fleet.plugins.module_utils._engine_http import (
    HAS_REQUESTS,
    REQUESTS_IMPORT_TRACEBACK,
    EngineClient,
    EngineClientError,
    HealthReport,
)
from ansible_collections.engineops.fleet.plugins.module_utils._health import WaitOutcome, container_watcher, wait_ready
from ansible_collections.engineops.fleet.plugins.module_utils._version import VersionError, version_from_image

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "image": {"type": "str"},
    "state": {"type": "str", "default": "started", "choices": ["started", "stopped", "present", "pulled"]},
    "pull": {"type": "str", "default": "missing", "choices": list(PULL_POLICIES)},
    "grace_period": {"type": "int", "default": DEFAULT_GRACE_PERIOD},
    "env": {"type": "dict", "no_log": True},
    "settle_time": {"type": "float", "default": 1.0},
    "compose_sync": {"type": "bool", "default": True},
    "wait_healthy": {"type": "bool", "default": False},
    "health_timeout": {"type": "float", "default": 120.0},
    "health_interval": {"type": "float", "default": 0.25},
}
HEALTH_LOG_LINES = 20  # the container's last log lines returned when it dies while the health wait runs


class EngineContainer:
    """Plan and carry out one Engine container's move to ``image`` in ``state``."""

    def __init__(self, em: EngineModule) -> None:
        self.em = em
        self.params = em.params
        self.name = self.params["name"]
        self.state = self.params["state"]
        self.env = self.params["env"] or {}
        self.actions: list[str] = []
        self.result: dict = {"changed": False}
        self.health_failure = ""  # why the Engine did not get healthy, when it did not

    # -- input ------------------------------------------------------------

    def validate(self) -> None:
        """Every check that needs no Docker: fail naming the bad value, before anything is touched."""
        image = self.params["image"]
        if image is not None:
            try:
                version_from_image(image)
            except VersionError as exc:
                self.em.fail(f"Cannot move {self.name} to image {image!r}: {exc}. Nothing was changed")
        if self.params["grace_period"] < 0:
            self.em.fail(
                f"Cannot move {self.name}: grace_period {self.params['grace_period']} is negative; give the seconds "
                f"between SIGTERM and SIGKILL, 0 or more (default {DEFAULT_GRACE_PERIOD})"
            )
        for option in ("settle_time", "health_timeout", "health_interval"):
            if self.params[option] < 0:
                self.em.fail(f"Cannot move {self.name}: {option} {self.params[option]} is negative; give 0 or more seconds")
        if self.params["wait_healthy"]:
            if self.state != "started":
                self.em.fail(
                    f"Cannot move {self.name}: wait_healthy waits for a started Engine, and state is {self.state}; "
                    "use state: started, or leave wait_healthy out"
                )
            if not HAS_REQUESTS:
                self.em.module.fail_json(msg=missing_required_lib("requests (for wait_healthy)"),
                                         exception=REQUESTS_IMPORT_TRACEBACK)
        try:
            check_env(self.env)
        except ContainerError as exc:
            self.em.fail(f"Cannot move {self.name}: {exc}")

    def find(self):
        """The Engine's container, or the one an interrupted swap left aside (then ``resumed``)."""
        docker = self.em.docker
        try:
            container = docker.container(self.name)
        except EngineNotFoundError as exc:
            aside = [
                c for c in docker.client.containers.list(all=True, filters={"name": f"{self.name}-previous-"})
                if is_aside_name(c.name, self.name)
            ]
            if len(aside) == 1:
                self.em.module.warn(
                    f"No container named {self.name}, but {aside[0].name} was left aside by an interrupted swap: "
                    "going on from it"
                )
                return aside[0], True
            if aside:
                names = ", ".join(sorted(c.name for c in aside))
                self.em.fail(
                    f"No container named {self.name}, and several left aside by interrupted swaps ({names}); "
                    f"rename the right one back to {self.name} (docker rename) and run again"
                )
            self.em.fail(str(exc))
        except EngineDockerError as exc:
            self.em.fail(str(exc))
        leftovers = [
            c.name for c in docker.client.containers.list(all=True, filters={"name": f"{self.name}-previous-"})
            if is_aside_name(c.name, self.name)
        ]
        if leftovers:
            self.em.module.warn(
                f"{', '.join(sorted(leftovers))} left aside by an earlier interrupted swap of {self.name} still exist; "
                "remove them (docker rm) once the Engine is known good"
            )
        return container, False

    # -- the run ----------------------------------------------------------

    def replay_client(self, facts):
        key = self.params["engine_key"]
        url = self.params["engine_url"] or facts.engine_url()
        if not key or not url:
            return None
        try:
            return EngineClient(url, key=key, verify_tls=engine_tls_verify(self.params),
                                timeout=self.params["request_timeout"])
        except EngineClientError as exc:
            self.em.fail(f"Cannot move {facts.name}: invalid engine_url or engine_key: {exc}. Nothing was changed")

    def drain(self, container, facts):
        options = DrainOptions(grace_period=self.params["grace_period"])
        report = drain_container(container, options, replay_client=self.replay_client(facts))
        for warning in drain_warnings(report):
            self.em.module.warn(warning)
        self.result["drain"] = report.to_dict()
        return report

    def run(self) -> None:
        self.validate()
        client = self.em.docker.client
        container, resumed = self.find()
        attrs = container.attrs
        old_facts = facts_from_inspect(attrs)
        old_image = old_facts.image
        running = is_running(attrs)
        target = self.params["image"] or old_image
        self.result["image"] = target

        pulled = False
        target_id = None
        if self.params["image"] is not None:
            try:
                check = ensure_image(client, target, self.params["pull"], check_mode=self.em.check_mode,
                                     owner=self.name)
            except ContainerError as exc:
                self.em.fail(str(exc), container=old_facts.to_dict())
                raise  # unreachable
            pulled = check.pulled
            target_id = check.id
            if pulled:
                self.actions.append(f"pull {target}")
        compose = self.plan_compose(old_facts, target) if self.params["image"] is not None else None
        if self.state == "pulled":
            if compose is not None:
                self.result["compose"] = compose.to_dict()
            self.result.update(changed=pulled, pulled=pulled, actions=self.actions, container=old_facts.to_dict())
            self.em.exit(**self.result)
        image_changed = not same_image_name(target, old_image) or (target_id is not None and target_id != attrs.get("Image"))
        try:
            env_changed = env_changes(attrs, self.env)
        except ContainerError as exc:
            self.em.fail(f"Cannot move {self.name}: {exc}")
            raise  # unreachable
        recreate = image_changed or bool(env_changed)
        rename_back = resumed and not recreate
        start_after = self.state == "started"

        plan: list[str] = []
        if recreate:
            if running:
                plan.append(f"drain {container.name}")
            plan.append(f"recreate {self.name} on {target}")
            if start_after:
                plan.append(f"start {self.name}")
        else:
            if rename_back:
                plan.append(f"rename {container.name} back to {self.name}")
            if self.state == "started" and not running:
                plan.append(f"start {self.name}")
            elif self.state == "stopped" and running:
                plan.append(f"drain {self.name}")
        if compose is not None:
            plan.extend(compose.actions())
            self.result["compose"] = compose.to_dict()
        changed = bool(plan)

        self.result.update(
            changed=changed,
            recreated=recreate,
            pulled=pulled,
            image_changed=image_changed,
            env_changed=env_changed,
            previous_image=old_image if image_changed else old_facts.previous_image,
        )
        if self.params["wait_healthy"]:
            try:
                self._health_client(old_facts)
            except EngineClientError as exc:
                self.em.fail(f"Cannot wait for {self.name} to be healthy: {exc}. Nothing was changed")
        after_state = self._after_state(old_facts.state, running, recreate)
        if self.em.diff_mode:
            current = env_to_dict((attrs.get("Config") or {}).get("Env"))
            self.result["diff"] = {
                "before": self._view(old_image, old_facts.state, old_facts.previous_image,
                                     {k: "set" if k in current else "unset" for k in sorted(self.env)}),
                "after": self._view(target, after_state, self.result["previous_image"],
                                    {k: "set (changed)" if k in env_changed else "set" for k in sorted(self.env)}),
            }
            if compose is not None and compose.changed:
                self.result["diff"] = [self.result["diff"]] + [edit.diff() for edit in compose.edits]

        timings = SwapTimings()
        self.result["timings"] = timings.to_dict()
        if self.em.check_mode:
            self.actions.extend(plan)
        if self.em.check_mode or (not changed and not (self.params["wait_healthy"] and start_after)):
            self.result["actions"] = self.actions
            self.result["container"] = old_facts.to_dict()
            self.em.exit(**self.result)

        if recreate:
            new_id, timings = self._recreate(container, attrs, old_facts, running, target, start_after)
            if start_after and "health" not in self.result:
                inspect = observe(client, new_id, self.params["settle_time"])
            else:
                inspect = client.api.inspect_container(new_id)
        else:
            try:
                if rename_back:
                    aside = container.name
                    container.rename(self.name)
                    self.actions.append(f"renamed {aside} back to {self.name}")
                if self.state == "started" and not running:
                    container.start()
                    timings.new_started = time.time()
                    self.actions.append(f"started {self.name}")
                    container.reload()
                    inspect = None if self.params["wait_healthy"] else observe(client, container.id,
                                                                               self.params["settle_time"])
                elif self.state == "stopped" and running:
                    self.drain(container, old_facts)
                    self.actions.append(f"drained {self.name}")
                    inspect = client.api.inspect_container(container.id)
                else:
                    inspect = client.api.inspect_container(container.id)
            except DrainError as exc:
                self.em.fail(str(exc), actions=self.actions)
                raise  # unreachable
            except Exception as exc:  # noqa: BLE001 - Docker SDK errors of any kind
                verb = {"started": "start", "stopped": "stop", "present": "rename"}[self.state]
                self.em.fail(
                    f"Cannot {verb} {self.name}: {getattr(exc, 'explanation', None) or exc}",
                    actions=self.actions,
                )
                raise  # unreachable
            if self.params["wait_healthy"]:
                self.record_health(self.wait_healthy(container.id), timings)
                inspect = client.api.inspect_container(container.id)
        facts = facts_from_inspect(inspect)
        self.result["timings"] = timings.to_dict()
        if compose is not None and compose.changed:
            self.write_compose(compose, facts)
        self.result["actions"] = self.actions
        self.result["container"] = facts.to_dict()
        if self.result.get("healthy") is False:
            self.em.fail(
                f"{self.health_failure} (left on {facts.image} for a rollback; nothing was undone)",
                **self.result,
            )
        self.em.exit(**self.result)

    # -- the health wait --------------------------------------------------

    def _health_client(self, facts) -> EngineClient:
        """The client that probes ``/health`` of the container of ``facts``; :class:`EngineClientError` if none can."""
        url = self.params["engine_url"] or facts.engine_url()
        if not url:
            raise EngineClientError(f"the container {facts.name} publishes no port 8000; set engine_url")
        return EngineClient(url, key=None, verify_tls=engine_tls_verify(self.params),
                            timeout=self.params["request_timeout"])

    def wait_healthy(self, container_id: str) -> WaitOutcome:
        """Probe the started container's ``/health`` until it is ready, it dies, or ``health_timeout`` passes."""
        try:
            facts, watch = container_watcher(self.em.docker, container_id, HEALTH_LOG_LINES)
            client = self._health_client(facts)
        except (EngineDockerError, EngineClientError) as exc:
            return WaitOutcome(False, HealthReport(url="", ready=False, reason=str(exc)), 0.0, 0)
        return wait_ready(client.health, watch, self.params["health_timeout"], self.params["health_interval"])

    def record_health(self, outcome: WaitOutcome, timings: SwapTimings) -> None:
        """The health wait's outcome in the result; the time it got healthy in ``timings``."""
        self.result["health"] = outcome.result()
        self.result["healthy"] = outcome.ready
        if outcome.ready:
            if timings.healthy is None:
                timings.healthy = time.time()
        else:
            self.health_failure = outcome.failure(self.name)

    # -- the compose project ----------------------------------------------

    def plan_compose(self, facts, target):
        """The edits that keep the container's compose project in step with ``target``; fails before any change."""
        labels = facts.labels
        try:
            project = project_of(labels)
        except ComposeError as exc:
            project = None
            if self.params["compose_sync"]:
                self._compose_fail(target, exc, facts)
        if project is None:
            return None
        if not self.params["compose_sync"]:
            if not same_image_name(target, facts.image):
                self.em.module.warn(
                    f"{self.name} belongs to compose project {project.project!r} and compose_sync is false: its "
                    f"files are left alone, so a later docker compose up -d puts back the image they name"
                )
            return None
        try:
            plan = plan_sync(project, target, read_project_files(project))
        except ComposeError as exc:
            self._compose_fail(target, exc, facts)
            raise  # unreachable
        if plan.changed and not same_image_name(plan.image_before, facts.image):
            self.em.module.warn(
                f"The files of compose project {project.project!r} named {plan.image_before}, not {facts.image} that "
                f"{self.name} ran: they now name {target}"
            )
        return plan

    def _compose_fail(self, target, exc, facts) -> None:
        self.em.fail(
            f"Cannot move {self.name} to {target} and keep its compose project in step: {exc}. Nothing was changed "
            "(compose_sync: false moves the container anyway; a later docker compose up -d would then undo the move)",
            container=facts.to_dict(),
        )

    def write_compose(self, plan, facts) -> None:
        """Write the planned edits (each file backed up first); fail saying the container moved when one cannot be."""
        for edit in plan.edits:
            try:
                write_edit(edit)
            except ComposeError as exc:
                self.em.fail(
                    f"{self.name} is on {plan.image_after} now, but its compose project {plan.project.project!r} "
                    f"could not be kept in step: {exc}. Make {edit.path} name {plan.image_after} ({edit.change} "
                    f"{edit.before} -> {edit.after}), or a later docker compose up -d puts {plan.image_before} back",
                    actions=self.actions, compose=plan.to_dict(), container=facts.to_dict(), changed=True,
                )
            self.actions.append(f"edited {edit.path}: {edit.change} {edit.before} -> {edit.after} (backup {edit.backup})")
        self.result["compose"] = plan.to_dict()

    def _recreate(self, container, attrs, old_facts, running, target, start_after) -> str:
        client = self.em.docker.client
        try:
            old_image_attrs = own_image(client, attrs)
        except ContainerError as exc:
            self.em.fail(f"Cannot move {self.name} to {target}: {exc}. Nothing was changed")
            raise  # unreachable
        if running and (attrs.get("HostConfig") or {}).get("AutoRemove"):
            self.em.fail(
                f"Cannot move {self.name} to {target}: it was created with --rm, so stopping it deletes it and a "
                "failed swap could not be undone; recreate it once without --rm. Nothing was changed"
            )
        try:
            spec = derive_spec(attrs, old_image_attrs, target, env=self.env, name=self.name,
                               record_previous=not same_image_name(old_facts.image, target))
        except ContainerError as exc:
            self.em.fail(f"Cannot move {self.name} to {target}: {exc}. Nothing was changed")
            raise  # unreachable
        self.result["carried"] = spec.summary()
        swapper = Swapper(client, container, spec, start=start_after, was_running=running,
                          stop_old=lambda c: self.drain(c, old_facts),
                          wait_healthy=self.wait_healthy if self.params["wait_healthy"] else None)
        try:
            swap = swapper.run()
        except ContainerError as exc:
            partial = dict(exc.partial)
            partial.pop("actions", None)
            self.em.fail(str(exc), actions=self.actions + swapper.result.actions, **partial)
            raise  # unreachable
        self.actions.extend(swap.actions)
        for warning in swap.warnings:
            self.em.module.warn(warning)
        self.result["swap"] = swap.to_dict()
        if swap.health is not None:
            self.record_health(swap.health, swap.timings)
        return swap.new_id, swap.timings

    def _after_state(self, state: str, running: bool, recreate: bool) -> str:
        if self.state == "started":
            return state if state == "restarting" and not recreate else "running"
        if recreate:
            return "created"
        if self.state == "stopped" and running:
            return "exited"
        return state

    def _view(self, image: str, state: str, previous: str | None, env: dict[str, str]) -> dict:
        """One side of the diff: image, state, the recorded previous image and the O(env) names (never values)."""
        view = {"name": self.name, "image": image, "state": state, "previous_image": previous}
        if env:
            view["env"] = env
        return view


def main() -> None:
    em = EngineModule(ARGUMENT_SPEC, needs_http=False, required_if=[("state", "pulled", ["image"])])
    EngineContainer(em).run()


if __name__ == "__main__":
    main()
