"""The reference Engine's release matrix: one image tag per simulated release.

This module is the single source of truth for what each tag does; the
README of this folder restates it for people. Each release is a set of
``ENGINE_SIM_*`` knobs baked into the image (see ``app/engine.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

REPOSITORY = "september-engine"

BASE_MIGRATIONS = ("0001_init", "0002_learning")


@dataclass(frozen=True)
class Release:
    name: str
    tag: str
    summary: str
    knobs: dict[str, str] = field(default_factory=dict)

    @property
    def migrations(self) -> tuple[str, ...]:
        return tuple(self.knobs.get("ENGINE_SIM_MIGRATIONS", ",".join(BASE_MIGRATIONS)).split(","))


def _migrations(*extra: str) -> dict[str, str]:
    return {"ENGINE_SIM_MIGRATIONS": ",".join(BASE_MIGRATIONS + extra)}


RELEASES: tuple[Release, ...] = (
    Release("baseline", "2.3.0", "baseline"),
    Release("patch", "2.3.1", "safe patch: same schema, same behaviour"),
    Release("minor", "2.4.0", "additive migration 0003; 2.3.x then refuses the brain", _migrations("0003_feedback")),
    Release(
        "major",
        "3.0.0",
        "migration 0004, new required env LLM_EMBEDDING_MODEL, body field message renamed prompt",
        {
            **_migrations("0003_feedback", "0004_v3_threads"),
            "ENGINE_SIM_REQUIRED_ENV_EXTRA": "LLM_EMBEDDING_MODEL",
            "ENGINE_SIM_REQUEST_FIELD": "prompt",
        },
    ),
    Release("bad-health", "2.3.2", "/health never ok", {"ENGINE_SIM_BROKEN_SUBSYSTEM": "llm_provider"}),
    Release("bad-errors", "2.3.3", "about 30% of turns fail", {"ENGINE_SIM_ERROR_RATE": "0.3"}),
    Release(
        "bad-latency",
        "2.3.4",
        "P99 several times worse",
        {"ENGINE_SIM_SLOW_SHARE": "0.1", "ENGINE_SIM_SLOW_FACTOR": "8"},
    ),
    Release("bad-answers", "2.3.5", "wrong answers on about 40% of questions", {"ENGINE_SIM_WRONG_RATE": "0.4"}),
    Release("bad-cache", "2.3.6", "cache hit ratio collapses", {"ENGINE_SIM_CACHE_RATIO": "0.03"}),
    Release(
        "bad-warning",
        "2.3.7",
        "a new WARNING on every turn",
        {"ENGINE_SIM_TURN_WARNING": "Prompt template fallback used for task"},
    ),
    Release(
        "bad-crash",
        "2.3.8",
        "exits at boot",
        {"ENGINE_SIM_CRASH_AT_BOOT": "Failed to initialise tool registry: plugin manifest unreadable"},
    ),
    Release("bad-slowboot", "2.3.9", "/health not ok for 180 s", {"ENGINE_SIM_BOOT_SECONDS": "180"}),
    Release(
        "bad-minor",
        "2.5.0",
        "migrates the brain and answers about 40% of questions wrong",
        {**_migrations("0003_feedback", "0005_turn_tags"), "ENGINE_SIM_WRONG_RATE": "0.4"},
    ),
)


@dataclass(frozen=True)
class Profile:
    """One setting of every [GAP] knob of the contract, as an image repository."""

    repository: str
    knobs: dict[str, str]
    releases: tuple[str, ...]  # release names built for this profile


PROFILES: tuple[Profile, ...] = (
    Profile(
        REPOSITORY,
        {
            "ENGINE_SIM_MIGRATIONS_TABLE": "schema_migrations",
            "ENGINE_SIM_MIGRATION_REQUIRED": "exit",
            "ENGINE_SIM_DRAIN_HEALTH": "503",
            "ENGINE_SIM_EXIT_CODE": "0",
            "ENGINE_SIM_COMPLETION_LOG": "duration_ms",
        },
        tuple(r.name for r in RELEASES),
    ),
    # The other setting of each knob.
    Profile(
        "september-engine-alt",
        {
            "ENGINE_SIM_MIGRATIONS_TABLE": "_engine_migrations",
            "ENGINE_SIM_MIGRATION_REQUIRED": "serve",
            "ENGINE_SIM_DRAIN_HEALTH": "200",
            "ENGINE_SIM_EXIT_CODE": "143",
            "ENGINE_SIM_COMPLETION_LOG": "elapsed_s",
        },
        ("baseline", "patch", "minor", "major", "bad-minor"),
    ),
    # The compose examples' image name; health stays ok while draining and
    # turns log no completion line.
    Profile(
        "engine",
        {
            "ENGINE_SIM_MIGRATIONS_TABLE": "applied_migrations",
            "ENGINE_SIM_MIGRATION_REQUIRED": "exit",
            "ENGINE_SIM_DRAIN_HEALTH": "ok",
            "ENGINE_SIM_EXIT_CODE": "0",
            "ENGINE_SIM_COMPLETION_LOG": "none",
        },
        ("baseline", "patch", "minor", "bad-minor"),
    ),
)

_BY_NAME = {r.name: r for r in RELEASES}


def release(name: str) -> Release:
    """The release called ``name`` (e.g. ``"bad-errors"``)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown release {name!r}; known: {', '.join(_BY_NAME)}") from None


def tag(name: str) -> str:
    """The image tag of the release called ``name``."""
    return release(name).tag


def image_knobs(profile: Profile, rel: Release) -> dict[str, str]:
    """Every knob baked into the image of ``rel`` in ``profile``."""
    return {**profile.knobs, **rel.knobs}
