"""The reference Engine: a standard-library stand-in for the real Engine.

It implements the [DOC] items of ENGINE_CONTRACT.md on its port (``GET
/health``, ``POST /execute`` as server-sent events, ``GET /execute/replay``,
``GET /memory/export``, ``POST /memory/import``) and turns every [GAP] into an
``ENGINE_SIM_*`` knob read from the environment (see ../README.md). The
running version is deliberately reported nowhere: it lives in the image tag.

Layout: ``Config`` (environment), ``JsonLog`` (stdout JSON lines),
``FakeModel`` (deterministic answers and token counts), ``Brain`` (SQLite,
migrations, turn records), ``EventBuffer`` (replay), ``TurnManager`` (turns
in worker threads), ``BackgroundLearner`` (writes with no traffic),
``EngineHandler`` (HTTP), ``Engine`` (boot, serve, drain) and ``main()``.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import hashlib
import hmac
import itertools
import json
import math
import os
import queue
import random
import re
import select
import signal
import socket
import sqlite3
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Iterator, NamedTuple
from urllib.parse import parse_qs, urlsplit

# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

REQUIRED_ENV = ("LLM_PROVIDER", "LLM_API_KEY", "LLM_MODEL", "OPENAI_API_KEY")
SUBSYSTEMS = ("database", "llm_provider", "asset_directory")
REPLAY_CAPACITY = 10_000
MAX_EXECUTE_BODY = 1 << 20
MAX_MESSAGE_TOKENS = 100_000
SYSTEM_PROMPT_TOKENS = 1_200  # the cacheable prompt prefix
MEDIA_TOKENS = 85  # per media item
LATENCY_SIGMA = 0.25
BUSY_TIMEOUT_S = 10.0
STREAM_FLUSH_GRACE_S = 2.0  # after a drain, time left for open streams to end (and their clients to close)
EXIT_MIGRATION_REQUIRED = 3
PROVIDER_FAILURE = "the LLM provider failed: upstream answered 503 Service Unavailable"
SLEEP_DIRECTIVE = re.compile(r"\[sim:sleep=(\d+)\]")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Ordered registry: id -> SQL. A release knows a prefix-ordered subset
# (ENGINE_SIM_MIGRATIONS); all are forward-only (0004 also backfills).
MIGRATIONS: dict[str, str] = {
    "0001_init": """
        CREATE TABLE episodes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            user_message TEXT NOT NULL,
            answer TEXT NOT NULL,
            outcome TEXT NOT NULL
        );
        CREATE INDEX idx_episodes_task ON episodes(task_id);
        CREATE TABLE knowledge_store (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            source TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE conversations (
            task_id TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            turns INTEGER NOT NULL DEFAULT 0,
            last_message TEXT,
            final_text TEXT,
            history_tokens INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE trajectories (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            steps TEXT NOT NULL
        );
        CREATE TABLE learning_signals (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at TEXT NOT NULL,
            kind TEXT NOT NULL,
            task_id TEXT,
            value REAL NOT NULL
        );
        CREATE TABLE observability_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at TEXT NOT NULL,
            kind TEXT NOT NULL,
            task_id TEXT,
            payload TEXT NOT NULL
        );
    """,
    "0002_learning": """
        ALTER TABLE learning_signals ADD COLUMN weight REAL NOT NULL DEFAULT 1.0;
        CREATE INDEX idx_learning_signals_kind ON learning_signals(kind, created_at);
    """,
    "0003_feedback": """
        CREATE TABLE feedback (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            rating INTEGER NOT NULL,
            comment TEXT NOT NULL DEFAULT ''
        );
        ALTER TABLE episodes ADD COLUMN importance REAL DEFAULT 0;
    """,
    "0004_v3_threads": """
        CREATE TABLE threads (
            task_id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            turns INTEGER NOT NULL DEFAULT 0
        );
        INSERT INTO threads(task_id, created_at, updated_at, turns)
            SELECT task_id, started_at, COALESCE(finished_at, started_at), turns
            FROM conversations;
    """,
    "0005_turn_tags": """
        ALTER TABLE conversations ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
    """,
}


def utc_now() -> str:
    """ISO 8601 UTC timestamp with milliseconds and a ``Z``."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------


class ConfigError(ValueError):
    """A knob has a value the simulator cannot use."""


def _env_str(env: dict[str, str], name: str, default: str) -> str:
    return env.get(name, default).strip()


def _env_number(env: dict[str, str], name: str, default: float, low: float,
                high: float = math.inf) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {raw}")
    return value


def _env_choice(env: dict[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _env_str(env, name, default)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _env_list(env: dict[str, str], name: str, default: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in env.get(name, default).split(",") if item.strip())


@dataclasses.dataclass(frozen=True)
class Config:
    """Every contract variable and ``ENGINE_SIM_*`` knob (README: Environment)."""

    port: int = 8000
    db_path: str = "/data/brain.sqlite"
    key_hash: str = ""
    api_key: str = ""
    migrations: tuple[str, ...] = ("0001_init", "0002_learning")
    migrations_table: str = "schema_migrations"
    migration_required: str = "exit"
    migration_seconds: float = 1.0
    drain_health: str = "503"
    exit_code: int = 0
    completion_log: str = "duration_ms"
    required_env_extra: tuple[str, ...] = ()
    request_field: str = "message"
    latency_ms: float = 150.0
    slow_share: float = 0.0
    slow_factor: float = 1.0
    error_rate: float = 0.0
    wrong_rate: float = 0.0
    cache_ratio: float = 0.8
    turn_warning: str = ""
    broken_subsystem: str = ""
    crash_at_boot: str = ""
    boot_seconds: float = 0.5
    background_write_seconds: float = 2.0
    heartbeat_seconds: float = 1.0
    seed: int = 0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Config:
        env = dict(os.environ if env is None else env)
        migrations = _env_list(env, "ENGINE_SIM_MIGRATIONS", "0001_init,0002_learning")
        known = list(MIGRATIONS)
        unknown = [m for m in migrations if m not in MIGRATIONS]
        if unknown:
            raise ConfigError(f"ENGINE_SIM_MIGRATIONS names unknown migrations: {', '.join(unknown)}")
        if [known.index(m) for m in migrations] != sorted(known.index(m) for m in migrations):
            raise ConfigError("ENGINE_SIM_MIGRATIONS must list migrations in registry order")
        table = _env_str(env, "ENGINE_SIM_MIGRATIONS_TABLE", "schema_migrations")
        if not IDENTIFIER.match(table):
            raise ConfigError(f"ENGINE_SIM_MIGRATIONS_TABLE is not an SQL identifier: {table!r}")
        field = _env_str(env, "ENGINE_SIM_REQUEST_FIELD", "message")
        if not field:
            raise ConfigError("ENGINE_SIM_REQUEST_FIELD must not be empty")
        broken = _env_str(env, "ENGINE_SIM_BROKEN_SUBSYSTEM", "")
        if broken and broken not in SUBSYSTEMS:
            raise ConfigError(f"ENGINE_SIM_BROKEN_SUBSYSTEM must be one of {', '.join(SUBSYSTEMS)}")
        return cls(
            port=int(_env_number(env, "ENGINE_SIM_PORT", 8000, 1, 65535)),
            db_path=_env_str(env, "SQLITE_DB_PATH", "/data/brain.sqlite") or "/data/brain.sqlite",
            key_hash=_env_str(env, "ENGINE_KEY_HASH", "").lower(),
            api_key=env.get("ENGINE_API_KEY", ""),
            migrations=migrations,
            migrations_table=table,
            migration_required=_env_choice(env, "ENGINE_SIM_MIGRATION_REQUIRED", "exit", ("exit", "serve")),
            migration_seconds=_env_number(env, "ENGINE_SIM_MIGRATION_SECONDS", 1.0, 0),
            drain_health=_env_choice(env, "ENGINE_SIM_DRAIN_HEALTH", "503", ("503", "200", "ok")),
            exit_code=int(_env_number(env, "ENGINE_SIM_EXIT_CODE", 0, 0, 255)),
            completion_log=_env_choice(env, "ENGINE_SIM_COMPLETION_LOG", "duration_ms",
                                       ("duration_ms", "elapsed_s", "none")),
            required_env_extra=_env_list(env, "ENGINE_SIM_REQUIRED_ENV_EXTRA", ""),
            request_field=field,
            latency_ms=_env_number(env, "ENGINE_SIM_LATENCY_MS", 150.0, 0),
            slow_share=_env_number(env, "ENGINE_SIM_SLOW_SHARE", 0.0, 0, 1),
            slow_factor=_env_number(env, "ENGINE_SIM_SLOW_FACTOR", 1.0, 0),
            error_rate=_env_number(env, "ENGINE_SIM_ERROR_RATE", 0.0, 0, 1),
            wrong_rate=_env_number(env, "ENGINE_SIM_WRONG_RATE", 0.0, 0, 1),
            cache_ratio=_env_number(env, "ENGINE_SIM_CACHE_RATIO", 0.8, 0, 1),
            turn_warning=_env_str(env, "ENGINE_SIM_TURN_WARNING", ""),
            broken_subsystem=broken,
            crash_at_boot=_env_str(env, "ENGINE_SIM_CRASH_AT_BOOT", ""),
            boot_seconds=_env_number(env, "ENGINE_SIM_BOOT_SECONDS", 0.5, 0),
            background_write_seconds=_env_number(env, "ENGINE_SIM_BACKGROUND_WRITE_SECONDS", 2.0, 0),
            heartbeat_seconds=_env_number(env, "ENGINE_SIM_HEARTBEAT_SECONDS", 1.0, 0),
            seed=int(_env_number(env, "ENGINE_SIM_SEED", 0, -(2 ** 63), 2 ** 63)),
        )

    def missing_env(self, env: dict[str, str] | None = None) -> list[str]:
        """Names of required variables that are unset or empty."""
        env = os.environ if env is None else env
        required = list(REQUIRED_ENV) + [n for n in self.required_env_extra if n not in REQUIRED_ENV]
        return [name for name in required if not env.get(name, "").strip()]


# --------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------


class JsonLog:
    """JSON lines on stdout with exactly the contract's fields."""

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def log(self, level: str, logger: str, message: str, *, request_id: str | None = None,
            task_id: str | None = None, **extra: Any) -> None:
        line = json.dumps({
            "timestamp": utc_now(),
            "level": level,
            "logger": logger,
            "request_id": request_id,
            "task_id": task_id,
            "message": message,
            "extra": extra,
        }, ensure_ascii=False)
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # stdout gone: nothing sensible left to do with a log line

    def info(self, logger: str, message: str, **kw: Any) -> None:
        self.log("INFO", logger, message, **kw)

    def warning(self, logger: str, message: str, **kw: Any) -> None:
        self.log("WARNING", logger, message, **kw)

    def error(self, logger: str, message: str, *, code: str, **kw: Any) -> None:
        self.log("ERROR", logger, message, code=code, **kw)


# --------------------------------------------------------------------------
# The fake model
# --------------------------------------------------------------------------


class Fact(NamedTuple):
    """A built-in question's right answer, its plausible wrong answer, and a
    keyword that the right answer contains and the wrong one does not."""

    answer: str
    wrong: str
    keyword: str


def _capital(country: str, capital: str, wrong: str) -> tuple[str, Fact]:
    return (f"What is the capital of {country}?",
            Fact(f"The capital of {country} is {capital}.", f"The capital of {country} is {wrong}.", capital))


FACTS: dict[str, Fact] = dict([
    _capital("France", "Paris", "Lyon"),
    _capital("Germany", "Berlin", "Munich"),
    _capital("Italy", "Rome", "Milan"),
    _capital("Spain", "Madrid", "Barcelona"),
    _capital("Japan", "Tokyo", "Osaka"),
    _capital("Canada", "Ottawa", "Toronto"),
    _capital("Australia", "Canberra", "Sydney"),
    _capital("Brazil", "Brasilia", "Rio de Janeiro"),
    _capital("Egypt", "Cairo", "Alexandria"),
    _capital("India", "New Delhi", "Mumbai"),
    _capital("China", "Beijing", "Shanghai"),
    _capital("Russia", "Moscow", "Saint Petersburg"),
    _capital("the United Kingdom", "London", "Manchester"),
    _capital("Portugal", "Lisbon", "Porto"),
    _capital("the Netherlands", "Amsterdam", "Rotterdam"),
    _capital("Kenya", "Nairobi", "Mombasa"),
    _capital("Argentina", "Buenos Aires", "Cordoba"),
    _capital("Turkey", "Ankara", "Istanbul"),
    _capital("Switzerland", "Bern", "Zurich"),
    _capital("Norway", "Oslo", "Bergen"),
    ("What is the chemical symbol for gold?",
     Fact("The chemical symbol for gold is Au.", "The chemical symbol for gold is Ag.", "Au")),
    ("What is the chemical formula of water?",
     Fact("The chemical formula of water is H2O.", "The chemical formula of water is HO2.", "H2O")),
    ("What is the boiling point of water at sea level in Celsius?",
     Fact("Water boils at 100 degrees Celsius at sea level.",
          "Water boils at 90 degrees Celsius at sea level.", "100")),
    ("How many planets are in the solar system?",
     Fact("There are 8 planets in the solar system.", "There are 9 planets in the solar system.", "8")),
    ("Which planet is known as the Red Planet?",
     Fact("Mars is known as the Red Planet.", "Jupiter is known as the Red Planet.", "Mars")),
    ("What is the largest planet in the solar system?",
     Fact("Jupiter is the largest planet in the solar system.",
          "Saturn is the largest planet in the solar system.", "Jupiter")),
    ("What gas do plants absorb from the air?",
     Fact("Plants absorb carbon dioxide from the air.", "Plants absorb oxygen from the air.", "carbon dioxide")),
    ("How many bones are in the adult human body?",
     Fact("The adult human body has 206 bones.", "The adult human body has 208 bones.", "206")),
    ("What is the speed of light in vacuum in km/s?",
     Fact("The speed of light in vacuum is about 299,792 km/s.",
          "The speed of light in vacuum is about 289,792 km/s.", "299,792")),
    ("What is the atomic number of carbon?",
     Fact("The atomic number of carbon is 6.", "The atomic number of carbon is 8.", "6")),
    ("Who developed the theory of relativity?",
     Fact("Albert Einstein developed the theory of relativity.",
          "Isaac Newton developed the theory of relativity.", "Einstein")),
    ("What is the hardest natural substance?",
     Fact("Diamond is the hardest natural substance.", "Quartz is the hardest natural substance.", "Diamond")),
    ("How many continents are there?",
     Fact("There are 7 continents.", "There are 6 continents.", "7")),
    ("What is the largest ocean on Earth?",
     Fact("The Pacific Ocean is the largest ocean on Earth.",
          "The Atlantic Ocean is the largest ocean on Earth.", "Pacific")),
    ("What is the longest river in Africa?",
     Fact("The Nile is the longest river in Africa.", "The Congo is the longest river in Africa.", "Nile")),
    ("Who wrote Romeo and Juliet?",
     Fact("William Shakespeare wrote Romeo and Juliet.", "Christopher Marlowe wrote Romeo and Juliet.",
          "Shakespeare")),
    ("How many centimeters are in a meter?",
     Fact("There are 100 centimeters in a meter.", "There are 10 centimeters in a meter.", "100")),
    ("How many meters are in a kilometer?",
     Fact("There are 1000 meters in a kilometer.", "There are 100 meters in a kilometer.", "1000")),
    ("How many grams are in a kilogram?",
     Fact("There are 1000 grams in a kilogram.", "There are 100 grams in a kilogram.", "1000")),
    ("How many milliliters are in a liter?",
     Fact("There are 1000 milliliters in a liter.", "There are 100 milliliters in a liter.", "1000")),
    ("How many seconds are in an hour?",
     Fact("There are 3600 seconds in an hour.", "There are 3000 seconds in an hour.", "3600")),
    ("How many minutes are in a day?",
     Fact("There are 1440 minutes in a day.", "There are 1400 minutes in a day.", "1440")),
    ("How many hours are in a week?",
     Fact("There are 168 hours in a week.", "There are 148 hours in a week.", "168")),
    ("How many days are in a leap year?",
     Fact("A leap year has 366 days.", "A leap year has 365 days.", "366")),
    ("How many inches are in a foot?",
     Fact("There are 12 inches in a foot.", "There are 10 inches in a foot.", "12")),
    ("How many feet are in a mile?",
     Fact("There are 5280 feet in a mile.", "There are 5380 feet in a mile.", "5280")),
    ("How many ounces are in a pound?",
     Fact("There are 16 ounces in a pound.", "There are 12 ounces in a pound.", "16")),
    ("How many centimeters are in an inch?",
     Fact("One inch is 2.54 centimeters.", "One inch is 2.45 centimeters.", "2.54")),
    ("How many kilometers are in a mile?",
     Fact("One mile is about 1.609 kilometers.", "One mile is about 1.906 kilometers.", "1.609")),
    ("What is 0 degrees Celsius in Fahrenheit?",
     Fact("0 degrees Celsius is 32 degrees Fahrenheit.", "0 degrees Celsius is 23 degrees Fahrenheit.", "32")),
    ("How many bytes are in a kibibyte?",
     Fact("There are 1024 bytes in a kibibyte.", "There are 1000 bytes in a kibibyte.", "1024")),
])

ARITHMETIC = re.compile(
    r"^(?:what is|what's|calculate|compute) (-?\d+(?:\.\d+)?) "
    r"(\+|plus|-|minus|\*|x|times|multiplied by|/|divided by) (-?\d+(?:\.\d+)?)$")
OPERATORS = {"+": "+", "plus": "+", "-": "-", "minus": "-", "*": "*", "x": "*", "times": "*",
             "multiplied by": "*", "/": "/", "divided by": "/"}

FIRST_NAMES = ("Ada", "Boris", "Chen", "Dalia", "Emeka", "Freya", "Goran", "Hana", "Ivo", "Jun")
LAST_NAMES = ("Lovelace", "Novak", "Wei", "Haddad", "Okafor", "Berg", "Petrov", "Sato", "Horvat", "Park")
ORDER_STATUSES = ("pending", "paid", "shipped", "delivered")
CONDITIONS = ("sunny", "cloudy", "rain", "snow", "windy")
OTHER_CITIES = ("Oslo", "Lima", "Perth", "Quito", "Riga")
ACKNOWLEDGEMENTS = (
    "Understood. I have noted that (ref {ref}).",
    "Thanks, I have recorded this in memory (ref {ref}).",
    "Got it. I will keep that in mind (ref {ref}).",
    "Acknowledged; this is saved to working memory (ref {ref}).",
)


def normalise(message: str) -> str:
    """Lower-case, without ``[sim:...]`` directives, collapsed whitespace and
    trailing punctuation: the key every lookup of the fake model uses."""
    text = re.sub(r"\[sim:[^\]]*\]", " ", message).lower()
    return " ".join(text.split()).strip(" ?!.")


def count_tokens(text: str) -> int:
    """Word-and-punctuation token count: stable and cheap."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(round(value, 6))


def _user(n: int, h: int, wrong: bool) -> dict[str, Any]:
    first, last = FIRST_NAMES[h % 10], LAST_NAMES[(h // 10) % 10]
    return {"id": n + 1 if wrong else n, "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}{n}@example.com",
            "active": n % 3 != 0, "roles": ["admin", "user"] if n % 5 == 0 else ["user"]}


def _order(n: int, h: int, wrong: bool) -> dict[str, Any]:
    status = ORDER_STATUSES[(h + (1 if wrong else 0)) % len(ORDER_STATUSES)]
    return {"order_id": n, "status": status, "items": 1 + h % 5,
            "total": round(5 + (h % 20000) / 100, 2), "currency": "EUR"}


def _weather(city: str, h: int, wrong: bool) -> dict[str, Any]:
    name = city.title()
    if wrong:
        name = next(c for c in OTHER_CITIES[h % 5:] + OTHER_CITIES if c.lower() != city)
    return {"city": name, "temperature_c": -5 + h % 40, "condition": CONDITIONS[h % 5],
            "humidity": 30 + h % 60, "wind_kph": h % 45}


def _items(n: int, h: int, wrong: bool) -> dict[str, Any]:
    count = n + 1 if wrong else n
    return {"count": count, "items": [{"id": i, "name": f"item-{i}"} for i in range(1, count + 1)]}


def _service_config(name: str, h: int, wrong: bool) -> dict[str, Any]:
    return {"service": name, "replicas": 1 + h % 5, "port": 8000 + h % 1000 + (1 if wrong else 0),
            "debug": False, "log_level": "info"}


# (pattern on the normalised question, builder(parameter, hash int, wrong)).
JSON_TEMPLATES: tuple[tuple[re.Pattern[str], Any], ...] = (
    (re.compile(r"^return json for the user with id (\d{1,9})$"), lambda p, h, w: _user(int(p), h, w)),
    (re.compile(r"^return json for the status of order (\d{1,9})$"), lambda p, h, w: _order(int(p), h, w)),
    (re.compile(r"^return json for the weather in ([a-z][a-z .'-]{0,40})$"), _weather),
    (re.compile(r"^return json for a list of ([1-9]|1\d|20) items$"), lambda p, h, w: _items(int(p), h, w)),
    (re.compile(r"^return json for the config of service ([a-z0-9][a-z0-9-]{0,40})$"), _service_config),
)


@dataclasses.dataclass(frozen=True)
class ToolUse:
    tool: str
    input: dict[str, Any]
    output: str


@dataclasses.dataclass(frozen=True)
class Reply:
    kind: str  # fact | arithmetic | json | ack
    text: str
    tool: ToolUse | None


@dataclasses.dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cache_hit_tokens: int


class FakeModel:
    """Deterministic answers: the same message gives the same text, tool
    calls and token counts on every process (sha256, never ``hash()``)."""

    def __init__(self, wrong_rate: float = 0.0, cache_ratio: float = 0.8) -> None:
        self.wrong_rate = wrong_rate
        self.cache_ratio = cache_ratio
        self._facts = {normalise(q): fact for q, fact in FACTS.items()}

    def is_wrong(self, question: str) -> bool:
        """Stable choice of the questions this release answers wrong."""
        return int(sha256_hex(question)[:8], 16) / 2 ** 32 < self.wrong_rate

    def reply(self, message: str, direct: bool = False) -> Reply:
        question = normalise(message)
        wrong = self.is_wrong(question)
        fact = self._facts.get(question)
        if fact:
            return Reply("fact", fact.wrong if wrong else fact.answer, None)
        match = ARITHMETIC.match(question)
        if match:
            return self._arithmetic(match, wrong, direct)
        digest = int(sha256_hex(question)[:8], 16)
        for pattern, build in JSON_TEMPLATES:
            match = pattern.match(question)
            if match:
                obj = build(match.group(1), digest, wrong)
                return Reply("json", json.dumps(obj, sort_keys=True), None)
        ack = ACKNOWLEDGEMENTS[digest % len(ACKNOWLEDGEMENTS)]
        return Reply("ack", ack.format(ref=sha256_hex(question)[:8]), None)

    @staticmethod
    def _arithmetic(match: re.Match[str], wrong: bool, direct: bool) -> Reply:
        a_text, op_word, b_text = match.groups()
        op = OPERATORS[op_word]
        a, b = float(a_text), float(b_text)
        expression = f"{_num(a)} {op} {_num(b)}"
        if op == "/" and b == 0:
            output, text = "error: division by zero", "I cannot divide by zero."
        else:
            result = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}[op]
            output = _num(result)
            text = f"The answer is {_num(result + 1) if wrong else output}."
        tool = None if direct else ToolUse("calculator", {"expression": expression}, output)
        return Reply("arithmetic", text, tool)

    def usages(self, reply: Reply, message: str, history_tokens: int, media_count: int) -> list[Usage]:
        """One usage per model call: a tool turn makes two calls."""
        prompt = SYSTEM_PROMPT_TOKENS + history_tokens + count_tokens(message) + MEDIA_TOKENS * media_count
        calls: list[tuple[int, int]] = []
        if reply.tool:
            call_tokens = count_tokens(reply.tool.tool + json.dumps(reply.tool.input))
            calls.append((prompt, call_tokens))
            prompt += call_tokens + count_tokens(reply.tool.output)
        calls.append((prompt, count_tokens(reply.text)))
        return [Usage(i, o, math.floor(i * self.cache_ratio)) for i, o in calls]


def text_chunks(text: str, most: int = 8) -> list[str]:
    """Split an answer into at most ``most`` deltas that join back to it."""
    words = re.findall(r"\S+\s*", text) or [text]
    size = math.ceil(len(words) / most)
    return ["".join(words[i:i + size]) for i in range(0, len(words), size)]


# --------------------------------------------------------------------------
# The brain
# --------------------------------------------------------------------------


class MigrationError(RuntimeError):
    """A migration's SQL failed; the brain is left at the previous one."""


@dataclasses.dataclass
class TurnRecord:
    task_id: str
    message: str
    reply: Reply
    status: str  # completed | failed
    final_text: str
    duration_ms: int
    usages: list[Usage]
    steps: list[dict[str, Any]]


class Brain:
    """The SQLite brain in WAL mode. Every operation opens its own short-lived
    connection (threads never share one). Write transactions (BEGIN
    IMMEDIATE) queue on a lock in this process, where SQLite's busy handler
    would poll with sleeps that skew turn latency; the busy timeout still
    covers other processes (a snapshot, seed.py)."""

    def __init__(self, path: str, migrations_table: str) -> None:
        self.path = path
        self.migrations_table = migrations_table
        self.applied: tuple[str, ...] = ()
        self._write_lock = threading.Lock()

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)  # timeout = busy_timeout
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self.connect()
        try:
            with self._write_lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        finally:
            conn.close()

    # -- schema --------------------------------------------------------------

    def prepare(self) -> None:
        """Create the file and folder if needed, switch to WAL and read the
        applied migrations (the table appears with the first one)."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        conn = self.connect()
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                  (self.migrations_table,)).fetchone()
            rows = conn.execute(f"SELECT id FROM {self.migrations_table} ORDER BY rowid").fetchall() if exists else []
        finally:
            conn.close()
        self.applied = tuple(r[0] for r in rows)

    def unknown_migrations(self, known: tuple[str, ...]) -> list[str]:
        return [m for m in self.applied if m not in known]

    def pending_migrations(self, known: tuple[str, ...]) -> list[str]:
        return [m for m in known if m not in self.applied]

    def apply_migration(self, migration_id: str) -> None:
        script = (f"BEGIN IMMEDIATE;\nCREATE TABLE IF NOT EXISTS {self.migrations_table} "
                  f"(id TEXT PRIMARY KEY, applied_at TEXT NOT NULL);\n{MIGRATIONS[migration_id]}\n"
                  f"INSERT INTO {self.migrations_table}(id, applied_at) "
                  f"VALUES ('{migration_id}', '{utc_now()}');\nCOMMIT;")
        conn = self.connect()
        try:
            conn.executescript(script)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise MigrationError(f"migration {migration_id} failed: {exc}") from exc
        finally:
            conn.close()
        self.applied += (migration_id,)

    def data_tables(self, conn: sqlite3.Connection) -> list[str]:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                            "AND name NOT LIKE 'sqlite_%' AND name != ? ORDER BY name",
                            (self.migrations_table,)).fetchall()
        return [r[0] for r in rows]

    @staticmethod
    def columns(conn: sqlite3.Connection, table: str) -> list[str]:
        return [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]

    def checkpoint(self) -> tuple[int, int, int]:
        conn = self.connect()
        try:
            return conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()

    # -- turns ---------------------------------------------------------------

    def begin_turn(self, task_id: str, message: str) -> int:
        """Mark the thread running; return the history tokens it carries."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO conversations(task_id, status, started_at, turns, last_message) "
                "VALUES (?, 'running', ?, 1, ?) ON CONFLICT(task_id) DO UPDATE SET "
                "status = 'running', finished_at = NULL, turns = turns + 1, "
                "last_message = excluded.last_message",
                (task_id, utc_now(), message))
            return conn.execute("SELECT history_tokens FROM conversations WHERE task_id = ?",
                                (task_id,)).fetchone()[0]

    def finish_turn(self, rec: TurnRecord) -> None:
        now, ok = utc_now(), rec.status == "completed"
        last = rec.usages[-1] if rec.usages else Usage(0, 0, 0)
        history = count_tokens(rec.message) + count_tokens(rec.final_text)
        with self.transaction() as conn:
            conn.execute("UPDATE conversations SET status = ?, finished_at = ?, final_text = ?, "
                         "history_tokens = history_tokens + ? WHERE task_id = ?",
                         (rec.status, now, rec.final_text, history, rec.task_id))
            episode = conn.execute("INSERT INTO episodes(task_id, created_at, user_message, answer, outcome) "
                                   "VALUES (?, ?, ?, ?, ?)",
                                   (rec.task_id, now, rec.message, rec.final_text, rec.status)).lastrowid
            conn.execute("INSERT INTO trajectories(task_id, created_at, steps) VALUES (?, ?, ?)",
                         (rec.task_id, now, json.dumps(rec.steps)))
            conn.execute("INSERT INTO learning_signals(created_at, kind, task_id, value) "
                         "VALUES (?, 'turn_outcome', ?, ?)", (now, rec.task_id, 1.0 if ok else 0.0))
            conn.execute("INSERT INTO observability_events(created_at, kind, task_id, payload) "
                         "VALUES (?, 'turn', ?, ?)",
                         (now, rec.task_id, json.dumps({
                             "status": rec.status, "duration_ms": rec.duration_ms,
                             "input_tokens": last.input_tokens, "output_tokens": last.output_tokens,
                             "cache_hit_tokens": last.cache_hit_tokens})))
            # What later migrations add to a turn, once the brain has them.
            if "0003_feedback" in self.applied:
                conn.execute("UPDATE episodes SET importance = ? WHERE id = ?",
                             (0.8 if rec.reply.tool else 0.3, episode))
                conn.execute("INSERT INTO feedback(task_id, created_at, rating, comment) "
                             "VALUES (?, ?, ?, 'implicit')", (rec.task_id, now, 1 if ok else -1))
            if "0004_v3_threads" in self.applied:
                conn.execute("INSERT INTO threads(task_id, created_at, updated_at, turns) "
                             "VALUES (?, ?, ?, 1) ON CONFLICT(task_id) DO UPDATE SET "
                             "updated_at = excluded.updated_at, turns = turns + 1",
                             (rec.task_id, now, now))
            if "0005_turn_tags" in self.applied:
                conn.execute("UPDATE conversations SET tags = ? WHERE task_id = ?",
                             (json.dumps([rec.reply.kind]), rec.task_id))

    def background_write(self, tick: int) -> None:
        now = utc_now()
        with self.transaction() as conn:
            conn.execute("INSERT INTO learning_signals(created_at, kind, task_id, value) "
                         "VALUES (?, 'background', NULL, ?)", (now, (tick % 100) / 100))
            conn.execute("INSERT INTO knowledge_store(key, value, source, updated_at) "
                         "VALUES (?, ?, 'background', ?) ON CONFLICT(key) DO UPDATE SET "
                         "value = excluded.value, updated_at = excluded.updated_at",
                         (f"learned:{tick % 32}", f"consolidated at tick {tick}", now))

    # -- logical backup --------------------------------------------------------

    def export_chunks(self) -> Iterator[bytes]:
        """The memory bundle as JSON, streamed table by table from one read
        transaction (a consistent view while turns keep writing)."""
        conn = self.connect()
        try:
            conn.execute("BEGIN DEFERRED")
            head = {"format": "engine-memory/1", "exported_at": utc_now()}
            yield (json.dumps(head)[:-1] + ', "tables": {').encode()
            for t_index, table in enumerate(self.data_tables(conn)):
                cursor = conn.execute(f'SELECT * FROM "{table}" ORDER BY rowid')
                names = [d[0] for d in cursor.description]
                yield (", " if t_index else "").encode() + json.dumps(table).encode() + b": ["
                first = True
                while rows := cursor.fetchmany(500):
                    body = ", ".join(json.dumps(dict(zip(names, row))) for row in rows)
                    yield (body if first else ", " + body).encode()
                    first = False
                yield b"]"
            yield b"}}"
            conn.execute("COMMIT")
        finally:
            conn.close()

    def import_bundle(self, tables: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, int], list[str]]:
        """INSERT OR IGNORE every row whose table exists here (columns this
        brain lacks are dropped); returns counts per table and skipped tables."""
        imported: dict[str, int] = {}
        skipped: list[str] = []
        with self.transaction() as conn:
            existing = set(self.data_tables(conn))
            for table, rows in tables.items():
                if table not in existing:
                    skipped.append(table)
                    continue
                columns = self.columns(conn, table)
                count = 0
                for row in rows:
                    names = [c for c in columns if c in row]
                    if not names:
                        continue
                    quoted = ", ".join(f'"{c}"' for c in names)
                    cur = conn.execute(
                        f'INSERT OR IGNORE INTO "{table}" ({quoted}) VALUES ({", ".join("?" * len(names))})',
                        [row[c] for c in names])
                    count += cur.rowcount
                imported[table] = count
        return imported, skipped


# --------------------------------------------------------------------------
# Events, turns and the background job
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Event:
    id: int  # ms timestamp, strictly increasing across the process
    type: str
    data: dict[str, Any]

    def frame(self) -> bytes:
        return f"event: {self.type}\ndata: {json.dumps(self.data)}\nid: {self.id}\n\n".encode()


class EventBuffer:
    """The bounded global replay buffer. Ids are ms timestamps made strictly
    increasing, so ``after=<id>`` resumes exactly after an event."""

    def __init__(self, capacity: int = REPLAY_CAPACITY) -> None:
        self._events: collections.deque[Event] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._last = 0

    def append(self, type_: str, data: dict[str, Any]) -> Event:
        with self._lock:
            self._last = max(int(time.time() * 1000), self._last + 1)
            event = Event(self._last, type_, data)
            self._events.append(event)
            return event

    def after(self, after_ms: int) -> list[Event]:
        with self._lock:
            return [e for e in self._events if e.id > after_ms]


class DrainingError(RuntimeError):
    """A turn was refused because the Engine is draining."""


_END = object()


class Turn:
    """One agent turn: its request, and the queue its live subscriber reads."""

    def __init__(self, task_id: str, message: str, media: list[Any], direct: bool, request_id: str) -> None:
        self.task_id = task_id
        self.message = message
        self.media = media
        self.direct = direct
        self.request_id = request_id
        self.events: queue.Queue[Any] = queue.Queue()

    def stream(self) -> Iterator[Event]:
        while (item := self.events.get()) is not _END:
            yield item


class TurnManager:
    """Runs each turn in its own worker thread, independent of the request
    that started it, and counts turns in flight for the drain."""

    def __init__(self, config: Config, brain: Brain, model: FakeModel, buffer: EventBuffer,
                 log: JsonLog) -> None:
        self.config = config
        self.brain = brain
        self.model = model
        self.buffer = buffer
        self.log = log
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._closed = False

    def start(self, task_id: str, message: str, media: list[Any], direct: bool, request_id: str) -> Turn:
        with self._cond:
            if self._closed:
                raise DrainingError("the engine is draining")
            self._in_flight += 1
        turn = Turn(task_id, message, media, direct, request_id)
        threading.Thread(target=self._run, args=(turn,), name=f"turn-{task_id}", daemon=True).start()
        return turn

    def close(self) -> int:
        """Refuse new turns from now on; return how many are in flight."""
        with self._cond:
            self._closed = True
            return self._in_flight

    def wait_idle(self) -> None:
        with self._cond:
            while self._in_flight:
                self._cond.wait(0.5)

    def _draw(self, message: str) -> tuple[float, bool]:
        """Duration (s) and failure of a turn, from the seeded generator."""
        with self._rng_lock:
            base = self._rng.lognormvariate(0.0, LATENCY_SIGMA)
            slow = self._rng.random() < self.config.slow_share
            failed = self._rng.random() < self.config.error_rate
        override = SLEEP_DIRECTIVE.search(message)
        if override:
            return int(override.group(1)) / 1000, failed
        ms = self.config.latency_ms * base * (self.config.slow_factor if slow else 1.0)
        return ms / 1000, failed

    def _emit(self, turn: Turn, type_: str, data: dict[str, Any]) -> Event:
        event = self.buffer.append(type_, data)
        turn.events.put(event)
        return event

    def _run(self, turn: Turn) -> None:
        ids = {"request_id": turn.request_id, "task_id": turn.task_id}
        started = time.monotonic()
        try:
            self.log.info("engine.execute", "Starting execution", direct=turn.direct,
                          media=len(turn.media), **ids)
            if self.config.turn_warning:
                self.log.warning("engine.execute",
                                 self.config.turn_warning.replace("{task_id}", turn.task_id), **ids)
            self._play(turn, started)
        except Exception as exc:  # a bug or a brain failure: the turn fails loudly
            self.log.error("engine.execute", f"Turn failed: {exc.__class__.__name__}: {exc}",
                           code="INTERNAL_ERROR", **ids)
            self._emit(turn, "error", {"error": "INTERNAL_ERROR", "message": "the turn failed"})
        finally:
            turn.events.put(_END)
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def _play(self, turn: Turn, started: float) -> None:
        ids = {"request_id": turn.request_id, "task_id": turn.task_id}
        history = self.brain.begin_turn(turn.task_id, turn.message)  # "running" before "started"
        self._emit(turn, "thread_lifecycle", {"phase": "started", "task_id": turn.task_id})
        duration, failed = self._draw(turn.message)
        reply = self.model.reply(turn.message, turn.direct)
        usages = self.model.usages(reply, turn.message, history, len(turn.media))

        # (fraction of the duration, event type, data), in order.
        plan: list[tuple[float, str, dict[str, Any]]] = []
        text_from = 0.3
        if reply.tool:
            plan += [(0.25, "tool_call", {"tool": reply.tool.tool, "input": reply.tool.input}),
                     (0.25, "usage", dataclasses.asdict(usages[0])),
                     (0.35, "tool_result", {"output": reply.tool.output})]
            text_from = 0.45
        if not failed:
            chunks = text_chunks(reply.text)
            plan += [(text_from + (1 - text_from) * (i + 1) / len(chunks), "text_delta", {"text": c})
                     for i, c in enumerate(chunks)]
            plan.append((1.0, "usage", dataclasses.asdict(usages[-1])))

        # The final event goes out only once the brain holds the turn.
        final: tuple[str, dict[str, Any]] = (
            ("error", {"error": "LLM_PROVIDER_ERROR", "message": PROVIDER_FAILURE}) if failed
            else ("thread_lifecycle", {"phase": "completed", "task_id": turn.task_id}))
        beat = self.config.heartbeat_seconds
        next_beat = started + beat if beat > 0 else math.inf
        for fraction, type_, data in plan + [(1.0, "", {})]:
            due = started + fraction * duration
            while (now := time.monotonic()) < due:
                if next_beat <= due:
                    time.sleep(max(0.0, next_beat - now))
                    self._emit(turn, "heartbeat", {})
                    next_beat += beat
                else:
                    time.sleep(due - now)
            if type_:
                self._emit(turn, type_, data)

        elapsed = time.monotonic() - started
        self.brain.finish_turn(TurnRecord(
            turn.task_id, turn.message, reply, "failed" if failed else "completed",
            "" if failed else reply.text, int(elapsed * 1000), usages[:-1] if failed else usages,
            [{"type": t, "data": d} for _at, t, d in plan + [(1.0, *final)]]))
        self._emit(turn, *final)
        if failed:
            self.log.error("engine.execute", f"Execution failed: {PROVIDER_FAILURE}",
                           code="LLM_PROVIDER_ERROR", **ids)
            return
        if self.config.completion_log == "duration_ms":
            self.log.info("engine.execute", "Execution completed", duration_ms=int(elapsed * 1000), **ids)
        elif self.config.completion_log == "elapsed_s":
            self.log.info("engine.execute", "Turn finished", elapsed_s=round(elapsed, 3), **ids)


class BackgroundLearner:
    """The learning job that writes to the brain with no traffic."""

    def __init__(self, brain: Brain, interval: float, log: JsonLog) -> None:
        self.brain = brain
        self.interval = interval
        self.log = log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="background-learner", daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        tick = 0
        while not self._stop.wait(self.interval):
            tick += 1
            try:
                self.brain.background_write(tick)
            except sqlite3.Error as exc:
                self.log.error("engine.learning", f"Background write failed: {exc}", code="DATABASE_ERROR")


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------


class RequestError(Exception):
    """An error answer: HTTP status, flat error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


ROUTES: dict[str, dict[str, str]] = {
    "/health": {"GET": "health"},
    "/execute": {"POST": "execute"},
    "/execute/replay": {"GET": "replay"},
    "/memory/export": {"GET": "export"},
    "/memory/import": {"POST": "import"},
}


class EngineHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a turn's stream never holds the process up
    request_queue_size = 128  # socketserver's 5 resets connections under a burst

    def __init__(self, address: tuple[str, int], engine: Engine) -> None:
        self.engine = engine
        super().__init__(address, EngineHandler)


class EngineHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EngineHTTPServer

    def version_string(self) -> str:
        return "Engine"  # the running version is reported nowhere

    # -- plumbing --------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Access lines are not part of the Engine's log; stay quiet."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (bad request line, unknown method) as flat JSON."""
        self.close_connection = True
        self._json(code, {"error": "INVALID_REQUEST" if code < 500 else "NOT_IMPLEMENTED",
                          "message": message or self.responses.get(code, ("error",))[0]})

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, content_type: str, chunks: Iterable[bytes]) -> None:
        """A 200 whose body is sent chunk by chunk as ``chunks`` yields (HTTP/1.1
        chunked encoding: clients see each SSE event at once); the connection
        closes after it."""
        self._streaming = True
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        for chunk in chunks:
            if chunk:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")
        self.server.engine.linger(self.connection)

    def _dispatch(self, method: str) -> None:
        # One handler serves every request of a keep-alive connection.
        self.request_id = uuid.uuid4().hex
        self._body_read = self._streaming = False
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        try:
            methods = ROUTES.get(url.path)
            if methods is None:
                raise RequestError(404, "NOT_FOUND", f"no such endpoint: {url.path}")
            if method not in methods:
                raise RequestError(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed on {url.path}")
            name = methods[method]
            if name != "health":
                self._authenticate()
            getattr(self, f"_handle_{name}")()
        except RequestError as err:
            self._discard_body()
            self._json(err.status, {"error": err.code, "message": err.message})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug: answer 500 if still possible, log it
            self.server.engine.log.error("engine.http", f"Unhandled {exc.__class__.__name__}: {exc}",
                                         code="INTERNAL_ERROR", request_id=self.request_id)
            self.close_connection = True
            if not self._streaming:
                self._json(500, {"error": "INTERNAL_ERROR", "message": "internal error"})

    def _authenticate(self) -> None:
        key = self.headers.get("X-Engine-Key", "").encode()
        config = self.server.engine.config
        accepted = False
        if config.key_hash:
            accepted |= hmac.compare_digest(hashlib.sha256(key).hexdigest().encode(), config.key_hash.encode())
        if config.api_key:
            accepted |= hmac.compare_digest(key, config.api_key.encode())
        if not accepted:
            raise RequestError(401, "INVALID_KEY", "missing or invalid X-Engine-Key")

    def _content_length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise RequestError(411, "INVALID_REQUEST", "chunked bodies are not supported: send Content-Length")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise RequestError(400, "INVALID_REQUEST", "invalid Content-Length") from None
        if length < 0:
            raise RequestError(400, "INVALID_REQUEST", "invalid Content-Length")
        return length

    def _discard_body(self) -> None:
        """Drop an unread body so the keep-alive connection stays in sync."""
        if self._body_read or self.command not in ("POST", "PUT", "PATCH"):
            return
        try:
            length = self._content_length()
        except RequestError:
            length = -1
        if 0 <= length <= MAX_EXECUTE_BODY:
            self.rfile.read(length)
        else:
            self.close_connection = True
        self._body_read = True

    def _read_json(self, limit: int | None = None) -> dict[str, Any]:
        length = self._content_length()
        if limit is not None and length > limit:
            raise RequestError(413, "REQUEST_TOO_LARGE", f"body larger than {limit} bytes")
        raw = self.rfile.read(length) if length else b""
        self._body_read = True
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError):
            raise RequestError(400, "INVALID_REQUEST", "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError(400, "INVALID_REQUEST", "body must be a JSON object")
        return body

    # -- endpoints -------------------------------------------------------------

    def _handle_health(self) -> None:
        status, body = self.server.engine.health()
        self._json(status, body)

    def _handle_execute(self) -> None:
        engine = self.server.engine
        engine.check_available(writes=True)
        body = self._read_json(MAX_EXECUTE_BODY)
        field = engine.config.request_field
        message = body.get(field)
        if message is None:
            if field != "message" and "message" in body:
                raise RequestError(400, "INVALID_REQUEST",
                                   f"field 'message' was renamed to '{field}'; '{field}' is required")
            raise RequestError(400, "INVALID_REQUEST", f"'{field}' is required")
        if not isinstance(message, str) or not message.strip():
            raise RequestError(400, "INVALID_REQUEST", f"'{field}' must be a non-empty string")
        task_id = body.get("task_id")
        if not isinstance(task_id, str) or not task_id.strip():
            raise RequestError(400, "INVALID_REQUEST", "'task_id' is required and must be a non-empty string")
        media = body.get("media", [])
        if not isinstance(media, list):
            raise RequestError(400, "INVALID_REQUEST", "'media' must be a list")
        direct = body.get("direct", False)
        if not isinstance(direct, bool):
            raise RequestError(400, "INVALID_REQUEST", "'direct' must be a boolean")
        if count_tokens(message) > MAX_MESSAGE_TOKENS:
            raise RequestError(400, "CONTEXT_OVERFLOW", f"'{field}' exceeds {MAX_MESSAGE_TOKENS} tokens")
        try:
            turn = engine.turns.start(task_id, message, media, direct, self.request_id)
        except DrainingError:
            raise RequestError(503, "DRAINING", "the engine is draining; retry on another engine") from None
        with engine.stream_opened():
            try:
                self._stream("text/event-stream", (event.frame() for event in turn.stream()))
            except (BrokenPipeError, ConnectionResetError):
                engine.log.info("engine.http", "Client disconnected; the turn goes on",
                                request_id=self.request_id, task_id=task_id)

    def _handle_replay(self) -> None:
        self.server.engine.check_available(writes=False)
        raw = self.query.get("after", ["0"])[0]
        try:
            after = int(raw)
        except ValueError:
            raise RequestError(400, "INVALID_REQUEST", "'after' must be an integer (ms timestamp)") from None
        events = self.server.engine.buffer.after(after)
        self._stream("text/event-stream", (event.frame() for event in events))

    def _handle_export(self) -> None:
        self.server.engine.check_available(writes=False)
        with contextlib.closing(self.server.engine.brain.export_chunks()) as chunks:
            first = next(chunks)  # opens the read transaction before the 200 goes out
            self._stream("application/json", itertools.chain([first], chunks))

    def _handle_import(self) -> None:
        engine = self.server.engine
        engine.check_available(writes=True)
        body = self._read_json()
        if body.get("format") != "engine-memory/1":
            raise RequestError(400, "INVALID_REQUEST", "'format' must be 'engine-memory/1'")
        tables = body.get("tables")
        if not isinstance(tables, dict) or not all(
                isinstance(rows, list) and all(isinstance(r, dict) for r in rows) for rows in tables.values()):
            raise RequestError(400, "INVALID_REQUEST", "'tables' must map table names to lists of row objects")
        try:
            imported, skipped = engine.brain.import_bundle(tables)
        except (sqlite3.ProgrammingError, sqlite3.InterfaceError) as exc:
            raise RequestError(400, "INVALID_REQUEST", f"a row of 'tables' cannot be stored: {exc}") from None
        except sqlite3.Error as exc:
            engine.log.error("engine.memory", f"Import failed: {exc}", code="DATABASE_ERROR",
                             request_id=self.request_id)
            raise RequestError(500, "DATABASE_ERROR", f"import failed: {exc}") from None
        engine.log.info("engine.memory", "Memory imported", request_id=self.request_id,
                        imported=imported, skipped=skipped)
        self._json(200, {"imported": imported, "skipped": skipped})


# --------------------------------------------------------------------------
# The Engine: boot, serve, drain
# --------------------------------------------------------------------------


class Engine:
    """Owns the phases: starting -> migrating -> starting -> ready ->
    draining, or ``error`` when the brain needs a newer release."""

    def __init__(self, config: Config, log: JsonLog) -> None:
        self.config = config
        self.log = log
        self.started = time.monotonic()
        self.brain = Brain(config.db_path, config.migrations_table)
        self.buffer = EventBuffer()
        self.turns = TurnManager(config, self.brain, FakeModel(config.wrong_rate, config.cache_ratio),
                                 self.buffer, log)
        self.learner = BackgroundLearner(self.brain, config.background_write_seconds, log)
        self.shutdown = threading.Event()
        self._signal = ""
        self._phase = "starting"
        self._lock = threading.Lock()
        self._streams = 0
        self._migration_error = ""

    # -- state -----------------------------------------------------------------

    @property
    def phase(self) -> str:
        with self._lock:
            return self._phase

    def _set_phase(self, phase: str) -> None:
        with self._lock:
            self._phase = phase

    def health(self) -> tuple[int, dict[str, Any]]:
        phase, broken = self.phase, self.config.broken_subsystem
        subsystems = {name: "ok" for name in SUBSYSTEMS}
        if broken:
            subsystems[broken] = "error"
        if phase == "error":
            subsystems["database"] = "error"
        status = "ok" if phase == "ready" else phase
        if phase == "draining" and self.config.drain_health == "ok":
            status = "ok"
        if broken and status == "ok":
            status = "error"
        healthy = status == "ok" or (status == "draining" and self.config.drain_health == "200" and not broken)
        body = {"status": status, "uptime_seconds": round(time.monotonic() - self.started, 3),
                "subsystems": subsystems}
        return (200 if healthy else 503), body

    def check_available(self, writes: bool) -> None:
        """Raise the 503 an authenticated endpoint answers in this phase."""
        phase = self.phase
        if phase == "error":
            raise RequestError(503, "MIGRATION_REQUIRED", self._migration_error)
        if phase in ("starting", "migrating"):
            raise RequestError(503, "SERVICE_UNAVAILABLE", f"the engine is {phase}")
        if phase == "draining" and writes:
            raise RequestError(503, "DRAINING", "the engine is draining; retry on another engine")

    @contextlib.contextmanager
    def stream_opened(self) -> Iterator[None]:
        with self._lock:
            self._streams += 1
        try:
            yield
        finally:
            with self._lock:
                self._streams -= 1

    def linger(self, connection: socket.socket) -> None:
        """Count a stream as open until its client has closed the connection (at most STREAM_FLUSH_GRACE_S).

        The stream's last bytes may still be on their way through a proxy
        (Docker's port proxy among them) when the server has written them;
        a proxy torn down with the container before it passed them on loses
        them, and the client sees a turn that completed as cut. So a drain
        waits for the clients to close, as a graceful server does. The wait
        runs on a copy of the socket, off the request's thread: a client
        never waits for it.
        """
        try:
            copy = connection.dup()
            copy.shutdown(socket.SHUT_WR)
        except OSError:
            return
        with self._lock:
            self._streams += 1

        def wait_for_close() -> None:
            deadline = time.monotonic() + STREAM_FLUSH_GRACE_S
            try:
                while (left := deadline - time.monotonic()) > 0:
                    readable = select.select([copy], [], [], left)[0]
                    if readable and not copy.recv(65536):
                        break  # the client closed
            except OSError:
                pass
            finally:
                copy.close()
                with self._lock:
                    self._streams -= 1

        threading.Thread(target=wait_for_close, name="linger", daemon=True).start()

    # -- lifecycle -------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        # Only flag it: the main thread logs and drains (a handler must not
        # take the log lock the main thread may be holding).
        if not self._signal:
            self._signal = signal.Signals(signum).name
        self.shutdown.set()

    def run(self) -> int:
        """Boot, serve until a signal, drain; return the exit code."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log, config = self.log, self.config
        log.info("engine.boot", "Engine starting", port=config.port, db_path=config.db_path)
        if not (config.key_hash or config.api_key):
            log.warning("engine.boot", "No ENGINE_KEY_HASH or ENGINE_API_KEY set: every authenticated call is refused")
        try:
            self.brain.prepare()
        except (OSError, sqlite3.Error) as exc:
            log.error("engine.brain", f"Cannot open the brain at {config.db_path}: {exc}", code="DATABASE_ERROR")
            return 1
        unknown = self.brain.unknown_migrations(config.migrations)
        if unknown:
            self._migration_error = (f"the brain records migration(s) this release does not know: "
                                     f"{', '.join(unknown)}; restore a brain snapshot or run a newer release")
            log.error("engine.brain", f"MIGRATION_REQUIRED: {self._migration_error}",
                      code="MIGRATION_REQUIRED", unknown_migrations=unknown)
            if config.migration_required == "exit":
                return EXIT_MIGRATION_REQUIRED
            self._set_phase("error")
        try:
            server = EngineHTTPServer(("0.0.0.0", config.port), self)
        except OSError as exc:
            log.error("engine.http", f"Cannot listen on port {config.port}: {exc}", code="BIND_FAILED")
            return 1
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                         name="http", daemon=True).start()
        log.info("engine.http", "Listening", host="0.0.0.0", port=config.port)
        try:
            if not unknown and self._boot():
                self.learner.start()
                self._set_phase("ready")
                log.info("engine.boot", "Ready", boot_seconds=round(time.monotonic() - self.started, 3))
            while not self.shutdown.wait(1.0):
                pass
            return self._drain(server)
        except MigrationError as exc:
            log.error("engine.brain", str(exc), code="MIGRATION_FAILED")
            server.shutdown()
            return 1

    def _boot(self) -> bool:
        """Apply pending migrations, then the boot delay; False when a signal
        came first (the drain then runs at once)."""
        pending = self.brain.pending_migrations(self.config.migrations)
        if pending:
            self._set_phase("migrating")
            self.log.info("engine.brain", "Applying migrations", pending=pending)
        for migration_id in pending:
            began = time.monotonic()
            if self.shutdown.wait(self.config.migration_seconds):
                return False
            self.brain.apply_migration(migration_id)
            self.log.info("engine.brain", f"Migration {migration_id} applied", migration=migration_id,
                          duration_ms=int((time.monotonic() - began) * 1000))
        if not pending:
            self.log.info("engine.brain", "Brain schema up to date", applied=list(self.brain.applied))
        self._set_phase("starting")
        return not self.shutdown.wait(self.config.boot_seconds)

    def _drain(self, server: EngineHTTPServer) -> int:
        began = time.monotonic()
        in_flight = self.turns.close()
        if self.phase != "error":
            self._set_phase("draining")
        self.log.info("engine.shutdown", "Shutdown requested", signal=self._signal, in_flight=in_flight)
        self.turns.wait_idle()
        deadline = time.monotonic() + STREAM_FLUSH_GRACE_S
        while time.monotonic() < deadline:
            with self._lock:
                if not self._streams:
                    break
            time.sleep(0.05)
        self.learner.stop()
        self.log.info("engine.shutdown", "Drain complete", in_flight=0,
                      drain_seconds=round(time.monotonic() - began, 3))
        server.shutdown()
        server.server_close()
        try:
            busy, wal_pages, moved = self.brain.checkpoint()
            self.log.info("engine.brain", "Brain checkpointed", busy=busy, wal_pages=wal_pages, moved=moved)
        except sqlite3.Error as exc:
            self.log.error("engine.brain", f"Checkpoint failed: {exc}", code="DATABASE_ERROR")
        self.log.info("engine.shutdown", "Exiting", exit_code=self.config.exit_code)
        return self.config.exit_code


def main() -> int:
    log = JsonLog()
    try:
        config = Config.from_env()
    except ConfigError as exc:
        log.error("engine.boot", f"Invalid configuration: {exc}", code="CONFIG_ERROR")
        return 1
    missing = config.missing_env()
    if missing:
        log.error("engine.boot", f"Missing required environment variable(s): {', '.join(missing)}",
                  code="CONFIG_ERROR", missing=missing)
        return 1
    if config.crash_at_boot:
        log.error("engine.boot", config.crash_at_boot, code="BOOT_FAILURE")
        return 1
    return Engine(config, log).run()


if __name__ == "__main__":
    sys.exit(main())
