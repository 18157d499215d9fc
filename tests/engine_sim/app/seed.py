"""Seed a new brain for the reference Engine.

    python3 seed.py --rows N [--db PATH] [--size-mb M] [--force]

Applies the migrations this release knows (``ENGINE_SIM_MIGRATIONS``, through
``engine.py``'s own code), then inserts N rows spread across ``episodes``,
``knowledge_store``, ``conversations`` (status ``completed``),
``trajectories`` and ``learning_signals``. ``--size-mb`` then grows the brain
to about M MiB with large text values in ``knowledge_store``. A brain that
already holds rows is refused unless ``--force``. Run it on the volume in a
throwaway container, never against a running Engine's port.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sqlite3
import sys
import uuid
import engine

BLOB_CHARS = 64 * 1024  # one knowledge_store value when growing the brain
BLOB_POOL = 16
SEEDED_TABLES = ("episodes", "knowledge_store", "conversations", "trajectories", "learning_signals")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Seed a new reference Engine brain.")
    parser.add_argument("--rows", type=int, default=0, help="rows to insert, spread across the data tables")
    parser.add_argument("--db", default=os.environ.get("SQLITE_DB_PATH") or "/data/brain.sqlite",
                        help="brain path (default: $SQLITE_DB_PATH or /data/brain.sqlite)")
    parser.add_argument("--size-mb", type=float, default=0.0, help="grow the brain to about this many MiB")
    parser.add_argument("--force", action="store_true", help="seed even if the brain already has rows")
    args = parser.parse_args(argv)
    if args.rows < 0 or args.size_mb < 0:
        parser.error("--rows and --size-mb must not be negative")
    return args


def iso(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def row_count(conn: sqlite3.Connection, brain: engine.Brain) -> int:
    return sum(conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in brain.data_tables(conn))


def seed_rows(conn: sqlite3.Connection, rows: int, run: str) -> dict[str, int]:
    """Insert ``rows`` rows round-robin over SEEDED_TABLES, questions and
    answers taken from the fake model, timestamps spread over the last days."""
    model = engine.FakeModel()
    questions = list(engine.FACTS)
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=rows)
    batches: dict[str, list[tuple[object, ...]]] = {t: [] for t in SEEDED_TABLES}
    for i in range(rows):
        table = SEEDED_TABLES[i % len(SEEDED_TABLES)]
        at = iso(start + datetime.timedelta(minutes=i))
        task_id = f"seed-{run}-{i}"
        question = questions[i % len(questions)]
        answer = model.reply(question).text
        if table == "episodes":
            batches[table].append((task_id, at, question, answer, "completed"))
        elif table == "knowledge_store":
            batches[table].append((f"seed:{run}:{i}", f"{question} {answer}", "seed", at))
        elif table == "conversations":
            tokens = engine.count_tokens(question) + engine.count_tokens(answer)
            batches[table].append((task_id, "completed", at, at, 1, question, answer, tokens))
        elif table == "trajectories":
            steps = [{"type": "text_delta", "data": {"text": answer}}]
            batches[table].append((task_id, at, json.dumps(steps)))
        else:
            batches[table].append((at, "seed", task_id, (i % 100) / 100))
    sql = {
        "episodes": "INSERT INTO episodes(task_id, created_at, user_message, answer, outcome) "
                    "VALUES (?, ?, ?, ?, ?)",
        "knowledge_store": "INSERT INTO knowledge_store(key, value, source, updated_at) VALUES (?, ?, ?, ?)",
        "conversations": "INSERT INTO conversations(task_id, status, started_at, finished_at, turns, "
                         "last_message, final_text, history_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        "trajectories": "INSERT INTO trajectories(task_id, created_at, steps) VALUES (?, ?, ?)",
        "learning_signals": "INSERT INTO learning_signals(created_at, kind, task_id, value) VALUES (?, ?, ?, ?)",
    }
    for table, values in batches.items():
        conn.executemany(sql[table], values)
    return {table: len(values) for table, values in batches.items()}


def size_bytes(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]


def grow(conn: sqlite3.Connection, size_mb: float, run: str) -> int:
    """Add large knowledge_store values, about 1 MiB at a time, until the
    brain is about size_mb MiB; returns how many rows that took."""
    target = int(size_mb * 2 ** 20)
    pool = [os.urandom(BLOB_CHARS // 2).hex() for _blob in range(BLOB_POOL)]
    now = iso(datetime.datetime.now(datetime.timezone.utc))
    count = 0
    while size_bytes(conn) < target:
        conn.executemany(
            "INSERT INTO knowledge_store(key, value, source, updated_at) VALUES (?, ?, ?, ?)",
            [(f"blob:{run}:{i}", f"{i:012d}{pool[i % BLOB_POOL][12:]}", "seed-blob", now)
             for i in range(count, count + BLOB_POOL)])
        count += BLOB_POOL
    return count


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = engine.Config.from_env()
    except engine.ConfigError as exc:
        print(f"seed: invalid configuration: {exc}", file=sys.stderr)
        return 2
    brain = engine.Brain(args.db, config.migrations_table)
    try:
        brain.prepare()
        unknown = brain.unknown_migrations(config.migrations)
        if unknown:
            print(f"seed: MIGRATION_REQUIRED: {args.db} records migrations this release does not know: "
                  f"{', '.join(unknown)}", file=sys.stderr)
            return engine.EXIT_MIGRATION_REQUIRED
        for migration_id in brain.pending_migrations(config.migrations):
            brain.apply_migration(migration_id)
        run = uuid.uuid4().hex[:8]
        with brain.transaction() as conn:
            existing = row_count(conn, brain)
            if existing and not args.force:
                print(f"seed: refusing to seed {args.db}: it already holds {existing} rows (use --force)",
                      file=sys.stderr)
                return 1
            inserted = seed_rows(conn, args.rows, run)
            inserted["knowledge_store"] += grow(conn, args.size_mb, run) if args.size_mb else 0
        brain.checkpoint()
    except (OSError, sqlite3.Error, engine.MigrationError) as exc:
        print(f"seed: cannot seed {args.db}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"db": args.db, "migrations": list(brain.applied), "inserted": inserted,
                      "size_bytes": os.path.getsize(args.db)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
