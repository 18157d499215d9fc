"""The roles and playbooks end to end: real ``ansible-playbook`` runs on real fleets with traffic flowing."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.engine_sim import releases
from tests.testbed.loadgen import LoadGenerator

# Small observation windows and probe counts: the tests are about the mechanics.
FAST = {
    "engine_metrics_probes": 20,
    "engine_eval_concurrency": 8,
    "engine_metrics_window": "10m",
    "engine_drain_grace": 30,
    "engine_health_timeout": 60,
}


@pytest.fixture
def play(run_playbook):
    """``run_playbook`` with enough forks for a whole fleet at once (the pre-flight runs on every Engine)."""

    def run(*args, **env):
        env.setdefault("ANSIBLE_FORKS", "16")
        return run_playbook(*args, **env)

    return run


def write_inventory(fleet, tmp_path: Path, **extra) -> Path:
    hosts = {
        e.name: {"engine_url": e.url, "engine_key": e.key}
        for e in fleet.engines
    }
    inventory = {
        "all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "engine_snapshot_dir": str(tmp_path / "snapshots"),
                "engine_baseline_dir": str(tmp_path / "baselines"),
                "engine_ledger_dir": str(tmp_path / "ledger"),
                **FAST,
                **extra,
            },
            "children": {"engines": {"hosts": hosts}},
        }
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    return path


def versions(fleet) -> dict[str, str]:
    return {e.name: fleet.container(e).attrs["Config"]["Image"].rsplit(":", 1)[-1] for e in fleet.engines}


def container_ids(fleet) -> dict[str, str]:
    return {e.name: fleet.container(e).id for e in fleet.engines}


def with_traffic(fleet, action):
    load = LoadGenerator(fleet.engines, seconds=900, pause=0.05).start()
    try:
        result = action()
    finally:
        report = load.stop()
    return result, report


def explain(proc) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-20000:]}\n--- stderr\n{proc.stderr[-5000:]}"


@pytest.mark.timeout(2400)  # a fleet of real Engines; slow on a loaded machine
def test_batched_upgrade_to_the_patch(make_fleet, play, tmp_path):
    fleet = make_fleet(6)
    inventory = write_inventory(fleet, tmp_path)
    proc, report = with_traffic(fleet, lambda: play(
        "engineops.fleet.upgrade", inventory, {"engine_target_version": releases.tag("patch")}))
    assert proc.returncode == 0, explain(proc)
    assert set(versions(fleet).values()) == {releases.tag("patch")}
    assert report.lost == [], report.summary()
    assert report.counts()["completed"] > 0
    # serial ["10%", "50%", "100%"] of 6 hosts: batches of 1, 3 and 2.
    batches = [line for line in proc.stdout.splitlines() if line.startswith("PLAY [Upgrade the Engines in batches]")]
    assert len(batches) == 3, explain(proc)
    # The ledger has every Engine verified, in the batches serial formed.
    records = [json.loads(p.read_text()) for p in (tmp_path / "ledger" / "upgrade-2.3.1").glob("*.json")]
    assert sorted(r["status"] for r in records) == ["verified"] * 6
    sizes = [len(b) for b in sorted({tuple(r["facts"]["batch"]) for r in records}, key=min)]
    assert sizes == [1, 3, 2], sizes

    # Again: every Engine is on the target and is left alone.
    before = container_ids(fleet)
    again = play("engineops.fleet.upgrade", inventory, {"engine_target_version": releases.tag("patch")})
    assert again.returncode == 0, explain(again)
    assert container_ids(fleet) == before


@pytest.mark.timeout(2400)  # a fleet of real Engines; slow on a loaded machine
def test_sequential_bad_release_is_rolled_back_by_image_and_stops_the_rollout(make_fleet, play, tmp_path):
    fleet = make_fleet(3)
    inventory = write_inventory(fleet, tmp_path)
    before = container_ids(fleet)
    proc, report = with_traffic(fleet, lambda: play(
        "engineops.fleet.upgrade", inventory,
        {"engine_target_version": releases.tag("bad-answers"), "engine_rollout": "sequential"}))
    assert proc.returncode != 0, explain(proc)
    assert "image rollback (schema unchanged)" in proc.stdout, explain(proc)
    after = container_ids(fleet)
    first, *rest = fleet.engines
    assert versions(fleet) == {e.name: releases.tag("baseline") for e in fleet.engines}
    assert after[first.name] != before[first.name]  # upgraded, then rolled back
    assert all(after[e.name] == before[e.name] for e in rest), "the rollout went on after a failed Engine"
    assert report.lost == [], report.summary()
    fleet.wait_healthy(30)


def test_minor_with_a_migration_is_rolled_back_with_a_brain_restore(make_fleet, play, tmp_path):
    fleet = make_fleet(2)
    inventory = write_inventory(fleet, tmp_path)
    proc, report = with_traffic(fleet, lambda: play(
        "engineops.fleet.upgrade", inventory,
        {"engine_target_version": releases.tag("bad-minor"), "engine_rollout": "sequential"},
        ANSIBLE_CALLBACKS_ENABLED="engineops.fleet.rollout_report",
        ENGINEOPS_ROLLOUT_REPORT_DIR=str(tmp_path / "reports")))
    assert proc.returncode != 0, explain(proc)
    assert "brain restore from" in proc.stdout, explain(proc)
    assert "the restore lost" in proc.stdout, explain(proc)
    # The rollout report has the rollback mode and the lost-write account.
    [report_json] = (tmp_path / "reports").glob("*/report.json")
    engines = {e["engine"]: e for e in json.loads(report_json.read_text())["engines"]}
    rollback = engines[fleet.engines[0].name]["rollback"]
    assert rollback["mode"] == "brain", rollback
    assert rollback["lost_writes"]["total"] >= 0, rollback
    assert engines[fleet.engines[0].name]["status"] == "rolled_back"
    assert versions(fleet) == {e.name: releases.tag("baseline") for e in fleet.engines}
    assert report.lost == [], report.summary()
    fleet.wait_healthy(30)
    quarantine = list((tmp_path / "snapshots" / fleet.engines[0].name / "quarantine").glob("*"))
    assert quarantine, "the replaced brain was not kept"


def test_missing_image_stops_before_any_engine_is_touched(make_fleet, play, tmp_path):
    fleet = make_fleet(2)
    inventory = write_inventory(fleet, tmp_path)
    before = container_ids(fleet)
    proc = play("engineops.fleet.upgrade", inventory, {"engine_target_version": "2.9.9"})
    assert proc.returncode != 0, explain(proc)
    assert "2.9.9" in proc.stdout and "pull the target image, before any engine is touched" in proc.stdout.lower(), explain(proc)
    assert container_ids(fleet) == before
    assert not list((tmp_path / "snapshots").glob("*/*.db")), "a snapshot was taken before the image was checked"


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
def test_rollback_playbook_restores_the_brain_of_a_migrated_engine(make_fleet, play, tmp_path):
    fleet = make_fleet(2)
    inventory = write_inventory(fleet, tmp_path)
    minor = releases.tag("minor")
    proc = play("engineops.fleet.upgrade", inventory, {"engine_target_version": minor, "engine_batches": ["100%"]})
    assert proc.returncode == 0, explain(proc)
    assert set(versions(fleet).values()) == {minor}
    first, second = fleet.engines
    # Ad hoc, one Engine: the schema moved (migration 0003), so the brain is restored, then verified.
    proc, report = with_traffic(fleet, lambda: play(
        "engineops.fleet.rollback", inventory, None, "--limit", first.name))
    assert proc.returncode == 0, explain(proc)
    assert "brain restore from" in proc.stdout and "schema changed" in proc.stdout, explain(proc)
    assert versions(fleet) == {first.name: releases.tag("baseline"), second.name: minor}
    assert report.lost == [], report.summary()
    # An explicit version on an Engine whose schema did not move back: forced brain restore.
    forced = {"engine_rollback_version": releases.tag("baseline"), "engine_rollback_restore_brain": True}
    proc = play("engineops.fleet.rollback", inventory, forced, "--limit", second.name)
    assert proc.returncode == 0, explain(proc)
    assert versions(fleet) == {e.name: releases.tag("baseline") for e in fleet.engines}
    fleet.wait_healthy(30)


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


@pytest.mark.parametrize("args", [
    ["-i", "inventories/demo"],
    ["-i", "inventories/example", "--vault-password-file", "inventories/example/vault-password.txt"],
])
def test_inventories_parse(args, tmp_path):
    import json
    import subprocess

    from tests.integration.conftest import BIN, ROOT, ansible_env

    proc = subprocess.run([str(BIN / "ansible-inventory"), *args, "--list"], cwd=ROOT, env=ansible_env(tmp_path),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    hostvars = json.loads(proc.stdout)["_meta"]["hostvars"]
    assert len(hostvars) == 12
    assert all("engine_url" in v and "engine_key" in v for v in hostvars.values())


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


def ledger_records(tmp_path: Path, rollout: str) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (tmp_path / "ledger" / rollout).glob("*.json")}


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
    for engine in fleet.engines:
        assert f"{engine.name}: {releases.tag('baseline')} -> {patch} (patch)" in out, explain(proc)
    assert "rollback: image (a patch keeps the schema)" in out and "free in" in out, explain(proc)
    assert "PLAY [Upgrade the Engines in batches]" in out and "skipping: no hosts matched" in out
    assert container_ids(fleet) == before
    assert not list((tmp_path / "snapshots").glob("*/*.db")), "check mode took a snapshot"
    assert not list((tmp_path / "ledger").glob("*/*.json")), "check mode wrote the ledger"
    assert not (tmp_path / "baselines").exists() or not list((tmp_path / "baselines").glob("*/*.json"))


@pytest.mark.timeout(1800)
def test_killed_rollout_resumes_where_it_stopped(make_fleet, play, tmp_path):
    import os
    import signal
    import subprocess
    import time

    from tests.integration.conftest import BIN, ansible_env

    fleet = make_fleet(2)
    inventory = write_inventory(fleet, tmp_path)
    patch = releases.tag("patch")
    extra = {"engine_target_version": patch, "engine_rollout": "sequential"}
    first, second = fleet.engines
    env = ansible_env(tmp_path)
    del env["ANSIBLE_CALLBACKS_ENABLED"]
    cmd = [str(BIN / "ansible-playbook"), "engineops.fleet.upgrade", "-i", str(inventory), "-e", json.dumps(extra)]
    with open(tmp_path / "killed-run.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 900
        statuses: dict[str, str] = {}
        try:
            # Kill the controller once the first Engine is verified and the second is swapped, before its verification.
            while time.monotonic() < deadline and proc.poll() is None:
                statuses = {k: r["status"] for k, r in ledger_records(tmp_path, f"upgrade-{patch}").items()}
                if statuses.get(first.name) == "verified" and statuses.get(second.name) == "healthy":
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.1)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert statuses.get(second.name) == "healthy", (statuses, (tmp_path / "killed-run.log").read_text()[-5000:])
    killed = container_ids(fleet)
    assert versions(fleet) == {first.name: patch, second.name: patch}

    # The same command again: the verified Engine is left alone, the caught one finished and verified.
    proc, report = with_traffic(fleet, lambda: play("engineops.fleet.upgrade", inventory, extra))
    assert proc.returncode == 0, explain(proc)
    assert report.lost == [], report.summary()
    assert set(versions(fleet).values()) == {patch}
    after = container_ids(fleet)
    assert after[first.name] == killed[first.name] and after[second.name] == killed[second.name]
    records = ledger_records(tmp_path, f"upgrade-{patch}")
    assert {k: r["status"] for k, r in records.items()} == {e.name: "verified" for e in fleet.engines}
    resumed = {k: [s["evidence"]["action"] for s in r["steps"] if s["step"] == "resume"] for k, r in records.items()}
    assert resumed == {first.name: ["skip"], second.name: ["finish_upgrade"]}, resumed


@pytest.mark.timeout(1800)
def test_quarantine_policy_goes_on_up_to_the_cap(make_fleet, play, tmp_path):
    fleet = make_fleet(3)
    inventory = write_inventory(fleet, tmp_path)
    before = container_ids(fleet)
    bad = releases.tag("bad-errors")
    proc = play("engineops.fleet.upgrade", inventory, {
        "engine_target_version": bad, "engine_rollout": "sequential",
        "engine_failure_policy": "quarantine", "engine_quarantine_cap": 1})
    assert proc.returncode != 0, explain(proc)
    first, second, third = fleet.engines
    records = ledger_records(tmp_path, f"upgrade-{bad}")
    statuses = {k: r["status"] for k, r in records.items()}
    # The first failure is quarantined and the rollout goes on; the second is one more than the cap: stop.
    assert statuses[first.name] == "quarantined", statuses
    assert statuses[second.name] == "rolled_back", statuses
    assert statuses[third.name] == "snapshotted", statuses
    assert "more than engine_quarantine_cap=1" in proc.stdout, explain(proc)
    after = container_ids(fleet)
    assert after[third.name] == before[third.name]
    assert versions(fleet) == {e.name: releases.tag("baseline") for e in fleet.engines}
    fleet.wait_healthy(30)


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


def test_a_release_that_fails_on_staging_touches_no_engine(make_fleet, play, tmp_path, docker_client):
    fleet = make_fleet(2)
    inventory = write_inventory(fleet, tmp_path)
    before = container_ids(fleet)
    bad = releases.tag("bad-answers")
    proc = play("engineops.fleet.upgrade", inventory, {"engine_target_version": bad, "engine_staging": "always"})
    assert proc.returncode != 0, explain(proc)
    assert "so no Engine was touched" in proc.stdout, explain(proc)
    assert container_ids(fleet) == before
    assert not docker_client.containers.list(all=True, filters={"name": "staging"}), "a staging Engine was left"
    steps = [s for r in ledger_records(tmp_path, f"upgrade-{bad}").values() for s in r["steps"] if s["step"] == "staging"]
    assert [s["outcome"] for s in steps] == ["failed"], steps
