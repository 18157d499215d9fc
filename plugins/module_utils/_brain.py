# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The Engine's SQLite brain, read with the standard library's sqlite3.

Every reader opens the file read-only (``file:...?mode=ro``), so nothing
here changes a brain. A brain in WAL mode with no ``-wal`` file beside it
(the Engine stopped cleanly, or a snapshot made by ``.backup``) is opened
``immutable`` as well, so no ``-wal``/``-shm`` files appear next to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Callable

SQLITE_MAGIC = b"SQLite format 3\x00"
_HASH_CHUNK = 1024 * 1024
_BACKUP_MMAP_BYTES = 2 ** 31 - 2 ** 16  # SQLITE_MAX_MMAP_SIZE of common builds; SQLite caps it at its own
_BACKUP_TARGET_CACHE_PAGES = 100
_MIGRATION_NAME_RE = re.compile(r"migration", re.IGNORECASE)
# Preferred migration id columns, best first; text affinity is required for "id".
_MIGRATION_COLUMNS = ("id", "version", "migration_id", "migration", "name", "filename", "file")
_MIGRATION_ANY_TYPE_COLUMNS = ("version", "migration_id", "migration")


class BrainError(Exception):
    """Base class of the errors raised by this file."""


class BrainNotFoundError(BrainError, FileNotFoundError):
    """The brain file does not exist or is not a regular file."""


class NotADatabaseError(BrainError):
    """The file is not a SQLite database."""


@dataclass
class SchemaFingerprint:
    """A brain's schema: ``fingerprint`` is a sha256 over the normalised schema and the applied migrations."""

    fingerprint: str
    tables: list[str]
    migrations: list[str]
    migrations_table: str | None
    migrations_column: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "tables": list(self.tables),
            "migrations": list(self.migrations),
            "migrations_table": self.migrations_table,
            "migrations_column": self.migrations_column,
        }


@dataclass
class IntegrityResult:
    """``PRAGMA integrity_check``: ``ok`` and the messages (``["ok"]`` when sound)."""

    path: str
    ok: bool
    messages: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "messages": list(self.messages)}


@dataclass
class LostWrites:
    """Rows one table of a replaced brain has beyond the snapshot that replaced it.

    ``method``: ``primary_key`` or ``rowid`` (rows whose key the snapshot
    lacks), ``count`` (keys not comparable: the difference of row counts,
    never below 0), ``new_table`` (table absent from the snapshot: every row).
    """

    table: str
    rows: int
    method: str
    replaced_rows: int
    snapshot_rows: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "rows": self.rows,
            "method": self.method,
            "replaced_rows": self.replaced_rows,
            "snapshot_rows": self.snapshot_rows,
        }


@dataclass
class LostWriteAccount:
    """Per table, what a restore from the snapshot loses of the replaced brain."""

    tables: dict[str, LostWrites] = field(default_factory=dict)
    snapshot_only_tables: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(entry.rows for entry in self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "tables": {name: entry.to_dict() for name, entry in self.tables.items()},
            "snapshot_only_tables": list(self.snapshot_only_tables),
        }


@dataclass
class BackupResult:
    """An online backup: the destination, its size and the pages copied."""

    path: str
    size: int
    pages: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "pages": self.pages}


def sha256_file(path: str | os.PathLike[str], chunk_size: int = _HASH_CHUNK) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk_size)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def _check_database_file(path: str | os.PathLike[str]) -> tuple[str, bytes]:
    """``(absolute path, first 100 bytes)`` of a SQLite file; raises a clear error otherwise."""
    text = os.fspath(path)
    if not os.path.exists(text):
        raise BrainNotFoundError(f"Brain {text!r} does not exist")
    if not os.path.isfile(text):
        raise BrainNotFoundError(f"Brain {text!r} is not a regular file")
    with open(text, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        what = "an empty file" if not header else f"{len(header)}+ bytes starting with {header[:16]!r}"
        raise NotADatabaseError(
            f"{text!r} is not a SQLite database: found {what}, expected the header 'SQLite format 3'"
        )
    return os.path.abspath(text), header


def _uri(path: str, immutable: bool = False) -> str:
    # Percent-encode what a URI would misread ('?', '#', '%'), keep the rest.
    quoted = path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    return f"file:{quoted}?mode=ro" + ("&immutable=1" if immutable else "")


def _ro_uri(path: str | os.PathLike[str]) -> str:
    abspath, header = _check_database_file(path)
    # Header bytes 18/19 are 2 in WAL mode. With no -wal file nobody is
    # writing: open immutable so SQLite creates no -wal/-shm beside it.
    wal = header[18] == 2 and header[19] == 2
    immutable = wal and not os.path.exists(abspath + "-wal")
    return _uri(abspath, immutable)


def connect_ro(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection to a brain (checked to be a SQLite file first)."""
    uri = _ro_uri(path)
    try:
        return sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise BrainError(f"Cannot open brain {os.fspath(path)!r} read-only: {exc}") from None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_SQL_TOKEN_RE = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\]|\s+|[(),]|[^'"`\[\s(),]+|.""")


def normalise_sql(sql: str | None) -> str | None:
    """``sql`` with whitespace collapsed to one space and dropped around ``(``, ``)`` and ``,``.

    Quoted names and string literals are kept as they are.
    """
    if sql is None:
        return None
    tokens = [" " if token.isspace() else token for token in _SQL_TOKEN_RE.findall(sql)]
    out: list[str] = []
    for index, token in enumerate(tokens):
        if token == " ":
            prev = tokens[index - 1] if index else ""
            nxt = tokens[index + 1] if index + 1 < len(tokens) else ""
            if prev in ("", "(", ",", " ") or nxt in ("", "(", ")", ","):
                continue
        out.append(token)
    return "".join(out)


def _schema_rows(conn: sqlite3.Connection) -> list[tuple[str, str, str, str | None]]:
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
    ).fetchall()
    return sorted((r[0], r[1], r[2], normalise_sql(r[3])) for r in rows)


def _tables(conn: sqlite3.Connection, schema: str = "main") -> list[str]:
    rows = conn.execute(
        f"SELECT name FROM {_quote(schema)}.sqlite_master WHERE type = 'table' "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
    ).fetchall()
    return [r[0] for r in rows]


def _columns(conn: sqlite3.Connection, table: str, schema: str = "main") -> list[tuple[str, str, int]]:
    """``(name, declared type, pk position)`` of each column."""
    rows = conn.execute(f"PRAGMA {_quote(schema)}.table_info({_quote(table)})").fetchall()
    return [(r[1], (r[2] or "").upper(), r[5]) for r in rows]


def _text_affinity(declared: str) -> bool:
    return declared == "" or any(word in declared for word in ("CHAR", "CLOB", "TEXT"))


def _natural_key(value: str) -> list[Any]:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", value) if part]


def _migration_column(columns: list[tuple[str, str, int]]) -> str | None:
    by_name = {name.lower(): (name, declared) for name, declared, _pk in columns}
    for wanted in _MIGRATION_COLUMNS:
        if wanted in by_name and _text_affinity(by_name[wanted][1]):
            return by_name[wanted][0]
    for wanted in _MIGRATION_ANY_TYPE_COLUMNS:
        if wanted in by_name:
            return by_name[wanted][0]
    return None


def _read_migrations(conn: sqlite3.Connection, table: str, column: str) -> list[str]:
    rows = conn.execute(f"SELECT DISTINCT {_quote(column)} FROM {_quote(table)} WHERE {_quote(column)} IS NOT NULL")
    return sorted((str(r[0]) for r in rows), key=_natural_key)


def find_migrations(conn: sqlite3.Connection, migrations_table: str | None = None,
                    migrations_column: str | None = None) -> tuple[str | None, str | None, list[str]]:
    """``(table, column, sorted ids)`` of the applied migrations.

    With no ``migrations_table``, every table whose name contains
    ``migration`` (any case) and has an id/version/name-like column is a
    candidate; the one with the most rows wins (ties: by name).
    """
    tables = _tables(conn)
    if migrations_table is not None:
        if migrations_table not in tables:
            raise BrainError(
                f"Migrations table {migrations_table!r} is not in the brain; its tables are: {', '.join(tables) or 'none'}"
            )
        columns = _columns(conn, migrations_table)
        column = migrations_column or _migration_column(columns)
        if column is None or column not in [c[0] for c in columns]:
            names = ", ".join(c[0] for c in columns)
            raise BrainError(
                f"Migrations table {migrations_table!r} has no column {column or 'like id, version or name'!r}; "
                f"its columns are: {names}"
            )
        return migrations_table, column, _read_migrations(conn, migrations_table, column)
    best: tuple[int, str, str] | None = None
    for table in tables:
        if not _MIGRATION_NAME_RE.search(table):
            continue
        columns = _columns(conn, table)
        column = migrations_column if migrations_column in [c[0] for c in columns] else _migration_column(columns)
        if column is None:
            continue
        count = conn.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()[0]
        if best is None or count > best[0]:
            best = (count, table, column)
    if best is None:
        return None, None, []
    _count, table, column = best
    return table, column, _read_migrations(conn, table, column)


def schema_fingerprint(path: str | os.PathLike[str], migrations_table: str | None = None,
                       migrations_column: str | None = None) -> SchemaFingerprint:
    """The schema fingerprint of a brain, with its tables and applied migrations.

    The sha256 covers the ``sqlite_master`` rows (type, name, tbl_name,
    whitespace-normalised sql; SQLite's own ``sqlite_*`` objects left out),
    sorted, and the sorted migration ids: two brains with the same schema
    and migrations get the same fingerprint whatever their data.
    """
    conn = connect_ro(path)
    try:
        try:
            schema = _schema_rows(conn)
            table, column, migrations = find_migrations(conn, migrations_table, migrations_column)
            tables = _tables(conn)
        except sqlite3.DatabaseError as exc:
            raise BrainError(f"Cannot read the schema of brain {os.fspath(path)!r}: {exc}") from None
    finally:
        conn.close()
    payload = json.dumps({"schema": schema, "migrations": migrations}, sort_keys=True, separators=(",", ":"))
    return SchemaFingerprint(
        fingerprint=hashlib.sha256(payload.encode("utf-8")).hexdigest(),
        tables=tables,
        migrations=migrations,
        migrations_table=table,
        migrations_column=column,
    )


def integrity_check(path: str | os.PathLike[str], max_errors: int = 100) -> IntegrityResult:
    """``PRAGMA integrity_check`` of a brain. A damaged database is a result (``ok`` False), not an error.

    Raises :class:`NotADatabaseError` when the file is not SQLite at all.
    """
    conn = connect_ro(path)
    text = os.fspath(path)
    try:
        try:
            rows = conn.execute(f"PRAGMA integrity_check({int(max_errors)})").fetchall()
        except sqlite3.DatabaseError as exc:
            if "not a database" in str(exc):
                raise NotADatabaseError(f"{text!r} is not a SQLite database: {exc}") from None
            return IntegrityResult(text, False, [f"integrity_check could not run: {exc}"])
    finally:
        conn.close()
    # SQLite may pack several problems into one row, one per line.
    messages = [line for r in rows for line in str(r[0]).splitlines() if line.strip()]
    return IntegrityResult(text, messages == ["ok"], messages)


def row_counts(path: str | os.PathLike[str]) -> dict[str, int]:
    """Rows of each table of a brain (SQLite's own tables left out)."""
    conn = connect_ro(path)
    try:
        counts = {}
        for table in _tables(conn):
            try:
                counts[table] = conn.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                raise BrainError(f"Cannot count the rows of table {table!r} in brain {os.fspath(path)!r}: {exc}") from None
        return counts
    finally:
        conn.close()


def _has_rowid(conn: sqlite3.Connection, table: str, schema: str) -> bool:
    sql = conn.execute(
        f"SELECT sql FROM {_quote(schema)}.sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchone()
    if sql is None or sql[0] is None:
        return False
    text = normalise_sql(sql[0]) or ""
    if text.upper().startswith("CREATE VIRTUAL TABLE"):
        return False
    return not re.search(r"\bWITHOUT\s+ROWID\b", text, re.IGNORECASE)


def lost_write_account(replaced_path: str | os.PathLike[str],
                       snapshot_path: str | os.PathLike[str]) -> LostWriteAccount:
    """Per table, how many rows ``replaced_path`` has that ``snapshot_path`` lacks.

    Rows are matched by declared primary key when both sides have its
    columns, else by rowid; tables whose rows cannot be matched count the
    difference of row counts; tables only in the replaced brain count
    fully. Rows changed in place are not counted.
    """
    snapshot_uri = _ro_uri(snapshot_path)
    conn = connect_ro(replaced_path)
    account = LostWriteAccount()
    try:
        try:
            conn.execute("ATTACH DATABASE ? AS snap", (snapshot_uri,))
        except sqlite3.Error as exc:
            raise BrainError(f"Cannot open snapshot {os.fspath(snapshot_path)!r} read-only: {exc}") from None
        replaced_tables = _tables(conn, "main")
        snapshot_tables = set(_tables(conn, "snap"))
        account.snapshot_only_tables = sorted(snapshot_tables - set(replaced_tables))
        for table in replaced_tables:
            try:
                account.tables[table] = _lost_in_table(conn, table, table in snapshot_tables)
            except sqlite3.DatabaseError as exc:
                raise BrainError(f"Cannot compare table {table!r} of {os.fspath(replaced_path)!r} "
                                 f"with snapshot {os.fspath(snapshot_path)!r}: {exc}") from None
    finally:
        conn.close()
    return account


def _lost_in_table(conn: sqlite3.Connection, table: str, in_snapshot: bool) -> LostWrites:
    qt = _quote(table)
    replaced_rows = conn.execute(f"SELECT count(*) FROM main.{qt}").fetchone()[0]
    if not in_snapshot:
        return LostWrites(table, replaced_rows, "new_table", replaced_rows, None)
    snapshot_rows = conn.execute(f"SELECT count(*) FROM snap.{qt}").fetchone()[0]
    main_columns = _columns(conn, table, "main")
    snap_columns = {c[0] for c in _columns(conn, table, "snap")}
    pk = [name for name, _declared, position in sorted(main_columns, key=lambda c: c[2]) if position > 0]
    if pk and all(name in snap_columns for name in pk):
        condition = " AND ".join(f"s.{_quote(c)} = m.{_quote(c)}" for c in pk)
        method = "primary_key"
    elif _has_rowid(conn, table, "main") and _has_rowid(conn, table, "snap"):
        condition = "s.rowid = m.rowid"
        method = "rowid"
    else:
        return LostWrites(table, max(replaced_rows - snapshot_rows, 0), "count", replaced_rows, snapshot_rows)
    rows = conn.execute(
        f"SELECT count(*) FROM main.{qt} AS m WHERE NOT EXISTS (SELECT 1 FROM snap.{qt} AS s WHERE {condition})"
    ).fetchone()[0]
    return LostWrites(table, rows, method, replaced_rows, snapshot_rows)


def online_backup(src: str | os.PathLike[str], dst: str | os.PathLike[str], pages: int = 1024,
                  progress: Callable[[int, int, int], object] | None = None,
                  overwrite: bool = False, one_file: bool = True) -> BackupResult:
    """Copy a brain with SQLite's online backup API, ``pages`` at a time.

    Safe while other processes write ``src``. A source in WAL mode is copied
    inside one read transaction held across the steps: one consistent state,
    taken when the backup starts, while writers go on; it never starts over.
    A source in rollback-journal mode is copied step by step without holding
    its writers up, starting over when a write lands between two steps.
    ``progress(status, remaining, total)`` is called after each step; an
    exception it raises aborts the backup. The copy is written beside
    ``dst``, switched to rollback-journal mode (one self-contained file)
    unless ``one_file`` is false (then it keeps the source's journal mode
    flag, like the sqlite3 CLI's ``.backup``), synced, made mode 0600 and
    renamed into place; ``dst`` is refused if it exists unless ``overwrite``.
    """
    dst_text = os.fspath(dst)
    if os.path.lexists(dst_text) and not overwrite:
        raise BrainError(f"Cannot back up {os.fspath(src)!r} to {dst_text!r}: the destination exists")
    if not isinstance(pages, int) or isinstance(pages, bool) or pages == 0 or pages < -1:
        raise BrainError(f"Backup step of {pages!r} pages is invalid; expected a positive number or -1 for all")
    partial = os.path.join(os.path.dirname(os.path.abspath(dst_text)), f".{os.path.basename(dst_text)}.partial")
    source = connect_ro(src)
    copied = 0
    try:
        # Read the source through a memory map, write the copy without a journal of its own
        # or a sync per page (a failed copy is thrown away; it is synced once at the end).
        source.execute(f"PRAGMA mmap_size={_BACKUP_MMAP_BYTES}").fetchall()
        if source.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            source.execute("BEGIN")
            source.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        for leftover in (partial, partial + "-journal", partial + "-wal", partial + "-shm"):
            if os.path.lexists(leftover):
                os.unlink(leftover)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        target = sqlite3.connect(partial)
        try:
            for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size={_BACKUP_TARGET_CACHE_PAGES}"):
                target.execute(f"PRAGMA {pragma}").fetchall()

            def _step(status: int, remaining: int, total: int) -> None:
                nonlocal copied
                copied = total - remaining
                if progress is not None:
                    progress(status, remaining, total)

            source.backup(target, pages=pages, progress=_step)
            if one_file:
                # The copy keeps the source's WAL flag; make it one file.
                target.execute("PRAGMA journal_mode=DELETE").fetchone()
                target.commit()
                copied = target.execute("PRAGMA page_count").fetchone()[0]
        finally:
            target.close()
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(partial, 0o600)
        os.replace(partial, dst_text)
        _fsync_dir(os.path.dirname(os.path.abspath(dst_text)))
    except (sqlite3.Error, OSError) as exc:
        _remove_quietly(partial)
        raise BrainError(f"Cannot back up {os.fspath(src)!r} to {dst_text!r}: {exc}") from None
    except BaseException:
        _remove_quietly(partial)
        raise
    finally:
        source.close()
    return BackupResult(dst_text, os.path.getsize(dst_text), copied)


def _remove_quietly(path: str) -> None:
    for candidate in (path, path + "-journal", path + "-wal", path + "-shm"):
        try:
            os.unlink(candidate)
        except FileNotFoundError:
            pass


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
