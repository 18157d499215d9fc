# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import sqlite3
import stat
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._brain import (
    online_backup,
    schema_fingerprint,
    sha256_file,
)
from ansible_collections.engineops.fleet.plugins.module_utils._snapshot import (
    MANIFEST_SCHEMA_VERSION,
    Manifest,
    ManifestError,
    SnapshotError,
    SnapshotNameError,
    SnapshotPathError,
    format_utc,
    list_snapshots,
    make_snapshot_name,
    parse_utc,
    plan_retention,
    read_manifest,
    snapshot_paths,
    validate_snapshot_name,
    verify_snapshot,
    write_json_atomic,
    write_manifest,
)

NOW = datetime(2025, 3, 10, 12, 0, 0, tzinfo=timezone.utc)
SHA = "0" * 64


def manifest(name="engine-042_20250310T120000Z_pre-upgrade", engine="engine-042", created=NOW,
             reason="pre-upgrade", **extra):
    fields = dict(name=name, engine=engine, fingerprint="f" * 64, size=0, sha256=SHA, created=created,
                  reason=reason, file=f"{name}.db", container="engine-042", image="september-engine:2.3.0",
                  version="2.3.0", migrations=["0001_init", "0002_learning"], migrations_table="schema_migrations")
    fields.update(extra)
    return Manifest(**fields)


def make_snapshot(directory, name, engine="engine-042", created=NOW, reason="pre-upgrade", rows=20):
    """A real snapshot: a SQLite file copied with the backup API, and its manifest."""
    src = os.path.join(directory, f".src-{name}.sqlite")
    conn = sqlite3.connect(src)
    conn.execute("CREATE TABLE episodes (id INTEGER PRIMARY KEY, summary TEXT)")
    conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY)")
    conn.execute("INSERT INTO schema_migrations VALUES ('0001_init')")
    conn.executemany("INSERT INTO episodes (summary) VALUES (?)", [("x" * 300,)] * rows)
    conn.commit()
    conn.close()
    paths = snapshot_paths(directory, name)
    online_backup(src, paths.db)
    os.unlink(src)
    fp = schema_fingerprint(paths.db)
    m = manifest(name=name, engine=engine, created=created, reason=reason, fingerprint=fp.fingerprint,
                 migrations=fp.migrations, size=os.path.getsize(paths.db), sha256=sha256_file(paths.db))
    write_manifest(directory, m)
    return m


# -- names and paths ------------------------------------------------------------------

@pytest.mark.parametrize(
    "name",
    ["snap", "engine-042_20250310T120000Z_pre-upgrade_2.3.0", "a.b.c", "_x", "A" * 128, "v2.4.0-rc.1"],
)
def test_valid_names(name):
    assert validate_snapshot_name(name) == name


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("", "is empty"),
        (None, "is empty"),
        (".hidden", "starts with '.'"),
        ("-rf", "starts with '-'"),
        ("a..b", "contains '..'"),
        ("..", "starts with '.'"),
        ("a/b", "contains '/'"),
        ("../etc/passwd", "contains '/'"),
        ("snap shot", "contains ' '"),
        ("snap$(id)", "contains '$()'"),
        ("é", "contains 'é'"),
        ("A" * 129, "is 129 characters long"),
    ],
)
def test_invalid_names(name, fragment):
    with pytest.raises(SnapshotNameError) as exc:
        validate_snapshot_name(name)
    assert fragment in str(exc.value)
    assert "letters, digits" in str(exc.value)


@pytest.mark.parametrize(
    "engine, reason, version, expected",
    [
        ("engine-042", "pre-upgrade", "2.3.0", "engine-042_20250310T120000Z_pre-upgrade_2.3.0"),
        ("engine/../042", "manual", None, "engine-.-042_20250310T120000Z_manual"),
        (".weird name", "quarantine", None, "weird-name_20250310T120000Z_quarantine"),
        ("e" * 200, "manual", None, "e" * 128),
    ],
)
def test_make_snapshot_name(engine, reason, version, expected):
    name = make_snapshot_name(engine, reason, NOW, version)
    assert name == expected
    assert validate_snapshot_name(name) == name


def test_snapshot_paths(tmp_path):
    paths = snapshot_paths(tmp_path, "snap-1")
    real = os.path.realpath(tmp_path)
    assert (paths.directory, paths.db, paths.manifest) == (
        real, os.path.join(real, "snap-1.db"), os.path.join(real, "snap-1.json"))


def test_snapshot_paths_refuse_symlink_escape(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    os.symlink(outside / "x.db", snaps / "evil.db")
    with pytest.raises(SnapshotPathError) as exc:
        snapshot_paths(snaps, "evil")
    assert "outside the snapshot directory" in str(exc.value)
    # A symlinked snapshot directory itself is fine: the check is on its real path.
    os.symlink(snaps, tmp_path / "link")
    assert snapshot_paths(tmp_path / "link", "ok").db == os.path.join(os.path.realpath(snaps), "ok.db")


def test_snapshot_paths_validate_name(tmp_path):
    with pytest.raises(SnapshotNameError):
        snapshot_paths(tmp_path, "../escape")


# -- manifests --------------------------------------------------------------------------

def test_manifest_round_trip():
    m = manifest(created=datetime(2025, 3, 10, 12, 0, 0, 123456, tzinfo=timezone.utc))
    text = m.to_json()
    data = json.loads(text)
    assert data["schema_version"] == MANIFEST_SCHEMA_VERSION == 1
    assert data["created"] == "2025-03-10T12:00:00.123456Z"
    assert sorted(data) == sorted(["schema_version", "name", "engine", "container", "image", "version",
                                   "fingerprint", "migrations", "migrations_table", "size", "sha256",
                                   "created", "reason", "file"])
    assert Manifest.from_json(text) == m


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"schema_version": 2}, "newer than this collection reads"),
        ({"schema_version": None}, "schema_version None is missing or invalid"),
        ({"engine": ""}, "'engine' must be a non-empty string"),
        ({"size": -1}, "'size' must be a non-negative integer"),
        ({"size": "12"}, "'size' must be a non-negative integer"),
        ({"sha256": "ABC"}, "is not 64 lowercase hex digits"),
        ({"created": "yesterday"}, "'created': 'yesterday' is not an ISO 8601 time"),
        ({"migrations": "0001"}, "'migrations' must be a list of strings"),
        ({"image": 5}, "'image' must be a string or null"),
    ],
)
def test_manifest_rejects(change, fragment):
    data = manifest().to_dict()
    data.update(change)
    with pytest.raises(ManifestError) as exc:
        Manifest.from_json(json.dumps(data), "snap.json")
    assert fragment in str(exc.value)
    assert str(exc.value).startswith("snap.json: ")


@pytest.mark.parametrize("text, fragment", [("{not json", "not valid JSON"), ("[]", "expected a JSON object")])
def test_manifest_rejects_bad_json(text, fragment):
    with pytest.raises(ManifestError) as exc:
        Manifest.from_json(text)
    assert fragment in str(exc.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2025-03-10T12:00:00Z", NOW),
        ("2025-03-10T13:00:00+01:00", NOW),
        ("2025-03-10T12:00:00", NOW),
    ],
)
def test_parse_utc(text, expected):
    assert parse_utc(text) == expected
    assert format_utc(parse_utc(text)) == "2025-03-10T12:00:00Z"


def test_write_manifest_atomic_and_private(tmp_path):
    m = manifest()
    path = write_manifest(tmp_path, m)
    assert path == os.path.join(os.path.realpath(tmp_path), f"{m.name}.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == [f"{m.name}.json"]  # no temp file left
    assert read_manifest(tmp_path, m.name) == m
    # Rewriting replaces the file as a whole.
    m2 = manifest(size=99)
    write_manifest(tmp_path, m2)
    assert read_manifest(tmp_path, m.name).size == 99


def test_write_manifest_refuses_wrong_file(tmp_path):
    with pytest.raises(ManifestError) as exc:
        write_manifest(tmp_path, manifest(file="other.db"))
    assert "it must be 'engine-042_20250310T120000Z_pre-upgrade.db'" in str(exc.value)


def test_write_json_atomic_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "ledger.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"a": object()})
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["ledger.json"]


# -- listing and verification ----------------------------------------------------------------

def test_list_snapshots_newest_first(tmp_path):
    make_snapshot(tmp_path, "a-old", created=NOW - timedelta(days=3))
    make_snapshot(tmp_path, "a-new", created=NOW)
    make_snapshot(tmp_path, "b-mid", engine="engine-007", created=NOW - timedelta(days=1))
    (tmp_path / "broken.json").write_text("{oops")
    (tmp_path / ".tmp.json").write_text("{}")  # ignored: hidden temp file
    (tmp_path / "notes.txt").write_text("x")
    write_json_atomic(tmp_path / "misnamed.json", manifest(name="other").to_dict())
    listed = list_snapshots(tmp_path)
    assert [m.name for m in listed] == ["a-new", "b-mid", "a-old"]
    assert sorted(f for f, _reason in listed.skipped) == ["broken.json", "misnamed.json"]
    assert "not valid JSON" in dict(listed.skipped)["broken.json"]
    assert "is for snapshot 'other', not 'misnamed'" in dict(listed.skipped)["misnamed.json"]
    assert [m.name for m in list_snapshots(tmp_path, engine="engine-007")] == ["b-mid"]
    assert list_snapshots(tmp_path / "missing") == []


def test_list_snapshots_not_a_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SnapshotError):
        list_snapshots(tmp_path / "file")


def test_verify_good_snapshot(tmp_path):
    m = make_snapshot(tmp_path, "good")
    result = verify_snapshot(tmp_path, "good")
    assert (result.ok, result.reasons) == (True, [])
    assert (result.size, result.sha256) == (m.size, m.sha256)
    assert result.integrity.ok
    assert result.to_dict()["manifest"]["name"] == "good"


def _corrupt_middle(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.seek(size // 2 // 4096 * 4096)
        handle.write(b"\xde\xad\xbe\xef" * 1024)


@pytest.mark.parametrize(
    "damage, fragments",
    [
        (lambda d: os.unlink(d / "snap.db"), ["snap.db' is missing"]),
        (lambda d: os.unlink(d / "snap.json"), ["has no manifest"]),
        (lambda d: open(d / "snap.db", "ab").write(b"\0" * 10), ["size is", "sha256 is"]),
        (lambda d: _corrupt_middle(d / "snap.db"), ["sha256 is", "integrity_check failed"]),
        (lambda d: (d / "snap.db").write_bytes(b"garbage" * 100), ["size is", "sha256 is", "not a SQLite database"]),
        (lambda d: write_json_atomic(d / "snap.json", {**json.loads((d / "snap.json").read_text()), "file": "x.db"}),
         ["manifest names file 'x.db', expected 'snap.db'"]),
    ],
)
def test_verify_reports_every_problem(tmp_path, damage, fragments):
    make_snapshot(tmp_path, "snap", rows=200)
    damage(tmp_path)
    result = verify_snapshot(tmp_path, "snap")
    assert result.ok is False
    text = " | ".join(result.reasons)
    for fragment in fragments:
        assert fragment in text
    assert len(result.reasons) == len(fragments)


# -- retention -------------------------------------------------------------------------------------

def _snaps(*specs):
    """specs: (name, engine, age in days, reason)"""
    return [manifest(name=n, engine=e, created=NOW - timedelta(days=age), reason=r) for n, e, age, r in specs]


RETENTION_CASES = [
    # keep, force, snapshots, expected removed names
    (2, False, [("m1", "e1", 1, "manual"), ("m2", "e1", 2, "manual"), ("m3", "e1", 3, "manual")], ["m3"]),
    # Young pre-upgrade snapshots stay beyond the count; old ones go.
    (1, False, [("p1", "e1", 0.5, "pre-upgrade"), ("p2", "e1", 2, "pre-upgrade"), ("p3", "e1", 6.9, "pre-upgrade"),
                ("p4", "e1", 7.1, "pre-upgrade"), ("m5", "e1", 3, "manual")], ["m5", "p4"]),
    # force overrides the age protection, never the count.
    (1, True, [("p1", "e1", 0.5, "pre-upgrade"), ("p2", "e1", 2, "pre-upgrade")], ["p2"]),
    # keep counts per engine.
    (1, False, [("a1", "e1", 1, "manual"), ("a2", "e1", 2, "manual"), ("b1", "e2", 5, "manual"),
                ("b2", "e2", 9, "manual")], ["a2", "b2"]),
    # Quarantined brains are kept unless forced.
    (0, False, [("q1", "e1", 30, "quarantine"), ("m1", "e1", 30, "manual")], ["m1"]),
    (0, True, [("q1", "e1", 30, "quarantine"), ("p1", "e1", 1, "pre-upgrade")], ["p1", "q1"]),
    (5, False, [], []),
]


@pytest.mark.parametrize("keep, force, specs, removed", RETENTION_CASES)
def test_plan_retention(keep, force, specs, removed):
    snapshots = _snaps(*specs)
    plan = plan_retention(snapshots, keep=keep, now=NOW, force=force)
    assert sorted(d.name for d in plan.remove) == removed
    assert sorted(d.name for d in plan.keep) == sorted(set(s[0] for s in specs) - set(removed))
    json.dumps(plan.to_dict())


def test_plan_retention_explains_each_decision():
    plan = plan_retention(_snaps(("new", "e1", 0, "manual"), ("young", "e1", 2, "pre-upgrade"),
                                 ("old", "e1", 8, "pre-upgrade")), keep=1, now=NOW)
    why = {d.name: d.why for d in plan.keep + plan.remove}
    assert why == {
        "new": "among the 1 newest of engine 'e1' (#1)",
        "young": "pre-upgrade snapshot younger than 7 days (age 2d 0h); force to remove",
        "old": "beyond the 1 newest of engine 'e1' (#3)",
    }
    forced = plan_retention(_snaps(("new", "e1", 0, "manual"), ("young", "e1", 2, "pre-upgrade")),
                            keep=1, now=NOW, force=True)
    assert forced.remove[0].why == ("beyond the 1 newest of engine 'e1' (#2); pre-upgrade snapshot younger "
                                    "than 7 days removed by force")


def test_plan_retention_custom_age_and_future_snapshot():
    snaps = _snaps(("future", "e1", -1, "pre-upgrade"), ("p", "e1", 2, "pre-upgrade"))
    plan = plan_retention(snaps, keep=0, now=NOW, pre_upgrade_min_age=timedelta(days=1))
    assert [d.name for d in plan.remove] == ["p"]
    assert "created in the future" in plan.keep[0].why
    plan = plan_retention(snaps, keep=0, now=NOW, pre_upgrade_min_age=3 * 86400)
    assert plan.remove == []


@pytest.mark.parametrize("keep", [-1, "3", True, 1.5])
def test_plan_retention_rejects_bad_keep(keep):
    with pytest.raises(SnapshotError) as exc:
        plan_retention([], keep=keep, now=NOW)
    assert "must be an integer >= 0" in str(exc.value)
