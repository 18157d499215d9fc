# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Brain snapshots on disk: names, manifests, verification and retention.

A snapshot ``NAME`` is two files in the snapshot directory: ``NAME.db``
(the SQLite copy) and ``NAME.json`` (its :class:`Manifest`). Manifests are
written atomically with mode 0600.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ansible_collections.engineops.fleet.plugins.module_utils._brain import (
    BrainError,
    IntegrityResult,
    integrity_check,
    sha256_file,
)

MANIFEST_SCHEMA_VERSION = 1
SNAPSHOT_SUFFIX = ".db"
MANIFEST_SUFFIX = ".json"
MAX_NAME_LENGTH = 128
REASON_PRE_UPGRADE = "pre-upgrade"
REASON_MANUAL = "manual"
REASON_QUARANTINE = "quarantine"
DEFAULT_PRE_UPGRADE_MIN_AGE = timedelta(days=7)
DEFAULT_SNAPSHOT_DIR = "/var/lib/engineops/snapshots"

_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")


class SnapshotError(Exception):
    """Base class of the errors raised by this file."""


class SnapshotNameError(SnapshotError, ValueError):
    """A snapshot name is not allowed."""


class SnapshotPathError(SnapshotError):
    """A snapshot path would leave the snapshot directory."""


class ManifestError(SnapshotError):
    """A manifest cannot be read or is malformed."""


# -- time -----------------------------------------------------------------

def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def format_utc(value: datetime) -> str:
    """``2025-01-31T12:00:00Z`` (fraction kept when there is one); a naive datetime is taken as UTC."""
    return _as_utc(value).isoformat().replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    """An aware UTC datetime from ISO 8601 text (``Z`` or an offset; none means UTC)."""
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO 8601 time such as '2025-01-31T12:00:00Z', got {text!r}")
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time such as '2025-01-31T12:00:00Z'") from None
    return _as_utc(parsed)


# -- files ----------------------------------------------------------------

def write_json_atomic(path: str | os.PathLike[str], data: Any, mode: int = 0o600) -> str:
    """Write ``data`` as JSON to ``path`` atomically: temp file, fsync, chmod, rename, fsync the directory."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return target
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return target


# -- names and paths --------------------------------------------------------

def validate_snapshot_name(name: str) -> str:
    """``name`` if it is a safe snapshot name, else :class:`SnapshotNameError` saying why."""
    rule = (f"use 1-{MAX_NAME_LENGTH} characters of letters, digits, '.', '_' and '-', "
            "not starting with '.' or '-', without '..'")
    if not isinstance(name, str) or name == "":
        raise SnapshotNameError(f"Snapshot name {name!r} is empty; {rule}")
    if len(name) > MAX_NAME_LENGTH:
        raise SnapshotNameError(f"Snapshot name {name[:40]!r}... is {len(name)} characters long; {rule}")
    if not _NAME_RE.match(name):
        bad = "".join(sorted(set("".join(_UNSAFE_RE.findall(name)))))
        raise SnapshotNameError(f"Snapshot name {name!r} contains {bad!r}; {rule}")
    if name.startswith("."):
        raise SnapshotNameError(f"Snapshot name {name!r} starts with '.'; {rule}")
    if name.startswith("-"):
        raise SnapshotNameError(f"Snapshot name {name!r} starts with '-'; {rule}")
    if ".." in name:
        raise SnapshotNameError(f"Snapshot name {name!r} contains '..'; {rule}")
    return name


def _safe_part(text: str) -> str:
    return _UNSAFE_RE.sub("-", text).strip(".-") or "x"


def make_snapshot_name(engine: str, reason: str, created: datetime | None = None,
                       version: str | None = None) -> str:
    """A valid, sortable name: ``<engine>_<YYYYmmddTHHMMSSZ>_<reason>[_<version>]``."""
    when = _as_utc(created or utc_now()).strftime("%Y%m%dT%H%M%SZ")
    parts = [_safe_part(engine), when, _safe_part(reason)]
    if version:
        parts.append(_safe_part(version))
    name = "_".join(parts).replace("..", ".")
    if len(name) > MAX_NAME_LENGTH:
        name = name[:MAX_NAME_LENGTH].rstrip(".-")
    return validate_snapshot_name(name)


@dataclass(frozen=True)
class SnapshotPaths:
    """Where a snapshot lives: ``db`` and ``manifest`` inside ``directory`` (real paths)."""

    directory: str
    name: str
    db: str
    manifest: str


def snapshot_paths(snapshot_dir: str | os.PathLike[str], name: str) -> SnapshotPaths:
    """The files of snapshot ``name``; refuses any that would resolve outside ``snapshot_dir`` (symlinks included)."""
    validate_snapshot_name(name)
    directory = os.path.realpath(os.fspath(snapshot_dir))
    result = {}
    for kind, suffix in (("db", SNAPSHOT_SUFFIX), ("manifest", MANIFEST_SUFFIX)):
        candidate = os.path.join(directory, name + suffix)
        resolved = os.path.realpath(candidate)
        if os.path.dirname(resolved) != directory:
            raise SnapshotPathError(
                f"Snapshot {name!r}: {candidate!r} resolves to {resolved!r}, outside the snapshot directory "
                f"{directory!r}; remove the link or choose another name"
            )
        result[kind] = candidate
    return SnapshotPaths(directory, name, result["db"], result["manifest"])


# -- manifests ----------------------------------------------------------------

_REQUIRED_STR = ("name", "engine", "fingerprint", "sha256", "reason", "file")
_OPTIONAL_STR = ("container", "image", "version", "migrations_table")


@dataclass
class Manifest:
    """What a snapshot is: whose brain, from which image and schema, its size and checksum, when and why."""

    name: str
    engine: str
    fingerprint: str
    size: int
    sha256: str
    created: datetime
    reason: str
    file: str
    container: str | None = None
    image: str | None = None
    version: str | None = None
    migrations: list[str] = field(default_factory=list)
    migrations_table: str | None = None
    schema_version: int = MANIFEST_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "engine": self.engine,
            "container": self.container,
            "image": self.image,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "migrations": list(self.migrations),
            "migrations_table": self.migrations_table,
            "size": self.size,
            "sha256": self.sha256,
            "created": format_utc(self.created),
            "reason": self.reason,
            "file": self.file,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: expected a JSON object, found {type(data).__name__}")
        version = data.get("schema_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ManifestError(f"{source}: schema_version {version!r} is missing or invalid; expected an integer >= 1")
        if version > MANIFEST_SCHEMA_VERSION:
            raise ManifestError(
                f"{source}: schema_version {version} is newer than this collection reads "
                f"({MANIFEST_SCHEMA_VERSION}); upgrade engineops.fleet"
            )
        for key in _REQUIRED_STR:
            if not isinstance(data.get(key), str) or not data[key]:
                raise ManifestError(f"{source}: {key!r} must be a non-empty string, found {data.get(key)!r}")
        for key in _OPTIONAL_STR:
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ManifestError(f"{source}: {key!r} must be a string or null, found {data[key]!r}")
        size = data.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ManifestError(f"{source}: 'size' must be a non-negative integer, found {size!r}")
        if not re.match(r"^[0-9a-f]{64}$", data["sha256"]):
            raise ManifestError(f"{source}: 'sha256' {data['sha256']!r} is not 64 lowercase hex digits")
        migrations = data.get("migrations", [])
        if not isinstance(migrations, list) or not all(isinstance(m, str) for m in migrations):
            raise ManifestError(f"{source}: 'migrations' must be a list of strings, found {migrations!r}")
        try:
            created = parse_utc(data.get("created"))
        except ValueError as exc:
            raise ManifestError(f"{source}: 'created': {exc}") from None
        return cls(
            name=data["name"], engine=data["engine"], fingerprint=data["fingerprint"], size=size,
            sha256=data["sha256"], created=created, reason=data["reason"], file=data["file"],
            container=data.get("container"), image=data.get("image"), version=data.get("version"),
            migrations=list(migrations), migrations_table=data.get("migrations_table"), schema_version=version,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "manifest") -> Manifest:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ManifestError(f"{source}: not valid JSON ({exc})") from None
        return cls.from_dict(data, source)


def write_manifest(snapshot_dir: str | os.PathLike[str], manifest: Manifest) -> str:
    """Write ``NAME.json`` for ``manifest`` atomically (mode 0600); returns its path."""
    paths = snapshot_paths(snapshot_dir, manifest.name)
    expected = os.path.basename(paths.db)
    if manifest.file != expected:
        raise ManifestError(
            f"Manifest of snapshot {manifest.name!r} names file {manifest.file!r}; it must be {expected!r}"
        )
    return write_json_atomic(paths.manifest, manifest.to_dict(), mode=0o600)


def read_manifest(snapshot_dir: str | os.PathLike[str], name: str) -> Manifest:
    """The manifest of snapshot ``name``."""
    paths = snapshot_paths(snapshot_dir, name)
    try:
        with open(paths.manifest, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ManifestError(f"Snapshot {name!r} has no manifest {paths.manifest!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"Cannot read manifest {paths.manifest!r}: {exc}") from None
    manifest = Manifest.from_json(text, paths.manifest)
    if manifest.name != name:
        raise ManifestError(f"Manifest {paths.manifest!r} is for snapshot {manifest.name!r}, not {name!r}")
    return manifest


class SnapshotList(list):
    """Manifests newest first; ``skipped`` lists ``(file, reason)`` of manifests that could not be read."""

    def __init__(self, items: Any = (), skipped: list[tuple[str, str]] | None = None) -> None:
        super().__init__(items)
        self.skipped: list[tuple[str, str]] = skipped or []


def list_snapshots(snapshot_dir: str | os.PathLike[str], engine: str | None = None) -> SnapshotList:
    """The snapshots in ``snapshot_dir`` (of ``engine`` only, if given), newest first.

    A missing directory has none; unreadable manifests go to ``skipped``.
    """
    directory = os.fspath(snapshot_dir)
    if not os.path.exists(directory):
        return SnapshotList()
    if not os.path.isdir(directory):
        raise SnapshotError(f"Snapshot directory {directory!r} is not a directory")
    manifests: list[Manifest] = []
    skipped: list[tuple[str, str]] = []
    for entry in sorted(os.listdir(directory)):
        if not entry.endswith(MANIFEST_SUFFIX) or entry.startswith("."):
            continue
        name = entry[: -len(MANIFEST_SUFFIX)]
        try:
            manifest = read_manifest(directory, name)
        except SnapshotError as exc:
            skipped.append((entry, str(exc)))
            continue
        if engine is None or manifest.engine == engine:
            manifests.append(manifest)
    manifests.sort(key=lambda m: (m.created, m.name), reverse=True)
    return SnapshotList(manifests, skipped)


# -- verification -------------------------------------------------------------

@dataclass
class VerifyResult:
    """A snapshot checked against its manifest; ``reasons`` says what is wrong when not ``ok``."""

    name: str
    ok: bool
    reasons: list[str] = field(default_factory=list)
    manifest: Manifest | None = None
    path: str | None = None
    size: int | None = None
    sha256: str | None = None
    integrity: IntegrityResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "reasons": list(self.reasons),
            "manifest": None if self.manifest is None else self.manifest.to_dict(),
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "integrity": None if self.integrity is None else self.integrity.to_dict(),
        }


def verify_snapshot(snapshot_dir: str | os.PathLike[str], name: str) -> VerifyResult:
    """Check that snapshot ``name`` exists, matches its manifest's size and sha256, and passes integrity_check."""
    paths = snapshot_paths(snapshot_dir, name)
    result = VerifyResult(name=name, ok=False, path=paths.db)
    try:
        result.manifest = read_manifest(snapshot_dir, name)
    except ManifestError as exc:
        result.reasons.append(str(exc))
    if result.manifest is not None and result.manifest.file != os.path.basename(paths.db):
        result.reasons.append(
            f"manifest names file {result.manifest.file!r}, expected {os.path.basename(paths.db)!r}")
    if not os.path.isfile(paths.db):
        result.reasons.append(f"snapshot file {paths.db!r} is missing")
        return result
    result.size = os.path.getsize(paths.db)
    result.sha256 = sha256_file(paths.db)
    if result.manifest is not None:
        if result.size != result.manifest.size:
            result.reasons.append(f"size is {result.size} bytes, manifest says {result.manifest.size}")
        if result.sha256 != result.manifest.sha256:
            result.reasons.append(f"sha256 is {result.sha256}, manifest says {result.manifest.sha256}")
    try:
        result.integrity = integrity_check(paths.db)
    except BrainError as exc:
        result.reasons.append(str(exc))
    else:
        if not result.integrity.ok:
            shown = "; ".join(result.integrity.messages[:5])
            result.reasons.append(f"integrity_check failed: {shown}")
    result.ok = not result.reasons
    return result


# -- retention ----------------------------------------------------------------

@dataclass
class RetentionDecision:
    """One snapshot's fate in a retention plan and why."""

    name: str
    engine: str
    created: datetime
    reason: str
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "engine": self.engine, "created": format_utc(self.created),
                "reason": self.reason, "why": self.why}


@dataclass
class RetentionPlan:
    """Which snapshots to remove, and why each kept one is kept."""

    keep: list[RetentionDecision] = field(default_factory=list)
    remove: list[RetentionDecision] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"keep": [d.to_dict() for d in self.keep], "remove": [d.to_dict() for d in self.remove]}


def _age_text(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    if seconds < 0:
        return "created in the future"
    days, rest = divmod(seconds, 86400)
    return f"age {days}d {rest // 3600}h"


def plan_retention(snapshots: list[Manifest], keep: int, now: datetime | None = None,
                   pre_upgrade_min_age: timedelta | float = DEFAULT_PRE_UPGRADE_MIN_AGE,
                   force: bool = False) -> RetentionPlan:
    """Keep the ``keep`` newest snapshots of each engine; plan to remove the others, except:

    - pre-upgrade snapshots younger than ``pre_upgrade_min_age`` (7 days),
    - quarantined brains (the only copy of a bad window's writes),

    which are kept unless ``force``. Nothing is removed here.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
        raise SnapshotError(f"Retention count keep={keep!r} must be an integer >= 0")
    if not isinstance(pre_upgrade_min_age, timedelta):
        pre_upgrade_min_age = timedelta(seconds=float(pre_upgrade_min_age))
    moment = _as_utc(now or utc_now())
    plan = RetentionPlan()
    by_engine: dict[str, list[Manifest]] = {}
    for manifest in snapshots:
        by_engine.setdefault(manifest.engine, []).append(manifest)
    min_days = pre_upgrade_min_age.total_seconds() / 86400
    min_text = f"{min_days:g} days" if min_days >= 1 else f"{pre_upgrade_min_age.total_seconds():g} s"
    for engine in sorted(by_engine):
        ordered = sorted(by_engine[engine], key=lambda m: (_as_utc(m.created), m.name), reverse=True)
        for rank, manifest in enumerate(ordered, start=1):
            def decision(why: str, m: Manifest = manifest) -> RetentionDecision:
                return RetentionDecision(m.name, m.engine, m.created, m.reason, why)

            if rank <= keep:
                plan.keep.append(decision(f"among the {keep} newest of engine {engine!r} (#{rank})"))
                continue
            beyond = f"beyond the {keep} newest of engine {engine!r} (#{rank})"
            age = moment - _as_utc(manifest.created)
            young = age < pre_upgrade_min_age
            if manifest.reason == REASON_PRE_UPGRADE and young:
                if not force:
                    plan.keep.append(decision(
                        f"pre-upgrade snapshot younger than {min_text} ({_age_text(age)}); force to remove"))
                    continue
                plan.remove.append(decision(
                    f"{beyond}; pre-upgrade snapshot younger than {min_text} removed by force"))
                continue
            if manifest.reason == REASON_QUARANTINE:
                if not force:
                    plan.keep.append(decision(
                        "quarantined brain: the only copy of writes a restore replaced; force to remove"))
                    continue
                plan.remove.append(decision(f"{beyond}; quarantined brain removed by force"))
                continue
            plan.remove.append(decision(beyond))
    return plan
