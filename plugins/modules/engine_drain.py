#!/usr/bin/python
# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: engine_drain
short_description: Drain one Engine and report the turns it cut
version_added: 0.1.0
description:
  - Stops an Engine's container the way the Engine's documentation asks, with C(docker stop --timeout) semantics. SIGTERM
    starts a graceful shutdown in which turns in flight finish; SIGKILL follows if the container still runs when
    the grace period ends. A turn cut by SIGKILL is lost.
  - Waits for the container to exit and reports the turns that were in flight when the drain began and how many of
    them did not finish, whether the grace period ran out and SIGKILL was needed, the exit code and the time taken.
  - The Engine's documentation names the line a turn logs when it starts (C(Starting execution)) but not the line
    it logs when it ends, nor whether it logs one. The turns are therefore counted from the completion lines named
    in O(completion_messages) when the Engine is seen to log them, else from the Engine's documented event replay
    (C(GET /execute/replay), which needs O(engine_key)); with neither, the count is reported as unknown rather than
    guessed. An Engine that exits by itself within the grace period has, by its documentation, finished every turn
    in flight.
  - A container that does not run is left alone and reported with C(changed=false).
  - The container's restart policy does not bring it back, as Docker treats the SIGTERM as a stop.
options:
  name:
    description:
      - Name of the Engine's container, for example V(engine-042).
    type: str
    required: true
  state:
    description:
      - V(drained) stops the Engine gracefully; nothing else is supported.
    type: str
    choices: [drained]
    default: drained
  grace_period:
    description:
      - Seconds between SIGTERM and SIGKILL, as C(docker stop --timeout).
      - V(0) sends SIGKILL at once.
    type: int
    default: 30
  turn_accounting:
    description:
      - Where the turns in flight are counted from.
      - V(auto) uses the logs when a line of O(completion_messages) shows the Engine logs turn completions, else the
        event replay when O(engine_key) is set, else reports the count as unknown.
      - V(logs) trusts O(completion_messages) to be the Engine's completion line, even if none was seen yet (a turn
        without one did not finish).
      - V(replay) reads C(GET /execute/replay) before the SIGTERM and during the drain (needs O(engine_key)); it
        fails before anything is stopped if the replay cannot be read.
      - V(none) does not count turns.
    type: str
    choices: [auto, logs, replay, none]
    default: auto
  completion_messages:
    description:
      - The C(message) of the log line the Engine writes when a turn completes, in any of its known forms.
      - The Engine's documentation leaves this open; V(Execution completed) and V(Turn finished) are the forms seen.
    type: list
    elements: str
    default: [Execution completed, Turn finished]
  error_ends_turn:
    description:
      - Whether an ERROR log line that names a turn's C(request_id) (or C(task_id)) ends that turn, as failed.
      - The Engine logs a failed turn that way rather than with a completion line.
    type: bool
    default: true
  log_window:
    description:
      - How many seconds of log before the drain are read to find the turns in flight; never more than since the
        container last started.
    type: int
    default: 3600
  clean_exit_codes:
    description:
      - Exit codes of a clean drain. The Engine's documentation leaves it open; V(0) and V(143) are seen.
      - Another exit code (without SIGKILL) is reported with RV(drain.clean_exit=false) and a warning.
    type: list
    elements: int
    default: [0, 143]
extends_documentation_fragment:
  - engineops.fleet.engine
  - engineops.fleet.engine.actiongroup
attributes:
  check_mode:
    support: full
    description: Sends no signal; reports whether the container would be drained and the turns in flight now.
  diff_mode:
    support: full
    description: Shows the container's state before and after.
  idempotent:
    support: full
    description: A container that does not run is not touched.
notes:
  - O(engine_url) and O(engine_key) are used only for the event replay.
  - A turn accepted in the instant between the last look at the logs and the SIGTERM is counted as in flight.
seealso:
  - module: engineops.fleet.engine_container
  - module: engineops.fleet.engine_info
author:
  - engineops.fleet contributors (@engineops)
"""

EXAMPLES = r"""
- name: Drain one Engine with the documented grace period
  engineops.fleet.engine_drain:
    name: engine-042
  register: drain

- name: Stop the rollout if the drain cut turns
  ansible.builtin.assert:
    that:
      - drain.drain.not_finished is not none
      - drain.drain.not_finished == 0
    fail_msg: "{{ drain.drain.not_finished }} turns of engine-042 were cut: {{ drain.drain.cut_turns }}"

- name: Drain an Engine that logs no completion line, counting turns from its replay
  engineops.fleet.engine_drain:
    name: engine-007
    grace_period: 60
    turn_accounting: replay
    engine_key: "{{ vault_engine_key }}"

- name: Drain an Engine whose completion line has another wording
  engineops.fleet.engine_drain:
    name: engine-001
    completion_messages:
      - Request done
"""

RETURN = r"""
drain:
  description: What the drain did and saw.
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
    was_running:
      description: Whether the container ran (or was in a restart loop) when the module started.
      type: bool
    state_before:
      description: Docker's state of the container before the drain.
      type: str
      sample: running
    state:
      description: Docker's state of the container after the drain (unchanged in check mode).
      type: str
      sample: exited
    signal:
      description:
        - V(SIGTERM), the first signal sent (in check mode, the one that would be); V(docker stop) for a container in
          a restart loop; V(null) when the container did not run.
      type: str
      sample: SIGTERM
    grace_period:
      description: The grace period used, in seconds.
      type: float
      sample: 30
    elapsed:
      description: Seconds from the SIGTERM to the container's exit.
      type: float
      sample: 3.2
    grace_expired:
      description: Whether the container outlived the grace period, so SIGKILL was sent.
      type: bool
    killed:
      description: Whether the container died of SIGKILL (exit code 137 after the grace ran out) or of the OOM killer.
      type: bool
    oom_killed:
      description: Whether Docker reports the container was killed for lack of memory.
      type: bool
    exit_code:
      description: The container's exit code, V(null) if it never ran.
      type: int
      sample: 0
    clean_exit:
      description: Whether the exit code is one of O(clean_exit_codes) and no SIGKILL was needed.
      type: bool
    in_flight:
      description: Turns in flight when the drain began; V(null) when unknown (see RV(drain.account_note)).
      type: int
      sample: 1
    finished:
      description: Turns in flight that finished during the drain (completed or failed); V(null) when unknown.
      type: int
    completed:
      description: Turns in flight that completed; V(null) when unknown.
      type: int
    failed:
      description: Turns in flight that ended with an error; V(null) when unknown.
      type: int
    not_finished:
      description:
        - Turns in flight that did not finish (cut by SIGKILL, so lost); V(null) when unknown.
        - V(0) when the Engine exited by itself within the grace period and no source tells otherwise.
      type: int
      sample: 0
    turns:
      description:
        - The turns in flight when the drain began, when the source names them.
        - RV(drain.turns[].outcome) is V(completed), V(failed), V(finished) (ended, how is unknown), V(cut),
          V(in_flight) (check mode) or V(ambiguous) (cut or failed, as an error event named no turn).
      type: list
      elements: dict
      contains:
        task_id:
          description: The turn's C(task_id).
          type: str
          sample: chat-17
        request_id:
          description: The turn's C(request_id), when the source names it (the logs do, the replay does not).
          type: str
        started_at:
          description: When the turn started, as the source tells it (the log line's C(timestamp), the replay event's id).
          type: str
        ended_at:
          description: When the turn ended, if it did.
          type: str
        outcome:
          description: How the turn ended.
          type: str
          choices: [completed, failed, finished, cut, in_flight, ambiguous]
          sample: cut
    cut_turns:
      description: The turns of RV(drain.turns) whose outcome is V(cut).
      type: list
      elements: dict
    account_source:
      description:
        - Where the turn counts come from. V(logs), V(replay), V(exit) (no source, but the Engine exited by itself
          within the grace period, so nothing was cut), or V(none).
      type: str
      sample: logs
    account_note:
      description: Why a count is unknown or how to read it.
      type: str
engine:
  description: The container's facts after the drain, as M(engineops.fleet.engine_info) returns them.
  returned: success
  type: dict
"""

from ansible_collections.engineops.fleet.plugins.module_utils._common import EngineModule, engine_tls_verify
from ansible_collections.engineops.fleet.plugins.module_utils._docker import EngineDockerError, facts_from_inspect
from ansible_collections.engineops.fleet.plugins.module_utils._drain import (
    ACCOUNTING_MODES,
    DEFAULT_CLEAN_EXIT_CODES,
    DEFAULT_COMPLETION_MESSAGES,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_LOG_WINDOW,
    DrainError,
    DrainOptions,
    drain_container,
    drain_warnings,
    is_running,
)
from ansible_collections.engineops.fleet.plugins.module_utils._engine_http import EngineClient, EngineClientError

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "default": "drained", "choices": ["drained"]},
    "grace_period": {"type": "int", "default": DEFAULT_GRACE_PERIOD},
    "turn_accounting": {"type": "str", "default": "auto", "choices": list(ACCOUNTING_MODES)},
    "completion_messages": {"type": "list", "elements": "str", "default": list(DEFAULT_COMPLETION_MESSAGES)},
    "error_ends_turn": {"type": "bool", "default": True},
    "log_window": {"type": "int", "default": DEFAULT_LOG_WINDOW},
    "clean_exit_codes": {"type": "list", "elements": "int", "default": list(DEFAULT_CLEAN_EXIT_CODES)},
}


def replay_client(em: EngineModule, facts, mode: str) -> EngineClient | None:
    """The Engine's HTTP client for the replay, when the mode may use it and a key is set."""
    if mode not in ("auto", "replay") or not em.params["engine_key"]:
        if mode == "replay":
            em.fail(
                f"Cannot drain {facts.name} with turn_accounting=replay: GET /execute/replay needs the Engine's key; "
                "set engine_key (or ENGINE_KEY), or use turn_accounting=auto. Nothing was stopped"
            )
        return None
    url = em.params["engine_url"] or facts.engine_url()
    if not url:
        if mode == "replay":
            em.fail(
                f"Cannot drain {facts.name} with turn_accounting=replay: its container publishes no port 8000; "
                "set engine_url. Nothing was stopped"
            )
        return None
    try:
        return EngineClient(url, key=em.params["engine_key"], verify_tls=engine_tls_verify(em.params),
                            timeout=em.params["request_timeout"])
    except EngineClientError as exc:
        em.fail(f"Cannot drain {facts.name}: invalid engine_url or engine_key: {exc}. Nothing was stopped")
        raise  # unreachable


def drain_options(params) -> DrainOptions:
    return DrainOptions(
        grace_period=params["grace_period"],
        completion_messages=tuple(params["completion_messages"] or ()),
        turn_accounting=params["turn_accounting"],
        error_ends_turn=params["error_ends_turn"],
        log_window=params["log_window"],
        clean_exit_codes=tuple(params["clean_exit_codes"] or ()),
    )


def main() -> None:
    em = EngineModule(ARGUMENT_SPEC, needs_http=False)
    params = em.params
    name = params["name"]
    options = drain_options(params)
    try:
        options.validate(name)
    except DrainError as exc:
        em.fail(str(exc))
    try:
        container = em.docker.container(name)
    except EngineDockerError as exc:
        em.fail(str(exc))
        raise  # unreachable
    facts = facts_from_inspect(container.attrs)
    running = is_running(container.attrs)
    client = replay_client(em, facts, options.turn_accounting) if running else None
    try:
        report = drain_container(container, options, replay_client=client, check_mode=em.check_mode)
    except DrainError as exc:
        em.fail(str(exc), drain={"name": name, "id": container.id})
        raise  # unreachable
    for warning in drain_warnings(report):
        em.module.warn(warning)
    result = {"changed": report.changed, "drain": report.to_dict()}
    if em.check_mode:
        result["engine"] = facts.to_dict()
    else:
        container.reload()
        result["engine"] = facts_from_inspect(container.attrs).to_dict()
    if em.diff_mode:
        after = "exited" if report.changed else report.state_before
        result["diff"] = {
            "before": {"name": name, "state": report.state_before},
            "after": {"name": name, "state": report.state if not em.check_mode else after},
        }
    em.exit(**result)


if __name__ == "__main__":
    main()
