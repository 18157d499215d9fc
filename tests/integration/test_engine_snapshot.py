# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""engine_snapshot against real containers of the reference Engine, through the ansible CLI."""
from __future__ import annotations

import os
import stat
import time
from datetime import timedelta

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._brain import (
    integrity_check,
    row_counts,
    schema_fingerprint,
    sha256_file,
)
from ansible_collections.engineops.fleet.plugins.module_utils._brain_copy import HELPER_LABEL, readable_view
from ansible_collections.engineops.fleet.plugins.module_utils._snapshot import (
    Manifest,
    read_manifest,
    utc_now,
    write_manifest,
)
from tests.engine_sim import releases
from tests.testbed.loadgen import LoadGenerator
from tests.testbed.tlsdocker import Front

MODULE = "engine_snapshot"


def ok(result: dict) -> dict:
    assert not result.get("failed"), result.get("msg") or result
    return result


def failed(result: dict, *fragments: str) -> str:
    assert result.get("failed"), result
    for fragment in fragments:
        assert fragment in result["msg"], result["msg"]
    assert result.get("changed", False) is False
    return result["msg"]


def diff_lines(result: dict) -> tuple[set[str], set[str]]:
    """The lines the --diff output removes and adds (Ansible prints the diff; the result does not keep it)."""
    lines = result["_stdout"].splitlines()
    removed = {line[1:].strip().rstrip(",") for line in lines if line.startswith("-") and not line.startswith("---")}
    added = {line[1:].strip().rstrip(",") for line in lines if line.startswith("+") and not line.startswith("+++")}
    return removed, added


def volume_files(fleet, engine) -> list[str]:
    return sorted(os.listdir(os.path.dirname(fleet.brain_path(engine))))


def helpers_left(docker_client, engine) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"{HELPER_LABEL}.engine={engine.name}"})


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def flip_bytes(path: str, offset: int, count: int = 64) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        data = handle.read(count)
        handle.seek(offset)
        handle.write(bytes(b ^ 0xFF for b in data))


def expect_path(taken: dict, copy_method: str, archive_method: str, fleet, engine) -> None:
    """The result says which path was taken: straight from the volume (auto/direct here: a local daemon, root), or
    the archive API."""
    backup = taken["backup"]
    if copy_method == "archive":
        assert backup["copy_method"] == "archive" and backup["method"] == archive_method
        assert backup["container_path"].startswith("/data/brain-") and backup["host_path"] is None
        assert set(backup["seconds"]) == {"backup", "transfer"}
    else:
        assert backup["copy_method"] == "direct" and backup["method"] == "direct"
        assert backup["host_path"] == fleet.brain_path(engine) and backup["container_path"] is None
        assert set(backup["seconds"]) == {"backup", "hash"}
    assert backup["fallback_reason"] is None


@pytest.mark.parametrize("copy_method", ["auto", "direct", "archive"])
def test_present_on_a_running_engine_under_load(make_fleet, run_module, docker_client, tmp_path, copy_method):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    snapdir = str(tmp_path / "snapshots")
    args = {"name": engine.name, "snapshot_dir": snapdir, "snapshot": "under-load", "copy_method": copy_method}
    load = LoadGenerator([engine], workers_per_engine=3, seconds=120, pause=0.0).start()
    try:
        time.sleep(1.0)
        # Check mode: says what it would do, creates nothing.
        planned = ok(run_module(MODULE, args, check=True, diff=True))
        assert planned["changed"] is True and planned["snapshot"]["name"] == "under-load"
        assert '"under-load"' in diff_lines(planned)[1]
        assert not os.path.exists(snapdir)

        started = time.time()
        taken = ok(run_module(MODULE, args, diff=True))
        finished = time.time()
        time.sleep(0.5)
    finally:
        report = load.stop()
    assert taken["changed"] is True
    expect_path(taken, copy_method, "exec", fleet, engine)
    snap = taken["snapshot"]
    engine_dir = os.path.join(snapdir, engine.name)
    assert taken["snapshot_dir"] == engine_dir
    assert snap["path"] == os.path.join(engine_dir, "under-load.db")
    # Manifest: what, from where, how big, its checksum.
    manifest = read_manifest(engine_dir, "under-load")
    assert manifest.engine == engine.name and manifest.container == engine.name
    assert manifest.image == fleet.image and manifest.version == "2.3.0" and manifest.reason == "manual"
    assert manifest.size == os.path.getsize(snap["path"]) and manifest.sha256 == sha256_file(snap["path"])
    assert manifest.fingerprint == schema_fingerprint(snap["path"]).fingerprint
    assert manifest.migrations == list(releases.BASE_MIGRATIONS)
    assert integrity_check(snap["path"]).ok
    for path in (snap["path"], snap["manifest_path"]):
        assert mode_of(path) == 0o600
    assert mode_of(engine_dir) == 0o700
    # The copy inside the container is gone; only the Engine's own files are on the volume.
    assert [f for f in volume_files(fleet, engine) if f.startswith("brain-")] == []
    assert sorted(os.listdir(engine_dir)) == ["under-load.db", "under-load.json"]  # nothing partial left
    with open(snap["path"], "rb") as handle:
        assert handle.read(20)[18:20] == b"\x02\x02"  # the brain's WAL flag, kept as .backup keeps it
    assert '"under-load"' in diff_lines(taken)[1]
    # Traffic flowed during the snapshot and nothing failed because of it.
    during = [t for t in report.turns if started <= t.started_at <= finished]
    assert during and all(t.outcome == "completed" for t in report.turns), report.summary()
    # The snapshot is a consistent state: it holds rows of turns and no more than the brain has now.
    counts = row_counts(snap["path"])
    assert counts["episodes"] > fleet.seed_rows // 5

    # Idempotent: the same name, existing and verified, changes nothing.
    again = ok(run_module(MODULE, args))
    assert again["changed"] is False and again["verify"]["ok"] is True
    assert sha256_file(snap["path"]) == manifest.sha256

    checked = ok(run_module(MODULE, {"name": engine.name, "snapshot_dir": snapdir, "state": "verified",
                                     "snapshot": "under-load"}))
    assert checked["changed"] is False and checked["verify"]["ok"] is True
    assert checked["verify"]["integrity"]["messages"] == ["ok"]


@pytest.mark.parametrize("copy_method", ["auto", "archive"])
def test_present_on_a_stopped_engine_and_a_damaged_brain_is_refused(make_fleet, run_module, docker_client, tmp_path,
                                                                    copy_method):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    snapdir = str(tmp_path / "snapshots")
    fleet.container(engine).stop(timeout=30)
    brain = fleet.brain_path(engine)
    brain_sha = sha256_file(brain)

    base = {"name": engine.name, "snapshot_dir": snapdir, "copy_method": copy_method}
    taken = ok(run_module(MODULE, dict(base, reason="pre-upgrade")))
    snap = taken["snapshot"]
    assert taken["changed"] is True
    expect_path(taken, copy_method, "helper", fleet, engine)
    assert snap["name"].startswith(f"{engine.name}_") and snap["name"].endswith("_pre-upgrade_2.3.0")
    assert snap["reason"] == "pre-upgrade" and integrity_check(snap["path"]).ok
    assert row_counts(snap["path"]) == row_counts(brain)
    assert sha256_file(brain) == brain_sha  # the brain itself was only read
    assert helpers_left(docker_client, engine) == []
    assert [f for f in volume_files(fleet, engine) if f.startswith("brain-")] == []
    assert fleet.container(engine).status == "exited"  # still stopped

    # Two damaged b-tree pages: .backup copies them as they are, the copy fails integrity_check, nothing is kept.
    with open(brain, "r+b") as handle:
        handle.seek(4096 * 3)
        handle.write(b"\xff" * 4096 * 2)
    damaged = run_module(MODULE, dict(base, snapshot="damaged"))
    failed(damaged, f"Cannot take snapshot 'damaged' of {engine.name}", "integrity_check", "damaged")
    # A damaged header: sqlite3 itself refuses it.
    flip_bytes(brain, 0, 16)
    garbage = run_module(MODULE, dict(base, snapshot="garbage"))
    failed(garbage, f"of {engine.name}", "not a SQLite database")
    engine_dir = os.path.join(snapdir, engine.name)
    assert sorted(os.listdir(engine_dir)) == [f"{snap['name']}.db", f"{snap['name']}.json"]
    assert helpers_left(docker_client, engine) == []
    assert [f for f in volume_files(fleet, engine) if f.startswith("brain-")] == []
    if copy_method != "archive":  # read from this host, the direct copy made nothing beside the brain
        assert [f for f in volume_files(fleet, engine) if f.startswith("brain.sqlite")] == ["brain.sqlite"]


def test_daemon_over_tcp_falls_back_to_the_archive_path_or_refuses_direct(make_fleet, run_module, tmp_path):
    """The same local daemon reached as tcp://: its volumes might be on another host, so auto takes the archive
    path (and says why), direct refuses before anything is written; the snapshot still verifies, under writes."""
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    snapdir = str(tmp_path / "snapshots")
    load = LoadGenerator([engine], workers_per_engine=2, seconds=120, pause=0.0).start()
    try:
        with Front("/var/run/docker.sock") as front:
            base = {"name": engine.name, "snapshot_dir": snapdir, "docker_host": front.url}
            refused = run_module(MODULE, dict(base, snapshot="direct", copy_method="direct"))
            failed(refused, f"Cannot take snapshot 'direct' of {engine.name} with copy_method=direct",
                   f"reached at {front.url}, not through a unix socket", "copy_method=auto")
            assert not os.path.exists(snapdir)
            taken = ok(run_module(MODULE, dict(base, snapshot="over-tcp")))
    finally:
        report = load.stop()
    backup = taken["backup"]
    assert backup["copy_method"] == "archive" and backup["method"] == "exec" and backup["host_path"] is None
    assert f"reached at {front.url}, not through a unix socket" in backup["fallback_reason"]
    snap = taken["snapshot"]
    assert integrity_check(snap["path"]).ok and sha256_file(snap["path"]) == snap["sha256"]
    assert read_manifest(os.path.join(snapdir, engine.name), "over-tcp").sha256 == snap["sha256"]
    assert [f for f in volume_files(fleet, engine) if f.startswith("brain-")] == []
    assert all(t.outcome == "completed" for t in report.turns), report.summary()
    checked = ok(run_module(MODULE, {"name": engine.name, "snapshot_dir": snapdir, "state": "verified",
                                     "snapshot": "over-tcp"}))
    assert checked["verify"]["ok"] is True


def test_tampered_snapshot_fails_verification_and_is_never_restored(make_fleet, run_module, tmp_path):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    snapdir = str(tmp_path / "snapshots")
    base = {"name": engine.name, "snapshot_dir": snapdir, "snapshot": "s1"}
    snap = ok(run_module(MODULE, base))["snapshot"]

    # Restoring into a running Engine is refused before anything is touched.
    running = run_module(MODULE, dict(base, state="restored"))
    failed(running, f"Cannot restore snapshot 's1' into {engine.name}: the engine is running", "stop it first")

    flip_bytes(snap["path"], snap["size"] // 2)
    check = run_module(MODULE, dict(base, state="verified"))
    failed(check, f"Snapshot 's1' of {engine.name} does not verify", "sha256")
    assert check["verify"]["ok"] is False

    fleet.container(engine).stop(timeout=30)
    brain_sha = sha256_file(fleet.brain_path(engine))
    refused = run_module(MODULE, dict(base, state="restored"))
    failed(refused, f"Cannot restore snapshot 's1' into {engine.name}: the snapshot does not verify")
    assert sha256_file(fleet.brain_path(engine)) == brain_sha
    assert not os.path.exists(os.path.join(snapdir, engine.name, "quarantine"))

    # present with the same name does not paper over the damage (unless forced).
    again = run_module(MODULE, base)
    failed(again, "exists", "does not verify", "force")
    forced = ok(run_module(MODULE, dict(base, force=True)))
    assert forced["changed"] is True
    assert ok(run_module(MODULE, dict(base, state="verified")))["verify"]["ok"] is True


@pytest.mark.parametrize("repository", ["september-engine", "september-engine-alt"])
def test_restore_after_a_minor_upgrade_brings_the_old_brain_back(
        make_fleet, run_module, docker_client, tmp_path, repository):
    fleet = make_fleet(1, repository=repository)
    engine = fleet.engines[0]
    profile = next(p for p in releases.PROFILES if p.repository == repository)
    table = profile.knobs["ENGINE_SIM_MIGRATIONS_TABLE"]
    snapdir = str(tmp_path / "snapshots")
    base = {"name": engine.name, "snapshot_dir": snapdir, "migrations_table": table}

    pre = ok(run_module(MODULE, dict(base, reason="pre-upgrade")))["snapshot"]
    assert pre["migrations_table"] == table and pre["migrations"] == list(releases.BASE_MIGRATIONS)

    # The minor release migrates the brain; turns made afterwards are the bad window's writes.
    fleet.swap(engine, "minor")
    fleet.wait_healthy(60)
    report = LoadGenerator([engine], seconds=60, max_turns=7, pause=0.0).run()
    turns = [t for t in report.turns if t.outcome in ("completed", "error")]
    assert len(turns) == 7, report.summary()
    fleet.container(engine).stop(timeout=30)
    brain = fleet.brain_path(engine)
    migrated = schema_fingerprint(brain, migrations_table=table)
    assert migrated.fingerprint != pre["fingerprint"] and migrated.migrations[-1] == "0003_feedback"
    replaced_files = {f: sha256_file(os.path.join(os.path.dirname(brain), f))
                      for f in volume_files(fleet, engine) if f.startswith("brain.sqlite")}
    restore = dict(base, state="restored", snapshot=pre["name"])

    # Check mode: the same account, nothing touched.
    preview = ok(run_module(MODULE, restore, check=True, diff=True))
    assert preview["changed"] is True and preview["brain"]["fingerprint"] == migrated.fingerprint
    assert preview["lost_writes"]["tables"]["episodes"]["rows"] == 7
    assert f'"fingerprint": "{pre["fingerprint"]}"' in diff_lines(preview)[1]
    assert {f: sha256_file(os.path.join(os.path.dirname(brain), f)) for f in replaced_files} == replaced_files
    assert not os.path.exists(os.path.join(snapdir, engine.name, "quarantine"))

    done = ok(run_module(MODULE, restore, diff=True))
    assert done["changed"] is True
    # The brain is the snapshot again, with the old schema; no stale -wal/-shm beside it.
    assert sha256_file(brain) == pre["sha256"]
    assert schema_fingerprint(brain, migrations_table=table).fingerprint == pre["fingerprint"]
    assert [f for f in volume_files(fleet, engine) if f.startswith("brain.sqlite")] == ["brain.sqlite"]
    assert [f for f in volume_files(fleet, engine) if f.startswith(".")] == []
    assert helpers_left(docker_client, engine) == []
    removed, added = diff_lines(done)
    assert f'"fingerprint": "{migrated.fingerprint}"' in removed and f'"fingerprint": "{pre["fingerprint"]}"' in added

    # The lost-write account: the turns made after the snapshot, table by table.
    lost = done["lost_writes"]
    assert lost["tables"]["episodes"]["rows"] == 7 and lost["tables"]["conversations"]["rows"] == 7
    assert lost["tables"]["trajectories"]["rows"] == 7
    assert lost["tables"]["feedback"] == {"table": "feedback", "rows": 7, "method": "new_table",
                                          "replaced_rows": 7, "snapshot_rows": None}
    assert lost["total"] >= 7 * 6

    # The replaced brain is quarantined, byte for byte, with its manifest.
    quarantine = done["quarantine"]
    qdir = os.path.join(snapdir, engine.name, "quarantine")
    assert os.path.dirname(quarantine["path"]) == qdir and mode_of(qdir) == 0o700
    kinds = {"brain.sqlite": "db", "brain.sqlite-wal": "wal", "brain.sqlite-shm": "shm", "brain.sqlite-journal": "journal"}
    assert sorted(quarantine["files"]) == sorted(kinds[f] for f in replaced_files)
    for name, sha in replaced_files.items():
        kept = quarantine["files"][kinds[name]]
        assert kept["sha256"] == sha and sha256_file(kept["path"]) == sha
        assert os.path.dirname(kept["path"]) == qdir and mode_of(kept["path"]) == 0o600
    assert sha256_file(quarantine["path"]) == replaced_files["brain.sqlite"]
    record = read_manifest(qdir, quarantine["name"])
    assert record.reason == "quarantine" and record.fingerprint == migrated.fingerprint
    assert record.sha256 == replaced_files["brain.sqlite"]
    with readable_view(quarantine["path"]) as view:  # never lets SQLite write into the quarantine
        assert integrity_check(view).ok
        assert schema_fingerprint(view, migrations_table=table).fingerprint == migrated.fingerprint
    qfiles = sorted(os.listdir(qdir))
    assert qfiles == sorted([os.path.basename(v["path"]) for v in quarantine["files"].values()]
                            + [os.path.basename(quarantine["manifest_path"])])

    # Idempotent: the brain already is the snapshot; nothing more is quarantined.
    again = ok(run_module(MODULE, restore))
    assert again["changed"] is False and again["lost_writes"]["total"] == 0
    assert sorted(os.listdir(qdir)) == qfiles

    # The old version accepts the restored brain.
    fleet.swap(engine, "baseline")
    fleet.wait_healthy(60)

    listed = ok(run_module(MODULE, dict(base, state="listed")))
    assert [s["name"] for s in listed["snapshots"]] == [pre["name"]] and listed["snapshots"][0]["protected"] is True
    assert [q["name"] for q in listed["quarantined"]] == [quarantine["name"]]


def _clone(engine_dir: str, source: Manifest, name: str, age: timedelta, reason: str) -> None:
    """A copy of a real snapshot under another name, made to look older."""
    with open(os.path.join(engine_dir, source.file), "rb") as src, open(os.path.join(engine_dir, f"{name}.db"), "wb") as dst:
        dst.write(src.read())
    os.chmod(os.path.join(engine_dir, f"{name}.db"), 0o600)
    write_manifest(engine_dir, Manifest(
        name=name, engine=source.engine, fingerprint=source.fingerprint, size=source.size, sha256=source.sha256,
        created=utc_now() - age, reason=reason, file=f"{name}.db", container=source.container, image=source.image,
        version=source.version, migrations=source.migrations, migrations_table=source.migrations_table))


def test_list_and_retention(make_fleet, run_module, tmp_path):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    snapdir = str(tmp_path / "snapshots")
    base = {"name": engine.name, "snapshot_dir": snapdir}
    newest = ok(run_module(MODULE, dict(base, snapshot="newest")))["snapshot"]
    engine_dir = os.path.join(snapdir, engine.name)
    source = read_manifest(engine_dir, "newest")
    _clone(engine_dir, source, "old-manual", timedelta(days=10), "manual")
    _clone(engine_dir, source, "older-manual", timedelta(days=11), "manual")
    _clone(engine_dir, source, "young-pre-upgrade", timedelta(days=2), "pre-upgrade")
    _clone(engine_dir, source, "old-pre-upgrade", timedelta(days=8), "pre-upgrade")
    _clone(engine_dir, source, "yesterday", timedelta(days=1), "manual")

    listed = ok(run_module(MODULE, dict(base, state="listed")))
    assert [s["name"] for s in listed["snapshots"]] == [
        "newest", "yesterday", "young-pre-upgrade", "old-pre-upgrade", "old-manual", "older-manual"]
    assert [s["name"] for s in listed["snapshots"] if s["protected"]] == ["young-pre-upgrade"]
    assert listed["snapshots"][0]["sha256"] == newest["sha256"] and listed["changed"] is False

    keep = dict(base, state="absent", keep=2)
    planned = ok(run_module(MODULE, keep, check=True, diff=True))
    assert planned["changed"] is True
    assert sorted(planned["removed"]) == ["old-manual", "old-pre-upgrade", "older-manual"]
    assert diff_lines(planned) == ({'"old-manual"', '"old-pre-upgrade"', '"older-manual"'}, set())
    assert len(os.listdir(engine_dir)) == 12  # check mode removed nothing

    pruned = ok(run_module(MODULE, keep))
    assert sorted(pruned["removed"]) == ["old-manual", "old-pre-upgrade", "older-manual"]
    why = {k["name"]: k["why"] for k in pruned["kept"]}
    assert "pre-upgrade" in why["young-pre-upgrade"] and "force" in why["young-pre-upgrade"]
    assert sorted(os.listdir(engine_dir)) == sorted(
        f"{n}.{ext}" for n in ("newest", "yesterday", "young-pre-upgrade") for ext in ("db", "json"))
    assert ok(run_module(MODULE, keep))["changed"] is False

    # One young pre-upgrade snapshot: refused by name too, unless forced.
    by_name = dict(base, state="absent", snapshot="young-pre-upgrade")
    failed(run_module(MODULE, by_name), f"Cannot remove snapshot 'young-pre-upgrade' of {engine.name}",
           "pre-upgrade", "force")
    forced = ok(run_module(MODULE, dict(keep, force=True)))
    assert forced["removed"] == ["young-pre-upgrade"]
    assert ok(run_module(MODULE, by_name))["changed"] is False  # already gone
    gone = ok(run_module(MODULE, dict(base, state="absent", snapshot="yesterday")))
    assert gone["removed"] == ["yesterday"] and sorted(os.listdir(engine_dir)) == ["newest.db", "newest.json"]


@pytest.mark.parametrize("bad, state", [("../x", "present"), ("a/b", "restored"), ("..", "verified"),
                                        (".hidden", "absent"), ("x" * 129, "present")])
def test_bad_snapshot_names_are_refused_before_anything(run_module, tmp_path, bad, state):
    snapdir = tmp_path / "snapshots"
    result = run_module(MODULE, {"name": "engine-any", "snapshot_dir": str(snapdir), "state": state, "snapshot": bad})
    msg = failed(result, "snapshot name", "letters, digits")
    assert repr(bad)[:20] in msg
    assert not snapdir.exists() and not (tmp_path / "x").exists()


def test_bad_input_fails_clearly(docker_client, run_module, tmp_path):
    snapdir = str(tmp_path / "snapshots")
    unknown = run_module(MODULE, {"name": "engine-does-not-exist", "snapshot_dir": snapdir})
    failed(unknown, "Cannot take a snapshot of engine-does-not-exist", "No Engine container named 'engine-does-not-exist'")
    missing = run_module(MODULE, {"name": "engine-x", "snapshot_dir": snapdir, "state": "verified", "snapshot": "nope"})
    failed(missing, "Cannot verify snapshot 'nope' of engine-x: there is no such snapshot", "snapshots there: none")
    missing = run_module(MODULE, {"name": "engine-x", "snapshot_dir": snapdir, "state": "restored", "snapshot": "nope"})
    failed(missing, "Cannot restore snapshot 'nope' of engine-x: there is no such snapshot")
    daemon = run_module(MODULE, {"name": "engine-x", "snapshot_dir": snapdir, "docker_host": "unix:///nonexistent.sock"})
    failed(daemon, "Cannot reach the Docker daemon at unix:///nonexistent.sock")
    engine_name = run_module(MODULE, {"name": "../etc", "snapshot_dir": snapdir, "state": "listed"})
    failed(engine_name, "Engine name '../etc' cannot name a snapshot folder")
    no_choice = run_module(MODULE, {"name": "engine-x", "snapshot_dir": snapdir, "state": "absent"})
    failed(no_choice, "state=absent needs either snapshot", "or keep")
    negative = run_module(MODULE, {"name": "engine-x", "snapshot_dir": snapdir, "state": "absent", "keep": -1})
    failed(negative, "keep=-1 is invalid")
    assert not os.path.exists(snapdir)
