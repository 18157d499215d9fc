# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import stat

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._brain import (
    BrainError,
    BrainNotFoundError,
    NotADatabaseError,
    connect_ro,
    integrity_check,
    lost_write_account,
    normalise_sql,
    online_backup,
    row_counts,
    schema_fingerprint,
    sha256_file,
)

BASE_SCHEMA = (
    "CREATE TABLE episodes (id INTEGER PRIMARY KEY, task_id TEXT NOT NULL, summary TEXT)",
    "CREATE TABLE knowledge_store (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE conversations (id TEXT PRIMARY KEY, status TEXT) WITHOUT ROWID",
    "CREATE TABLE learning_signals (signal TEXT, weight REAL)",
    "CREATE TABLE observability_events (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT)",
    "CREATE INDEX episodes_task ON episodes (task_id)",
)


def make_brain(path, migrations=("0001_init", "0002_learning"), table="schema_migrations",
               table_sql="CREATE TABLE {t} (version TEXT PRIMARY KEY, applied_at TEXT)",
               schema=BASE_SCHEMA, rows=5, wal=False):
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    for sql in schema:
        conn.execute(sql)
    if table:
        conn.execute(table_sql.format(t=table))
        columns = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
        for mig in migrations:
            values = {c: None for c in columns}
            key = next(c for c in ("version", "migration", "name", "id") if c in columns)
            values[key] = mig
            conn.execute(f'INSERT INTO "{table}" ({",".join(values)}) VALUES ({",".join("?" * len(values))})',
                         list(values.values()))
    for i in range(rows):
        conn.execute("INSERT INTO episodes (task_id, summary) VALUES (?, ?)", (f"t{i}", "s" * 50))
        conn.execute("INSERT INTO knowledge_store VALUES (?, ?)", (f"k{i}", "v"))
        conn.execute("INSERT INTO conversations VALUES (?, 'completed')", (f"c{i}",))
        conn.execute("INSERT INTO learning_signals VALUES (?, 0.5)", (f"sig{i}",))
        conn.execute("INSERT INTO observability_events (kind) VALUES ('turn')")
    conn.commit()
    conn.close()
    return str(path)


def write_rows(path, statements):
    conn = sqlite3.connect(path)
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


# -- fingerprint ------------------------------------------------------------------

def test_fingerprint_is_stable_and_data_independent(tmp_path):
    a = make_brain(tmp_path / "a.sqlite", rows=3)
    b = make_brain(tmp_path / "b.sqlite", rows=40)
    fa, fb = schema_fingerprint(a), schema_fingerprint(b)
    assert fa.fingerprint == fb.fingerprint
    assert len(fa.fingerprint) == 64 and int(fa.fingerprint, 16) >= 0
    assert fa == schema_fingerprint(a)
    assert fa.tables == ["conversations", "episodes", "knowledge_store", "learning_signals",
                         "observability_events", "schema_migrations"]  # no sqlite_sequence
    assert fa.migrations == ["0001_init", "0002_learning"]
    assert (fa.migrations_table, fa.migrations_column) == ("schema_migrations", "version")


@pytest.mark.parametrize(
    "change, same",
    [
        # Whitespace and statement order do not matter.
        ({"schema": [s.replace(" (", "(").replace(", ", ",\n    ")
                     for s in list(reversed(BASE_SCHEMA[:-1])) + list(BASE_SCHEMA[-1:])]}, True),
        ({"schema": [s.replace("CREATE TABLE", "CREATE  TABLE\t") for s in BASE_SCHEMA]}, True),
        # Schema and migration changes do.
        ({"schema": list(BASE_SCHEMA) + ["CREATE TABLE feedback (id INTEGER PRIMARY KEY, score INTEGER)"]}, False),
        ({"schema": [s.replace("summary TEXT", "summary TEXT, importance REAL DEFAULT 0") for s in BASE_SCHEMA]},
         False),
        ({"schema": BASE_SCHEMA[:-1]}, False),
        ({"migrations": ("0001_init", "0002_learning", "0003_feedback")}, False),
        ({"migrations": ("0001_init",)}, False),
    ],
)
def test_fingerprint_changes_only_with_schema_or_migrations(tmp_path, change, same):
    base = schema_fingerprint(make_brain(tmp_path / "base.sqlite"))
    other = schema_fingerprint(make_brain(tmp_path / "other.sqlite", **change))
    assert (base.fingerprint == other.fingerprint) is same


def test_fingerprint_literal_whitespace_is_significant(tmp_path):
    one = make_brain(tmp_path / "1.sqlite", schema=["CREATE TABLE x (a TEXT DEFAULT 'a b')"], rows=0)
    two = make_brain(tmp_path / "2.sqlite", schema=["CREATE TABLE x (a TEXT DEFAULT 'a  b')"], rows=0)
    assert schema_fingerprint(one).fingerprint != schema_fingerprint(two).fingerprint


@pytest.mark.parametrize(
    "sql, expected",
    [
        ("CREATE TABLE t (\n  a INT ,\n  b TEXT\n)", "CREATE TABLE t(a INT,b TEXT)"),
        ("CREATE   INDEX i ON t ( a )", "CREATE INDEX i ON t(a)"),
        ('CREATE TABLE "my  table" (a)', 'CREATE TABLE "my  table"(a)'),
        ("CREATE TABLE t (a DEFAULT 'x ,  y' )", "CREATE TABLE t(a DEFAULT 'x ,  y')"),
        (None, None),
    ],
)
def test_normalise_sql(sql, expected):
    assert normalise_sql(sql) == expected


MIGRATION_TABLES = [
    # name, create statement, stored ids, expected ids, expected column
    ("schema_migrations", "CREATE TABLE {t} (version TEXT PRIMARY KEY, applied_at TEXT)",
     ("0002_learning", "0001_init"), ["0001_init", "0002_learning"], "version"),
    ("_engine_migrations", "CREATE TABLE {t} (id TEXT PRIMARY KEY, applied_at TEXT)",
     ("0001_init", "0003_feedback", "0002_learning"), ["0001_init", "0002_learning", "0003_feedback"], "id"),
    ("applied_migrations", "CREATE TABLE {t} (id INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)",
     ("0001_init",), ["0001_init"], "name"),
    ("Migrations", "CREATE TABLE {t} (migration VARCHAR(255), batch INTEGER)",
     ("2024_01_01_create", "2024_02_01_add"), ["2024_01_01_create", "2024_02_01_add"], "migration"),
]


@pytest.mark.parametrize("table, sql, stored, expected, column", MIGRATION_TABLES)
def test_migrations_found_whatever_the_table_name(tmp_path, table, sql, stored, expected, column):
    brain = make_brain(tmp_path / "b.sqlite", table=table, table_sql=sql, migrations=stored)
    found = schema_fingerprint(brain)
    assert (found.migrations_table, found.migrations_column, found.migrations) == (table, column, expected)


def test_integer_versions_sort_naturally(tmp_path):
    path = make_brain(tmp_path / "b.sqlite", table=None)
    write_rows(path, ["CREATE TABLE schema_migrations (version bigint NOT NULL, dirty boolean)"] +
               [f"INSERT INTO schema_migrations VALUES ({v}, 0)" for v in (10, 9, 100, 2)])
    found = schema_fingerprint(path)
    assert (found.migrations_table, found.migrations) == ("schema_migrations", ["2", "9", "10", "100"])


def test_migration_table_choice_and_override(tmp_path):
    path = make_brain(tmp_path / "b.sqlite", table="knex_migrations",
                      table_sql="CREATE TABLE {t} (id INTEGER PRIMARY KEY, name VARCHAR(255), batch INTEGER)",
                      migrations=("a", "b", "c"))
    write_rows(path, [
        # A lock table matches the name but has no id-like text column.
        "CREATE TABLE knex_migrations_lock (\"index\" INTEGER PRIMARY KEY, is_locked INTEGER)",
        "INSERT INTO knex_migrations_lock VALUES (1, 0)",
        # Another candidate with fewer rows loses to the one with more.
        "CREATE TABLE old_migrations (version TEXT)",
        "INSERT INTO old_migrations VALUES ('legacy')",
    ])
    auto = schema_fingerprint(path)
    assert (auto.migrations_table, auto.migrations) == ("knex_migrations", ["a", "b", "c"])
    forced = schema_fingerprint(path, migrations_table="old_migrations")
    assert (forced.migrations_table, forced.migrations) == ("old_migrations", ["legacy"])
    assert forced.fingerprint != auto.fingerprint
    with pytest.raises(BrainError) as exc:
        schema_fingerprint(path, migrations_table="schema_migrations")
    assert "'schema_migrations' is not in the brain" in str(exc.value)
    assert "knex_migrations" in str(exc.value)
    with pytest.raises(BrainError) as exc:
        schema_fingerprint(path, migrations_table="knex_migrations_lock")
    assert "has no column" in str(exc.value) and "is_locked" in str(exc.value)


def test_no_migration_table(tmp_path):
    found = schema_fingerprint(make_brain(tmp_path / "b.sqlite", table=None))
    assert (found.migrations_table, found.migrations_column, found.migrations) == (None, None, [])


def test_fingerprint_is_read_only_on_a_wal_brain(tmp_path):
    path = make_brain(tmp_path / "brain.sqlite", wal=True)
    assert sorted(os.listdir(tmp_path)) == ["brain.sqlite"]  # clean close removed -wal/-shm
    before = (sha256_file(path), os.stat(path).st_mtime_ns)
    schema_fingerprint(path)
    integrity_check(path)
    row_counts(path)
    assert sorted(os.listdir(tmp_path)) == ["brain.sqlite"]
    assert (sha256_file(path), os.stat(path).st_mtime_ns) == before


def test_fingerprint_of_a_brain_in_use(tmp_path):
    path = make_brain(tmp_path / "brain.sqlite", wal=True)
    writer = sqlite3.connect(path)
    try:
        writer.execute("INSERT INTO schema_migrations VALUES ('0003_feedback', NULL)")
        writer.execute("CREATE TABLE feedback (id INTEGER PRIMARY KEY)")
        writer.commit()
        assert os.path.exists(path + "-wal")  # the change lives in the WAL only
        found = schema_fingerprint(path)
        assert "feedback" in found.tables
        assert found.migrations[-1] == "0003_feedback"
    finally:
        writer.close()


def test_paths_with_uri_characters(tmp_path):
    weird = tmp_path / "dir with space?#%"
    weird.mkdir()
    path = make_brain(weird / "brain.sqlite")
    assert schema_fingerprint(path).migrations == ["0001_init", "0002_learning"]


# -- integrity ----------------------------------------------------------------------

def big_brain(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE episodes (id INTEGER PRIMARY KEY, task_id TEXT, summary TEXT)")
    conn.execute("CREATE INDEX episodes_task ON episodes (task_id)")
    rnd = random.Random(7)
    conn.executemany("INSERT INTO episodes (task_id, summary) VALUES (?, ?)",
                     [(f"task-{rnd.random()}", "x" * 180) for _row in range(3000)])
    conn.commit()
    conn.close()
    return str(path)


def test_integrity_ok(tmp_path):
    result = integrity_check(make_brain(tmp_path / "b.sqlite"))
    assert (result.ok, result.messages) == (True, ["ok"])


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7])
def test_integrity_detects_corruption_in_the_middle(tmp_path, fraction):
    path = big_brain(tmp_path / "b.sqlite")
    size = os.path.getsize(path)
    assert size > 100 * 4096  # multi-page
    offset = int(size * fraction) // 4096 * 4096 + 512
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(random.Random(fraction).randbytes(2048))
    result = integrity_check(path)
    assert result.ok is False
    assert result.messages and result.messages != ["ok"]


@pytest.mark.parametrize(
    "content, error, fragment",
    [
        (b"hello, I am a text file\n" * 10, NotADatabaseError, "is not a SQLite database"),
        (b"", NotADatabaseError, "an empty file"),
        (b"SQLite format 3\x00", NotADatabaseError, "is not a SQLite database"),
    ],
)
def test_not_a_database(tmp_path, content, error, fragment):
    path = tmp_path / "brain.sqlite"
    path.write_bytes(content)
    for call in (integrity_check, schema_fingerprint, row_counts):
        with pytest.raises(error) as exc:
            call(path)
        assert fragment in str(exc.value) and str(path) in str(exc.value)


def test_missing_brain(tmp_path):
    with pytest.raises(BrainNotFoundError) as exc:
        integrity_check(tmp_path / "nope.sqlite")
    assert "does not exist" in str(exc.value)
    with pytest.raises(BrainNotFoundError):
        schema_fingerprint(tmp_path)  # a directory


def test_row_counts(tmp_path):
    counts = row_counts(make_brain(tmp_path / "b.sqlite", rows=7))
    assert counts == {"conversations": 7, "episodes": 7, "knowledge_store": 7, "learning_signals": 7,
                      "observability_events": 7, "schema_migrations": 2}


# -- lost writes ------------------------------------------------------------------------

def test_lost_write_account(tmp_path):
    snapshot = make_brain(tmp_path / "snapshot.db", rows=5)
    replaced = str(tmp_path / "replaced.sqlite")
    online_backup(snapshot, replaced)
    write_rows(snapshot, ["CREATE TABLE dropped_later (a)"])
    write_rows(replaced, [
        "INSERT INTO episodes (task_id) VALUES ('new1'), ('new2'), ('new3')",
        "INSERT INTO knowledge_store VALUES ('k-new1', 'v'), ('k-new2', 'v')",
        "UPDATE knowledge_store SET value = 'changed' WHERE key = 'k0'",  # changed in place: not counted
        "DELETE FROM conversations WHERE id = 'c0'",
        "INSERT INTO conversations VALUES ('c-new', 'running')",
        "INSERT INTO learning_signals VALUES ('s-new', 1), ('s-new2', 1), ('s-new3', 1), ('s-new4', 1)",
        "CREATE TABLE feedback (id INTEGER PRIMARY KEY, score INTEGER)",
        "INSERT INTO feedback (score) VALUES (1), (2), (3), (4), (5)",
        "INSERT INTO schema_migrations VALUES ('0003_feedback', NULL)",
    ])
    account = lost_write_account(replaced, snapshot)
    got = {t: (e.rows, e.method) for t, e in account.tables.items()}
    assert got == {
        "episodes": (3, "primary_key"),
        "knowledge_store": (2, "primary_key"),
        "conversations": (1, "primary_key"),
        "learning_signals": (4, "rowid"),
        "observability_events": (0, "primary_key"),
        "feedback": (5, "new_table"),
        "schema_migrations": (1, "primary_key"),
    }
    assert account.total == 16
    assert account.snapshot_only_tables == ["dropped_later"]
    assert account.tables["conversations"].replaced_rows == 5
    assert account.tables["conversations"].snapshot_rows == 5
    assert account.tables["feedback"].snapshot_rows is None
    assert account.to_dict()["total"] == 16


@pytest.mark.parametrize(
    "replaced_sql, snapshot_sql, replaced_rows, snapshot_rows, expected",
    [
        # Keys not comparable (primary key column renamed, no rowid): the count difference.
        ("CREATE TABLE tags (tag TEXT PRIMARY KEY) WITHOUT ROWID",
         "CREATE TABLE tags (name TEXT PRIMARY KEY) WITHOUT ROWID", 7, 3, (4, "count")),
        ("CREATE TABLE tags (tag TEXT PRIMARY KEY) WITHOUT ROWID",
         "CREATE TABLE tags (name TEXT PRIMARY KEY) WITHOUT ROWID", 2, 5, (0, "count")),
        # Primary key only in the replaced brain, both have rowids: matched by rowid.
        ("CREATE TABLE tags (tag TEXT PRIMARY KEY)", "CREATE TABLE tags (name TEXT)", 6, 4, (2, "rowid")),
    ],
)
def test_lost_writes_fallbacks(tmp_path, replaced_sql, snapshot_sql, replaced_rows, snapshot_rows, expected):
    replaced, snapshot = str(tmp_path / "r.sqlite"), str(tmp_path / "s.sqlite")
    write_rows(replaced, [replaced_sql] + [f"INSERT INTO tags VALUES ('t{i}')" for i in range(replaced_rows)])
    write_rows(snapshot, [snapshot_sql] + [f"INSERT INTO tags VALUES ('t{i}')" for i in range(snapshot_rows)])
    entry = lost_write_account(replaced, snapshot).tables["tags"]
    assert (entry.rows, entry.method) == expected


def test_lost_write_account_leaves_both_files_unchanged(tmp_path):
    snapshot = make_brain(tmp_path / "s.db", wal=True)
    replaced = make_brain(tmp_path / "r.sqlite", rows=9, wal=True)
    before = {name: sha256_file(tmp_path / name) for name in os.listdir(tmp_path)}
    lost_write_account(replaced, snapshot)
    assert {name: sha256_file(tmp_path / name) for name in os.listdir(tmp_path)} == before


# -- sha256 and backup --------------------------------------------------------------------

@pytest.mark.parametrize("size, chunk", [(0, 4), (1, 4), (4, 4), (10_000, 333), (3 * 1024 * 1024 + 5, 1024 * 1024)])
def test_sha256_file(tmp_path, size, chunk):
    data = random.Random(size).randbytes(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sha256_file(path, chunk_size=chunk) == hashlib.sha256(data).hexdigest()


def test_online_backup_in_pages_with_progress(tmp_path):
    src = big_brain(tmp_path / "brain.sqlite")
    calls = []
    result = online_backup(src, tmp_path / "snap.db", pages=20, progress=lambda s, r, t: calls.append((r, t)))
    total = calls[-1][1]
    assert len(calls) >= total // 20 and calls[-1][0] == 0
    assert result.pages == total
    assert result.size == os.path.getsize(tmp_path / "snap.db") == os.path.getsize(src)
    assert row_counts(result.path) == row_counts(src)
    assert schema_fingerprint(result.path) == schema_fingerprint(src)
    assert integrity_check(result.path).ok
    assert stat.S_IMODE(os.stat(result.path).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["brain.sqlite", "snap.db"]


@pytest.mark.parametrize("one_file", [True, False])
def test_online_backup_of_a_live_wal_brain(tmp_path, one_file):
    src = make_brain(tmp_path / "brain.sqlite", rows=50, wal=True)
    writer = sqlite3.connect(src)
    steps = []
    try:
        writer.execute("INSERT INTO episodes (task_id) VALUES ('in-wal-only')")
        writer.commit()

        def progress(status, remaining, total):
            steps.append((remaining, total))
            if len(steps) == 1:  # a write between two steps: the copy stays the state it started from
                writer.execute("INSERT INTO episodes (task_id) VALUES ('during-backup')")
                writer.commit()

        result = online_backup(src, tmp_path / "snap.db", pages=1, progress=progress, one_file=one_file)
    finally:
        writer.close()
    # One read transaction: the backup never started over, however the source was written meanwhile.
    assert len(steps) == steps[0][1] == result.pages and steps[-1][0] == 0
    conn = connect_ro(result.path)  # a copy with no -wal: read in place, nothing made beside it
    tasks = {r[0] for r in conn.execute("SELECT task_id FROM episodes")}
    conn.close()
    assert integrity_check(result.path).ok
    assert "in-wal-only" in tasks and "during-backup" not in tasks
    with open(result.path, "rb") as handle:
        header = handle.read(20)
    # one_file: rollback journal, one self-contained file; else the source's WAL flag, as the CLI's .backup keeps it.
    assert header[18:20] == (b"\x01\x01" if one_file else b"\x02\x02")
    assert sorted(os.listdir(tmp_path)) == ["brain.sqlite", "snap.db"]  # nothing of the copy left beside it


def test_online_backup_refuses_to_overwrite(tmp_path):
    src = make_brain(tmp_path / "brain.sqlite")
    dst = tmp_path / "snap.db"
    dst.write_bytes(b"precious")
    with pytest.raises(BrainError) as exc:
        online_backup(src, dst)
    assert "destination exists" in str(exc.value)
    assert dst.read_bytes() == b"precious"
    online_backup(src, dst, overwrite=True)
    assert integrity_check(dst).ok


def test_online_backup_into_missing_directory(tmp_path):
    src = make_brain(tmp_path / "brain.sqlite")
    with pytest.raises(BrainError) as exc:
        online_backup(src, tmp_path / "no-such-dir" / "snap.db")
    assert "no-such-dir/snap.db" in str(exc.value) and "No such file or directory" in str(exc.value)


@pytest.mark.parametrize("pages", [0, -2, True])
def test_online_backup_rejects_bad_step(tmp_path, pages):
    src = make_brain(tmp_path / "brain.sqlite")
    with pytest.raises(BrainError) as exc:
        online_backup(src, tmp_path / "snap.db", pages=pages)
    assert "pages is invalid" in str(exc.value)
    assert not os.path.exists(tmp_path / "snap.db")


def test_online_backup_of_not_a_database(tmp_path):
    src = tmp_path / "notes.txt"
    src.write_text("not sqlite " * 20)
    with pytest.raises(NotADatabaseError):
        online_backup(src, tmp_path / "snap.db")
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]
