# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The staging role for real: ansible-playbook on a 1-Engine fleet, a staging Engine of the major or a bad release."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._staging import STAGING_LABEL
from tests.integration.rollouts import explain, write_inventory
from tests.testbed.images import image_ref

# Baseline on production, snapshot, then the role; the role's fact is written out whatever happens.
PLAYBOOK = """
- name: Stage a release
  hosts: engines
  gather_facts: false
  tasks:
    - name: Baseline, snapshot and staging
      module_defaults:
        group/engineops.fleet.engine:
          engine_key: "{{ engine_key }}"
      block:
        - name: Record the production eval baseline
          engineops.fleet.engine_eval:
            name: "{{ inventory_hostname }}"
            mode: baseline
            suite: "{{ engine_eval_suite }}"
            baseline: "{{ engine_baseline_dir }}/{{ inventory_hostname }}/evals.json"

        - name: Snapshot the production brain
          engineops.fleet.engine_snapshot:
            name: "{{ inventory_hostname }}"
            snapshot_dir: "{{ engine_snapshot_dir }}"
            reason: pre-upgrade
          register: snap

        - name: Stage
          ansible.builtin.include_role:
            name: engineops.fleet.staging
          vars:
            engine_pre_snapshot: "{{ snap.snapshot.name }}"
      always:
        - name: Write the staging result
          ansible.builtin.copy:
            content: "{{ engine_staging_result | default({}) | to_json }}"
            dest: "{{ result_dir }}/{{ inventory_hostname }}.json"
            mode: "0600"
          delegate_to: localhost
"""


def stage(fleet, run_playbook, tmp_path: Path, release: str, message_field: str) -> tuple:
    engine = fleet.engines[0]
    inventory = write_inventory(
        fleet, tmp_path,
        engine_eval_suite=str(Path(__file__).resolve().parents[2] / "evals" / "reference-suite.yml"),
        engine_health_timeout=90,
        engine_target_image=image_ref(release),
        engine_major_env={"LLM_EMBEDDING_MODEL": "text-embedding-3-small"},
        engine_staging_message_field=message_field,
        result_dir=str(tmp_path),
    )
    (tmp_path / "stage.yml").write_text(PLAYBOOK)
    proc = run_playbook(tmp_path / "stage.yml", inventory)
    result_file = tmp_path / f"{engine.name}.json"
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    return proc, result


@pytest.fixture
def no_staging_left(docker_client):
    """Asserts after the test that nothing named *-staging (or labelled staging) is left; removes it if it is."""
    engines: list[str] = []
    yield engines
    left = []
    for engine in engines:
        for container in docker_client.containers.list(all=True, filters={"name": f"{engine}-staging"}):
            left.append(container.name)
            container.remove(force=True)
        for volume in docker_client.volumes.list(filters={"label": f"{STAGING_LABEL}={engine}"}):
            left.append(volume.name)
            volume.remove(force=True)
    assert left == [], f"the role left {left}"


def test_staging_the_major_passes_and_leaves_nothing(make_fleet, run_playbook, tmp_path, no_staging_left):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    no_staging_left.append(engine.name)
    before = fleet.container(engine).attrs
    proc, result = stage(fleet, run_playbook, tmp_path, "major", "prompt")
    assert proc.returncode == 0, explain(proc)
    assert result["verdict"] == "pass", result
    evidence = result["evidence"]
    assert evidence["staging"]["name"] == f"{engine.name}-staging"
    assert evidence["staging"]["image"] == image_ref("major")
    assert evidence["health"]["ready"] is True
    assert evidence["evals"]["comparison"]["cases_compared"] > 0
    assert engine.key not in proc.stdout
    after = fleet.container(engine).attrs
    assert (after["Id"], after["Config"]["Image"], after["State"]["StartedAt"]) == (
        before["Id"], before["Config"]["Image"], before["State"]["StartedAt"])


def test_a_bad_release_fails_on_staging_and_is_still_removed(make_fleet, run_playbook, tmp_path, no_staging_left):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    no_staging_left.append(engine.name)
    proc, result = stage(fleet, run_playbook, tmp_path, "bad-answers", "message")
    assert proc.returncode != 0, explain(proc)
    assert result["verdict"] == "fail", result
    assert result["evidence"]["evals"]["comparison"]["regressions"], result
    assert "staging" in proc.stdout and "failed (fail)" in proc.stdout, explain(proc)
    assert "Remove the staging Engine and its volume" in proc.stdout, explain(proc)
    fleet.wait_healthy(10)
