#!/usr/bin/python
# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: engine_ledger
short_description: Record and read the rollout ledger of one Engine
version_added: 0.1.0
description:
  - Keeps one JSON record per rollout and Engine on the controller, at C(<ledger_dir>/<rollout_id>/<engine>.json), with
    the Engine's status in the rollout and every step with its time, inputs, outcome and evidence.
  - With O(state=recorded), appends one step and, when given, sets the Engine's status. The record is written
    atomically (mode 0600, folder 0700) under a lock, so a killed controller leaves either the old or the new record.
  - With O(state=read), returns the record and, when the target version is known, what a re-run of the rollout must
    do with the Engine (RV(resume)), one of V(skip), V(start), V(finish_upgrade) or V(rollback).
  - The value of any key named like a key, token, secret or password (in O(inputs), O(facts) and O(evidence)) is
    replaced by C(********) before anything is stored or returned.
  - Always runs on the controller, in the controller's process (the collection's action plugin of the same name),
    whatever host the task is for; no C(delegate_to) is needed.
options:
  state:
    description:
      - V(recorded) appends a step to the Engine's record (created if missing).
      - V(read) returns the record (or, without O(engine), every record of the rollout) and changes nothing.
    type: str
    choices: [recorded, read]
    default: recorded
  rollout_id:
    description:
      - The rollout's id; names the rollout's folder in O(ledger_dir).
      - Letters, digits, C(.), C(_) and C(-), starting with a letter or a digit, without C(..).
      - If not set, the value of the E(ENGINEOPS_ROLLOUT_ID) environment variable is used, else C(<operation>-<target_version>),
        for example V(upgrade-2.4.0).
    type: str
  operation:
    description:
      - The first part of the rollout id derived when O(rollout_id) is not set, usually the playbook's name.
    type: str
    default: upgrade
  target_version:
    description:
      - The version the rollout moves the Engine to, for example V(2.4.0) (a C(v) prefix or an image reference is accepted).
      - Kept in the record's facts by O(state=recorded); with O(state=read), needed for RV(resume) unless the record has it.
    type: str
  engine:
    description:
      - The Engine's name, which names its record file; usually the inventory host name.
      - Required with O(state=recorded).
    type: str
  state_dir:
    description:
      - The home of the collection's state on the controller; the ledger is its C(ledger) folder unless O(ledger_dir)
        is set (the rollout_report callback writes to its C(reports) folder).
      - Under AWX, a path that outlives the job, exposed to the job's execution environment, so that a later job
        resumes the rollout.
      - If not set, the value of the E(ENGINEOPS_STATE_DIR) environment variable is used.
    type: path
    default: ~/.ansible/engineops
  ledger_dir:
    description:
      - The ledger's folder on the controller.
      - If not set, the value of the E(ENGINEOPS_LEDGER_DIR) environment variable is used, else C(<state_dir>/ledger).
    type: path
  step:
    description:
      - Name of the step recorded, for example V(preflight), V(snapshot), V(drain), V(swap), V(health), V(evals),
        V(metrics), V(verify), V(rollback).
      - Required with O(state=recorded).
    type: str
  outcome:
    description:
      - How the step ended.
    type: str
    choices: [ok, failed, skipped, inconclusive]
    default: ok
  status:
    description:
      - The Engine's status after this step. When not set, the status stays as it was, except that
        O(outcome=failed) sets V(failed).
    type: str
    choices: [pending, preflight_done, snapshotted, drained, swapped, healthy, verified, failed, rolling_back,
              rolled_back, quarantined]
  note:
    description:
      - A sentence about the step, shown in the rollout report.
    type: str
  started:
    description:
      - When the step began, as an ISO 8601 time (the C(now) function with C(utc=true) and C(isoformat) gives one),
        so the report can draw its duration. The step's end is the time it is recorded.
    type: str
  inputs:
    description:
      - What the step was given (versions, images, options). Redacted before it is stored.
    type: dict
    default: {}
  evidence:
    description:
      - What the step found, usually the registered result of the module that did it (for example
        M(engineops.fleet.engine_health), M(engineops.fleet.engine_eval), M(engineops.fleet.engine_metrics) or
        M(engineops.fleet.engine_snapshot)); the rollout report reads the gates' verdicts and evidence from it.
      - Ansible's bookkeeping (C(invocation), C(_ansible_*), C(diff)) is dropped, lists are cut at 50 items and
        strings at 4000 characters, and secrets are redacted.
    type: dict
  facts:
    description:
      - Facts about the Engine in this rollout, merged into the record (redacted).
      - Keys the resume decision and the report read are C(from_version), C(from_image), C(target_version),
        C(target_image), C(upgrade_kind), C(cohort), C(batch), C(fingerprint_before) (the brain's schema fingerprint
        before the upgrade), C(fingerprint_after), C(snapshot) and C(rollback_mode).
    type: dict
    default: {}
  current_version:
    description:
      - With O(state=read), the version the Engine runs now (RV(engineops.fleet.engine_info#module:engine.version)),
        for RV(resume). Unset or empty means it cannot be read.
    type: str
  current_fingerprint:
    description:
      - With O(state=read), the brain's schema fingerprint now
        (RV(engineops.fleet.engine_info#module:brain.fingerprint)), for RV(resume).
    type: str
  engine_running:
    description:
      - With O(state=read), whether the Engine's container runs now
        (RV(engineops.fleet.engine_info#module:engine.running)), for RV(resume).
    type: bool
  retry_rolled_back:
    description:
      - With O(state=read), whether RV(resume) upgrades again an Engine this rollout already rolled back
        (V(start)) instead of leaving it (V(skip)).
    type: bool
    default: false
attributes:
  action:
    support: full
    description: Runs on the controller, in-process, through the action plugin of the same name.
  async:
    support: none
    description: The ledger is written in the controller's process, never in the background.
  check_mode:
    support: full
    description: With O(state=recorded), writes nothing and returns the step and the record it would write.
  diff_mode:
    support: full
    description: Shows the Engine's status and step count before and after.
  idempotent:
    support: partial
    description:
      - O(state=read) changes nothing.
      - O(state=recorded) appends a step every time it runs; the ledger is a history.
notes:
  - The record is a history; nothing in it is ever removed by this module.
seealso:
  - plugin: engineops.fleet.rollout_report
    plugin_type: callback
author:
  - engineops.fleet contributors (@engineops)
"""

EXAMPLES = r"""
- name: Record the drain of this Engine
  engineops.fleet.engine_ledger:
    rollout_id: "{{ engine_rollout_id }}"
    engine: "{{ inventory_hostname }}"
    step: drain
    status: drained
    started: "{{ __upgrade_drain_started }}"
    evidence: "{{ __upgrade_drain }}"
  changed_when: false

- name: Decide what a re-run does with this Engine
  engineops.fleet.engine_ledger:
    state: read
    rollout_id: "{{ engine_rollout_id }}"
    engine: "{{ inventory_hostname }}"
    target_version: "{{ engine_target_version }}"
    current_version: "{{ __engine_info.engine.version | default('', true) }}"
    current_fingerprint: "{{ __engine_info.brain.fingerprint | default(omit) }}"
    engine_running: "{{ __engine_info.engine.running }}"
  register: __ledger

- name: Leave the Engines already on the target and verified
  ansible.builtin.meta: end_host
  when: __ledger.resume.action == 'skip'
"""

RETURN = r"""
rollout_id:
  description: The rollout's id, as given or derived.
  returned: always
  type: str
  sample: upgrade-2.4.0
ledger_dir:
  description: The ledger's folder.
  returned: always
  type: str
  sample: /home/ops/.ansible/engineops/ledger
path:
  description: The Engine's record file.
  returned: when O(engine) is set
  type: str
  sample: /home/ops/.ansible/engineops/ledger/upgrade-2.4.0/engine-042.json
exists:
  description: Whether the record file existed before this task.
  returned: when O(engine) is set
  type: bool
record:
  description:
    - The Engine's record after the task (in check mode, what it would be); V(null) when O(state=read) finds none.
  returned: when O(engine) is set
  type: dict
  contains:
    format:
      description: Format of the record.
      type: str
      sample: engineops.fleet.ledger/1
    rollout_id:
      description: The rollout's id.
      type: str
    engine:
      description: The Engine's name.
      type: str
    created:
      description: When the record was created, UTC.
      type: str
    updated:
      description: When the last step was recorded, UTC.
      type: str
    status:
      description: The Engine's status in the rollout.
      type: str
      sample: verified
    facts:
      description: Facts about the Engine in this rollout (see O(facts)).
      type: dict
    steps:
      description:
        - Every step, oldest first, with C(seq), C(step), C(time), C(outcome), C(status_before), C(status) and, when
          given, C(started), C(duration_seconds), C(note), C(inputs) and C(evidence).
      type: list
      elements: dict
recorded:
  description: The step appended (in check mode, the step that would be, with C(planned=true)).
  returned: when O(state=recorded)
  type: dict
  sample: {"seq": 4, "step": "drain", "time": "2026-05-01T10:02:03.120000Z", "outcome": "ok", "status_before": "snapshotted",
           "status": "drained"}
resume:
  description: What a re-run of the rollout does with the Engine, and why.
  returned: when O(state=read), O(engine) is set and the target version is known
  type: dict
  contains:
    action:
      description:
        - V(skip) (on the target and verified, rolled back or quarantined), V(start) (the whole upgrade),
          V(finish_upgrade) (the remaining upgrade steps and the verification) or V(rollback).
      type: str
      sample: finish_upgrade
    reason:
      description: Why, in words.
      type: str
    status:
      description: The recorded status.
      type: str
    last_step:
      description: The last step recorded.
      type: str
    current_version:
      description: The version the Engine runs, as given.
      type: str
    target_version:
      description: The target version.
      type: str
    schema:
      description: The brain's schema against the pre-upgrade one, V(changed), V(unchanged) or V(unknown).
      type: str
records:
  description: Every record of the rollout, by Engine name.
  returned: when O(state=read) and O(engine) is not set
  type: list
  elements: dict
skipped:
  description: Record files of the rollout that could not be read, each C(file) and C(reason).
  returned: when O(state=read) and O(engine) is not set
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.engineops.fleet.plugins.module_utils._ledger import ARGUMENT_SPEC, REQUIRED_IF, run_task


def main() -> None:
    # The collection's action plugin of the same name runs this task on the controller, in-process, with the
    # same argument spec and run_task(); this entry point is the module's own, for ansible-doc and sanity.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, required_if=REQUIRED_IF, supports_check_mode=True)
    result = run_task(module.params, module.check_mode, module._diff)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
