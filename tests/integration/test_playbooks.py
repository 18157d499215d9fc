"""The roles and playbooks end to end: real ``ansible-playbook`` runs on real fleets with traffic flowing."""
from __future__ import annotations

import json

import pytest

from tests.engine_sim import releases
from tests.integration.rollouts import container_ids, explain, ledger_records, versions, with_traffic, write_inventory


@pytest.mark.timeout(2400)  # a fleet of real Engines; slow on a loaded machine
def test_batched_upgrade_to_the_patch(make_fleet, play, tmp_path):
    fleet = make_fleet(6)
    inventory = write_inventory(fleet, tmp_path)
    proc, report = with_traffic(fleet, lambda: play(
        "engineops.fleet.upgrade", inventory, {"engine_target_version": releases.tag("patch")},
        ANSIBLE_CALLBACKS_ENABLED="engineops.fleet.rollout_report",
        ENGINEOPS_ROLLOUT_REPORT_DIR=str(tmp_path / "reports")))
    assert proc.returncode == 0, explain(proc)
    assert set(versions(fleet).values()) == {releases.tag("patch")}
    assert report.lost == [], report.summary()
    assert report.counts()["completed"] > 0
    # The report gives each Engine its own outage and the time each of its gates took.
    [report_json] = (tmp_path / "reports").glob("*/report.json")
    for entry in json.loads(report_json.read_text())["engines"]:
        assert 0 < entry["outage"]["outage_seconds"] < 60, entry["outage"]
        assert set(entry["gate_times"]) == {"health", "evals", "metrics"}, entry["gate_times"]
        assert all(seconds >= 0 for seconds in entry["gate_times"].values()), entry["gate_times"]
        assert entry["gate_times"]["evals"] > 0 and entry["gate_times"]["metrics"] > 0, entry["gate_times"]
    # serial ["10%", "50%", "100%"] of 6 hosts: batches of 1, 3 and 2.
    batches = [line for line in proc.stdout.splitlines() if line.startswith("PLAY [Upgrade the Engines in batches]")]
    assert len(batches) == 3, explain(proc)
    # The ledger has every Engine verified, in the batches serial formed.
    records = [json.loads(p.read_text()) for p in (tmp_path / "ledger" / "upgrade-2.3.1").glob("*.json")]
    assert sorted(r["status"] for r in records) == ["verified"] * 6
    sizes = [len(b) for b in sorted({tuple(r["facts"]["batch"]) for r in records}, key=min)]
    assert sizes == [1, 3, 2], sizes
    # Just in time: each batch's snapshots are taken after the batch before it was verified, not all up front.
    step_time = {r["engine"]: {s["step"]: s["time"] for s in r["steps"]} for r in records}
    by_batch = sorted({tuple(r["facts"]["batch"]) for r in records}, key=min)
    for earlier, later in zip(by_batch, by_batch[1:]):
        verified = max(step_time[e]["verify"] for e in earlier)
        assert all(step_time[e]["snapshot"] > verified for e in later), (earlier, later, step_time)
    assert all(step_time[r["engine"]]["snapshot"] > step_time[r["engine"]]["preflight"] for r in records)
    for r in records:
        assert r["facts"]["snapshot"] and 0 <= int(r["facts"]["snapshot_age_at_drain"]) < 600, r["facts"]

    # Again: every Engine is on the target and is left alone.
    before = container_ids(fleet)
    again = play("engineops.fleet.upgrade", inventory, {"engine_target_version": releases.tag("patch")})
    assert again.returncode == 0, explain(again)
    assert container_ids(fleet) == before


@pytest.mark.parametrize(("target", "extra", "message"), [
    ("2.2.0", {}, "use the rollback playbook"),
    ("3.0.0", {}, "is a major upgrade"),
])
def test_downgrade_and_unacknowledged_major_are_refused(make_fleet, play, tmp_path, target, extra, message):
    fleet = make_fleet(1)
    inventory = write_inventory(fleet, tmp_path)
    before = container_ids(fleet)
    proc = play("engineops.fleet.upgrade", inventory, {"engine_target_version": target, **extra})
    assert proc.returncode != 0, explain(proc)
    assert message in proc.stdout, explain(proc)
    assert container_ids(fleet) == before


@pytest.mark.timeout(2400)  # a fleet of real Engines; slow on a loaded machine
def test_canary_rollout_to_the_patch(make_fleet, play, tmp_path):
    fleet = make_fleet(5)
    # The rest in one batch: batches are the batched test's business.
    inventory = write_inventory(fleet, tmp_path, engine_canary_observe_seconds=15, engine_batches=["100%"])
    proc, report = with_traffic(fleet, lambda: play(
        "engineops.fleet.upgrade", inventory, {"engine_target_version": releases.tag("patch"), "engine_rollout": "canary"}))
    assert proc.returncode == 0, explain(proc)
    assert set(versions(fleet).values()) == {releases.tag("patch")}
    assert "Compare the canary with the control cohort" in proc.stdout
    assert report.lost == [], report.summary()


@pytest.mark.timeout(2400)  # a fleet of real Engines; slow on a loaded machine
def test_canary_catches_a_bad_release_and_only_the_canary_is_touched(make_fleet, play, tmp_path):
    fleet = make_fleet(5)
    inventory = write_inventory(fleet, tmp_path, engine_canary_observe_seconds=15)
    before = container_ids(fleet)
    proc, report = with_traffic(fleet, lambda: play(
        "engineops.fleet.upgrade", inventory,
        {"engine_target_version": releases.tag("bad-answers"), "engine_rollout": "canary"}))
    assert proc.returncode != 0, explain(proc)
    after = container_ids(fleet)
    touched = [name for name in before if after[name] != before[name]]
    assert len(touched) == 1, explain(proc)  # 5% of 5, at least one
    assert versions(fleet) == {e.name: releases.tag("baseline") for e in fleet.engines}
    assert report.lost == [], report.summary()
    fleet.wait_healthy(30)


def test_single_engine_is_watched_and_rolled_back_by_itself(make_fleet, play, tmp_path):
    fleet = make_fleet(1)
    inventory = write_inventory(fleet, tmp_path, engine_watch_seconds=10)
    proc, report = with_traffic(fleet, lambda: play(
        "engineops.fleet.upgrade", inventory, {"engine_target_version": releases.tag("bad-errors"), "engine_rollout": "single"}))
    assert proc.returncode != 0, explain(proc)
    assert "Watch the single Engine before calling it done" in proc.stdout
    assert "image rollback (schema unchanged)" in proc.stdout, explain(proc)
    assert versions(fleet) == {fleet.engines[0].name: releases.tag("baseline")}
    assert report.lost == [], report.summary()
    fleet.wait_healthy(30)


def test_step_playbooks_health_snapshot_evals(make_fleet, play, tmp_path):
    fleet = make_fleet(1)
    inventory = write_inventory(fleet, tmp_path)
    engine = fleet.engines[0]
    proc = play("engineops.fleet.health", inventory)
    assert proc.returncode == 0 and "ready" in proc.stdout, explain(proc)
    proc = play("engineops.fleet.snapshot", inventory)
    assert proc.returncode == 0, explain(proc)
    assert len(list((tmp_path / "snapshots" / engine.name).glob("*.db"))) == 1
    proc = play("engineops.fleet.evals", inventory, {"engine_eval_mode": "baseline"})
    assert proc.returncode == 0, explain(proc)
    assert (tmp_path / "baselines" / engine.name / "evals.json").is_file()
    proc = play("engineops.fleet.evals", inventory, {"engine_eval_mode": "compare"})
    assert proc.returncode == 0 and "verdict pass" in proc.stdout, explain(proc)
    # A stopped Engine is reported not ready and fails the health playbook.
    fleet.container(engine).stop(timeout=30)
    proc = play("engineops.fleet.health", inventory)
    assert proc.returncode != 0 and "NOT READY" in proc.stdout, explain(proc)


def test_check_mode_prints_the_plan_and_changes_nothing(make_fleet, play, tmp_path):
    fleet = make_fleet(3)
    inventory = write_inventory(fleet, tmp_path)
    before = container_ids(fleet)
    patch = releases.tag("patch")
    changelog = tmp_path / "CHANGELOG.md"
    changelog.write_text("## 2.3.1\n- Faster tool calls\n- BREAKING: the /v1 alias of /execute is gone\n- Fixed a typo\n")
    proc = play("engineops.fleet.upgrade", inventory, {"engine_target_version": patch, "engine_changelog": str(changelog)},
                "--check")
    assert proc.returncode == 0, explain(proc)
    out = proc.stdout
    # The changelog's breaking-change lines are shown, and only those.
    assert "BREAKING: the /v1 alias of /execute is gone" in out and "Faster tool calls" not in out, explain(proc)
    assert f"batched rollout of 3 Engine(s) to {patch}" in out, explain(proc)
    # serial ["10%", "50%", "100%"] of 3 hosts: 1, 1, then the last.
    assert "batch 1/3" in out and "batch 3/3" in out, explain(proc)
    assert "right before that batch drains" in out and "forks=" not in out, explain(proc)
    for engine in fleet.engines:
        assert f"{engine.name}: {releases.tag('baseline')} -> {patch} (patch)" in out, explain(proc)
    assert "rollback: image (a patch keeps the schema)" in out and "free in" in out, explain(proc)
    assert "PLAY [Upgrade the Engines in batches]" in out and "skipping: no hosts matched" in out
    assert container_ids(fleet) == before
    assert not list((tmp_path / "snapshots").glob("*/*.db")), "check mode took a snapshot"
    assert not list((tmp_path / "ledger").glob("*/*.json")), "check mode wrote the ledger"
    assert not (tmp_path / "baselines").exists() or not list((tmp_path / "baselines").glob("*/*.json"))

    # With fewer forks than a batch has Engines, the plan says so.
    narrow = play("engineops.fleet.upgrade", inventory, {"engine_target_version": patch, "engine_batches": [1, 2]},
                  "--check", ANSIBLE_FORKS="1")
    assert narrow.returncode == 0, explain(narrow)
    assert "(forks=1: only 1 of its 2 Engines at once; run with -f 2)" in narrow.stdout, explain(narrow)


def test_bad_rollout_options_are_refused_by_name(make_fleet, play, tmp_path):
    fleet = make_fleet(1)
    inventory = write_inventory(fleet, tmp_path)
    proc = play("engineops.fleet.upgrade", inventory,
                {"engine_target_version": releases.tag("patch"), "engine_failure_policy": "carry-on"})
    assert proc.returncode != 0 and "engine_failure_policy=carry-on (stop or quarantine)" in proc.stdout, explain(proc)


@pytest.mark.timeout(1800)
def test_acknowledged_major_is_rehearsed_on_a_staging_engine_then_rolled_out(make_fleet, play, tmp_path, docker_client):
    fleet = make_fleet(2)
    inventory = write_inventory(fleet, tmp_path)
    major = releases.tag("major")
    proc, report = with_traffic(fleet, lambda: play("engineops.fleet.upgrade", inventory, {
        "engine_target_version": major, "engine_rollout": "sequential",
        "engine_ack_major": major.split(".")[0],
        "engine_major_required_env": ["LLM_EMBEDDING_MODEL"],
        "engine_major_env": {"LLM_EMBEDDING_MODEL": "embed-test-1"},
        "engine_target_message_field": "prompt"}))
    assert proc.returncode == 0, explain(proc)
    assert "PLAY [Rehearse the upgrade on a staging Engine before any Engine is touched]" in proc.stdout
    assert "Stage the target release on a copy of the brain" in proc.stdout, explain(proc)
    assert set(versions(fleet).values()) == {major}
    assert not docker_client.containers.list(all=True, filters={"name": "staging"}), "a staging Engine was left"
    for engine in fleet.engines:
        env = fleet.container(engine).attrs["Config"]["Env"]
        assert "LLM_EMBEDDING_MODEL=embed-test-1" in env
    records = ledger_records(tmp_path, f"upgrade-{major}")
    assert {k: r["status"] for k, r in records.items()} == {e.name: "verified" for e in fleet.engines}
    staged = [k for k, r in records.items() if any(s["step"] == "staging" for s in r["steps"])]
    assert len(staged) == 1, records
    # The traffic generator speaks the 2.x request shape; the 3.x Engines refuse it, so only nothing lost is checked.
    assert report.lost == [], report.summary()
