# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Moving a brain between an Engine's volume and this host, through the Docker API (and one direct path).

Everything goes through the daemon (``exec``, ``get_archive``,
``put_archive``, a throwaway container), so it works the same with a local
socket and with a remote ``docker_host``; the one exception is a snapshot
whose volume is on this very host (see :func:`direct_source`).

- :meth:`BrainTransfer.snapshot_to` with a :class:`DirectSource` that has a
  path copies the brain straight from the volume's mount point into the
  snapshot folder, with SQLite's online backup API (one read transaction
  in WAL mode, like the contract's ``.backup``), then hashes the copy.
  Otherwise it takes the contract's online backup
  (``sqlite3 BRAIN ".backup /data/brain-<epoch>-<token>.db"``) inside a
  container that sees the brain, streams the copy out to a file on this host
  (hashing it on the way, never holding it in memory), checks the file on
  disk against the stream, and removes the copy inside the container.
  The container is the Engine's own when it runs (``docker exec``) and
  otherwise a throwaway *helper*: the Engine's own image with the Engine's
  volumes (``volumes_from``), idling in ``sqlite3`` reading its stdin, so the
  stopped case runs the very same commands as the running one.
- :meth:`BrainTransfer.copy_brain_files` copies the brain and its
  ``-wal``/``-shm``/``-journal`` files byte for byte (the quarantine of a
  restore) and verifies each copy.
- :meth:`BrainTransfer.swap_in` uploads a snapshot under a temporary name
  beside the brain, checks what landed, removes the stale ``-wal``/``-shm``/
  ``-journal`` files and renames the upload over the brain (``rename(2)`` in
  one directory: atomic).

The pure parts (tar framing, path rules, command lines, the read-only view
of a quarantined brain) are plain functions, unit-tested without Docker.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import secrets
import shutil
import stat
import tarfile
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

from ansible_collections.engineops.fleet.plugins.module_utils._brain import BrainError, online_backup, sha256_file
from ansible_collections.engineops.fleet.plugins.module_utils._docker import (
    APIError,
    DockerException,
    EngineDocker,
    EngineDockerError,
    EngineFacts,
    brain_mount,
)

CHUNK_SIZE = 1024 * 1024
SQLITE_BUSY_MS = 10_000
HELPER_LABEL = "io.engineops.fleet.helper"
HELPER_ENGINE_LABEL = "io.engineops.fleet.helper.engine"
# Companion files SQLite keeps beside a database, by kind.
COMPANIONS = ("wal", "shm", "journal")
# How engine_snapshot copies a brain out: straight from the volume when it can, or always one way.
COPY_METHODS = ("auto", "direct", "archive")
# Pages per step of the direct copy (64 MiB of 4 KiB pages): its time limit is checked between steps.
DIRECT_STEP_PAGES = 16384
_SAFE_CONTAINER_PATH = re.compile(r"^/[^\x00-\x1f'\"\\]*$")


class BrainCopyError(Exception):
    """A transfer between an Engine's volume and this host failed."""


class BrainFileMissingError(BrainCopyError):
    """The file asked for does not exist in the container."""


class TransferTimeoutError(BrainCopyError):
    """A transfer did not finish within its time limit."""


# -- time limits ----------------------------------------------------------------

class Deadline:
    """A point in time every step of one operation must finish before."""

    def __init__(self, seconds: float, what: str = "the operation") -> None:
        if seconds <= 0:
            raise BrainCopyError(f"Time limit for {what} must be positive, got {seconds!r}")
        self.seconds = float(seconds)
        self.what = what
        self._end = time.monotonic() + self.seconds

    def remaining(self) -> float:
        return max(self._end - time.monotonic(), 0.0)

    def expired(self) -> bool:
        return time.monotonic() >= self._end

    def check(self, doing: str) -> None:
        """Raise :class:`TransferTimeoutError` naming ``doing`` once the time is up."""
        if self.expired():
            raise TransferTimeoutError(
                f"Timed out after {self.seconds:g} s while {doing} ({self.what}); raise the timeout option "
                "if the brain is large or the Docker daemon slow"
            )


# -- results --------------------------------------------------------------------

@dataclass
class CopiedFile:
    """One file read from a container: where it went (``None`` when only hashed), its size and sha256,
    and the owner and mode the tar header gave it."""

    source: str
    path: str | None
    size: int
    sha256: str
    mode: int
    uid: int
    gid: int
    mtime: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mode"] = f"{self.mode:04o}"
        return data


@dataclass
class Owner:
    """Owner and permission bits to give a file uploaded into a container."""

    uid: int = 0
    gid: int = 0
    mode: int = 0o644


@dataclass
class SnapshotCopy:
    """An online backup copied out of a container: the file, how it was taken and how long each step took."""

    file: CopiedFile
    method: str  # "exec" (inside the running Engine), "helper" (a throwaway container) or "direct"
    container_path: str | None  # the temporary backup inside the container (None when direct)
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    host_path: str | None = None  # the brain read on this host (direct only)
    fallback_reason: str | None = None  # why the archive path was taken when the direct one was looked for

    @property
    def copy_method(self) -> str:
        return "direct" if self.method == "direct" else "archive"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file.to_dict(), "method": self.method, "copy_method": self.copy_method,
                "container_path": self.container_path, "host_path": self.host_path,
                "fallback_reason": self.fallback_reason, "seconds": dict(self.seconds),
                "warnings": list(self.warnings)}


@dataclass
class DirectSource:
    """The brain's file on this host when the module can copy it straight from the volume, else why not."""

    path: str | None
    problem: str | None = None


@dataclass
class ExecOutput:
    """What a command run in a container said."""

    argv: list[str]
    exit_code: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def message(self) -> str:
        text = (self.stderr.strip() or self.stdout.strip() or "no output").splitlines()
        shown = "; ".join(line.strip() for line in text[-5:] if line.strip())
        return f"exit code {self.exit_code}: {shown}"


# -- paths inside the container ------------------------------------------------

def check_container_path(path: str, what: str = "path") -> str:
    """``path`` if it is an absolute, normalised POSIX path without quotes or control characters."""
    if not isinstance(path, str) or not _SAFE_CONTAINER_PATH.match(path):
        raise BrainCopyError(
            f"The {what} {path!r} cannot be used: expected an absolute path without quotes, backslashes or "
            "control characters, such as /data/brain.sqlite"
        )
    if posixpath.normpath(path) != path or path == "/" or path.endswith("/"):
        raise BrainCopyError(
            f"The {what} {path!r} cannot be used: it is not a normalised path to a file (no '..', '//' or "
            "trailing '/'); expected something like /data/brain.sqlite"
        )
    return path


def companion_paths(brain_path: str) -> dict[str, str]:
    """The ``-wal``, ``-shm`` and ``-journal`` files SQLite keeps beside ``brain_path``, by kind."""
    return {kind: f"{brain_path}-{kind}" for kind in COMPANIONS}


def backup_temp_path(brain_path: str, epoch: int | None = None, token: str | None = None) -> str:
    """Where the contract's ``.backup`` writes inside the container: ``<brain dir>/brain-<epoch>-<token>.db``."""
    check_container_path(brain_path, "brain path")
    epoch = int(time.time()) if epoch is None else int(epoch)
    token = token or secrets.token_hex(4)
    if not re.match(r"^[0-9a-f]{1,32}$", token):
        raise BrainCopyError(f"Temporary name token {token!r} must be lowercase hex")
    return posixpath.join(posixpath.dirname(brain_path), f"brain-{epoch}-{token}.db")


def restore_temp_path(brain_path: str, token: str | None = None) -> str:
    """The name a restore uploads to before the rename: ``<brain dir>/.<brain name>.restore-<token>``."""
    check_container_path(brain_path, "brain path")
    token = token or secrets.token_hex(4)
    if not re.match(r"^[0-9a-f]{1,32}$", token):
        raise BrainCopyError(f"Temporary name token {token!r} must be lowercase hex")
    return posixpath.join(posixpath.dirname(brain_path), f".{posixpath.basename(brain_path)}.restore-{token}")


def temp_leftovers(path: str) -> list[str]:
    """``path`` and the journal files SQLite may have made beside it."""
    return [path] + [f"{path}-{kind}" for kind in COMPANIONS]


def backup_argv(brain_path: str, dest: str, hold_read_transaction: bool) -> list[str]:
    """The sqlite3 CLI command of the contract's online backup, source opened read-only.

    With ``hold_read_transaction`` (a brain in WAL mode) the backup runs in
    one read transaction: it copies one consistent state of the brain while
    the Engine keeps writing, instead of restarting each time a write lands
    between two backup steps (which, under steady writes, may never end).
    A brain in rollback-journal mode gets the plain ``.backup``, so its
    writers are never held up for the whole copy.
    """
    check_container_path(brain_path, "brain path")
    check_container_path(dest, "backup destination")
    argv = ["sqlite3", "-readonly", "-bail", brain_path, f".timeout {SQLITE_BUSY_MS}"]
    if hold_read_transaction:
        argv += ["BEGIN", "SELECT 1 FROM sqlite_master LIMIT 1", f".backup '{dest}'", "COMMIT"]
    else:
        argv += [f".backup '{dest}'"]
    return argv


def journal_mode_argv(brain_path: str) -> list[str]:
    check_container_path(brain_path, "brain path")
    return ["sqlite3", "-readonly", "-bail", brain_path, f".timeout {SQLITE_BUSY_MS}", "PRAGMA journal_mode"]


def direct_source(docker_host: str, mount: dict[str, Any] | None, brain_path: str) -> DirectSource:
    """Whether the brain at ``brain_path`` (inside the container) can be read straight from this host.

    It can when the daemon is reached through a unix socket (so it runs on
    this host), the brain is on a ``local`` volume or a bind mount
    (``mount``, its entry of ``docker inspect``'s ``Mounts``), and that
    mount's source holds the brain here as a regular file, reached without
    a symlink, that this user may read and write (SQLite's readers of a WAL
    brain share its ``-shm``), in a folder it may write. Anything else names
    the reason, and the snapshot goes through the Docker archive API.
    """
    scheme = urlsplit(docker_host).scheme if "://" in docker_host else "unix"
    if scheme not in ("unix", "http+unix"):
        return DirectSource(None, f"the Docker daemon is reached at {docker_host}, not through a unix socket on "
                                  "this host, so its volumes may be on another host")
    if not mount:
        return DirectSource(None, f"the brain {brain_path} is not on a volume or bind mount of the container")
    kind = mount.get("Type") or "volume"
    driver = mount.get("Driver") or "local"
    if kind == "volume" and driver != "local":
        return DirectSource(None, f"its volume {mount.get('Name')} uses the volume driver {driver!r}, not 'local'")
    if kind not in ("volume", "bind"):
        return DirectSource(None, f"the brain is on a mount of type {kind!r}, not a local volume or bind mount")
    source = mount.get("Source") or ""
    destination = (mount.get("Destination") or "").rstrip("/") or "/"
    if not os.path.isabs(source):
        return DirectSource(None, f"the daemon gives no absolute mount point for the brain's {kind} ({source!r})")
    if not os.path.exists(source):
        return DirectSource(None, f"the {kind}'s mount point {source} does not exist on this host (the daemon may "
                                  "see another file system, e.g. inside a VM)")
    inside = posixpath.relpath(check_container_path(brain_path, "brain path"), destination)
    path = source if inside == "." else os.path.join(source, inside)
    if os.path.realpath(path) != os.path.normpath(os.path.join(os.path.realpath(source), inside)):
        return DirectSource(None, f"{path} goes through a symlink, which the container may resolve differently")
    if not os.path.isfile(path):
        return DirectSource(None, f"the brain is not a regular file at {path} on this host")
    folder = os.path.dirname(path)
    if not (os.access(path, os.R_OK | os.W_OK) and os.access(folder, os.R_OK | os.W_OK | os.X_OK)):
        return DirectSource(None, f"this user (uid {os.geteuid()}) may not read and write {path} and its folder")
    return DirectSource(path)


def explain_sqlite_failure(output: ExecOutput, brain_path: str) -> str:
    """A readable cause for a failed sqlite3 command run on ``brain_path``."""
    text = f"{output.stderr}\n{output.stdout}".lower()
    if "executable file not found" in text or output.exit_code in (126, 127):
        return ("the image has no sqlite3 CLI on its PATH (the Engine's documentation promises one); "
                f"{output.message()}")
    if "unable to open database" in text:
        return f"its brain {brain_path} does not exist or cannot be opened ({output.message()})"
    if "not a database" in text:
        return f"its brain {brain_path} is not a SQLite database ({output.message()})"
    if "malformed" in text or "corrupt" in text:
        return f"its brain {brain_path} is damaged ({output.message()})"
    if "locked" in text or "busy" in text:
        return f"its brain {brain_path} stayed locked for {SQLITE_BUSY_MS // 1000} s ({output.message()})"
    return output.message()


# -- tar framing ------------------------------------------------------------------

class _ChunkReader:
    """Exact reads over an iterable of byte chunks, handing out slices of the chunks without copying them."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def _fill(self) -> bool:
        while not len(self._pending):
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return False
        return True

    def pieces(self, size: int) -> Iterator[memoryview]:
        """Up to ``size`` bytes as consecutive slices; fewer only at the end of the stream."""
        left = size
        while left > 0 and self._fill():
            piece = self._pending[:left]
            self._pending = self._pending[len(piece):]
            left -= len(piece)
            yield piece

    def read(self, size: int) -> bytes:
        """``size`` bytes, or fewer only at the end of the stream."""
        return b"".join(self.pieces(size))


# Header types that only carry metadata (long names, PAX records) for the entry after them.
_EXTENSION_TYPES = frozenset((tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                              tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK))
_MAX_EXTENSION = 1024 * 1024


def _padded(size: int) -> int:
    return size + (-size % tarfile.BLOCKSIZE)


def _next_entry(reader: _ChunkReader, source: str) -> tarfile.TarInfo | None:
    """The next entry's header (with any PAX or GNU extension headers applied), or ``None`` at the end."""
    blocks: list[bytes] = []
    while True:
        block = reader.read(tarfile.BLOCKSIZE)
        if not block and not blocks:
            return None
        if len(block) < tarfile.BLOCKSIZE:
            raise BrainCopyError(f"The archive of {source} is not a valid tar stream: it ends inside a header")
        if block == tarfile.NUL * tarfile.BLOCKSIZE:
            if blocks:
                raise BrainCopyError(f"The archive of {source} is not a valid tar stream: an extension header "
                                     "is followed by the end of the archive")
            return None
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise BrainCopyError(f"The archive of {source} is not a valid tar stream: {exc}") from None
        blocks.append(block)
        if info.type not in _EXTENSION_TYPES:
            break
        if info.size > _MAX_EXTENSION:
            raise BrainCopyError(f"The archive of {source} has an extension header of {info.size} bytes")
        payload = reader.read(_padded(info.size))
        if len(payload) < _padded(info.size):
            raise BrainCopyError(f"The archive of {source} is not a valid tar stream: it ends inside a header")
        blocks.append(payload)
    if len(blocks) == 1:
        return info
    # Let tarfile apply the extension headers: they and the entry's own header, without its content.
    try:
        with tarfile.open(fileobj=io.BytesIO(b"".join(blocks)), mode="r:") as tar:
            member = tar.next()
    except tarfile.TarError as exc:
        raise BrainCopyError(f"The archive of {source} is not a valid tar stream: {exc}") from None
    if member is None:  # pragma: no cover - a header was just read
        raise BrainCopyError(f"The archive of {source} is not a valid tar stream")
    return member


def _open_new_file(path: str) -> int:
    """A new file ``path`` (mode 0600), never through a symlink and never over an existing file."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags, 0o600)
    except FileExistsError:
        raise BrainCopyError(f"Cannot write {path!r}: it already exists") from None
    except OSError as exc:
        raise BrainCopyError(f"Cannot create {path!r}: {exc.strerror or exc}") from None


def extract_single_member(chunks: Iterable[bytes], dest: str | None, expected_name: str, *,
                          source: str | None = None, expected_size: int | None = None,
                          deadline: Deadline | None = None, chunk_size: int = CHUNK_SIZE) -> CopiedFile:
    """Read a tar stream holding exactly one regular file called ``expected_name``.

    Its content goes to the new file ``dest`` (mode 0600, fsynced) and is
    hashed on the way, slice by slice as it arrives (never the whole file in
    memory); with ``dest`` ``None`` it is only hashed. Anything else
    (another name, a path, a link, a directory, a second entry, a size other
    than ``expected_size``, a truncated or malformed stream) raises
    :class:`BrainCopyError` and leaves no ``dest`` behind.
    """
    source = source or expected_name
    if not expected_name or "/" in expected_name or expected_name in (".", ".."):
        raise BrainCopyError(f"Expected member name {expected_name!r} must be a plain file name")
    fd = _open_new_file(dest) if dest is not None else None
    try:
        reader = _ChunkReader(chunks)
        member = _next_entry(reader, source)
        if member is None:
            raise BrainCopyError(f"The archive of {source} is empty; expected the file {expected_name!r}")
        _check_member(member, expected_name, source, expected_size)
        digest = hashlib.sha256()
        copied = 0
        for piece in reader.pieces(member.size):
            if deadline is not None:
                deadline.check(f"copying {source}")
            digest.update(piece)
            copied += len(piece)
            while fd is not None and len(piece):
                piece = piece[os.write(fd, piece):]
        if copied != member.size:
            raise BrainCopyError(f"The archive of {source} ended after {copied} of {member.size} bytes")
        padding = -member.size % tarfile.BLOCKSIZE
        if len(reader.read(padding)) != padding:
            raise BrainCopyError(f"The archive of {source} is not a valid tar stream: it ends inside the padding")
        extra = _next_entry(reader, source)
        if extra is not None:
            raise BrainCopyError(f"The archive of {source} holds more than one entry (also {extra.name!r}); "
                                 "expected a single regular file")
        if fd is not None:
            os.fsync(fd)
    except BaseException:
        if fd is not None:
            os.close(fd)
            fd = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest)  # type: ignore[arg-type]
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return CopiedFile(source=source, path=dest, size=copied, sha256=digest.hexdigest(), mode=member.mode & 0o7777,
                      uid=member.uid, gid=member.gid, mtime=float(member.mtime))


def _check_member(member: tarfile.TarInfo, expected_name: str, source: str, expected_size: int | None) -> None:
    name = member.name[2:] if member.name.startswith("./") else member.name
    if name != expected_name:
        raise BrainCopyError(
            f"The archive of {source} holds {member.name!r}; expected only the file {expected_name!r}")
    if not member.isreg():
        kind = "a directory" if member.isdir() else "a link" if (member.issym() or member.islnk()) else "not a regular file"
        raise BrainCopyError(f"{source} is {kind} in the container; expected a regular file")
    if expected_size is not None and member.size != expected_size:
        raise BrainCopyError(
            f"The archive of {source} announces {member.size} bytes but the container reported {expected_size}")


def tar_stream_for_file(path: str, arcname: str, owner: Owner, *, deadline: Deadline | None = None,
                        digest: Any = None, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """A tar stream holding the local file ``path`` as ``arcname`` with ``owner``, read in chunks.

    ``digest`` (a hashlib object), when given, is fed the file's bytes. A
    file that changes size while it is read raises :class:`BrainCopyError`
    (the archive would not match what was announced).
    """
    if not arcname or "/" in arcname or arcname in (".", ".."):
        raise BrainCopyError(f"Archive member name {arcname!r} must be a plain file name")
    with open(path, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise BrainCopyError(f"{path!r} is not a regular file")
        member = tarfile.TarInfo(arcname)
        member.size = info.st_size
        member.mode = owner.mode & 0o7777
        member.uid, member.gid = owner.uid, owner.gid
        member.mtime = int(info.st_mtime)
        member.type = tarfile.REGTYPE
        header = member.tobuf(format=tarfile.PAX_FORMAT)
        yield header
        left = member.size
        while left > 0:
            if deadline is not None:
                deadline.check(f"uploading {path}")
            block = handle.read(min(chunk_size, left))
            if not block:
                raise BrainCopyError(f"{path!r} shrank while it was uploaded ({member.size - left} of {member.size} bytes)")
            if digest is not None:
                digest.update(block)
            left -= len(block)
            yield block
        if handle.read(1):
            raise BrainCopyError(f"{path!r} grew while it was uploaded (beyond {member.size} bytes)")
    total = len(header) + member.size
    padding = -member.size % tarfile.BLOCKSIZE
    trailer = 2 * tarfile.BLOCKSIZE
    total += padding + trailer
    yield tarfile.NUL * (padding + trailer + (-total % tarfile.RECORDSIZE))


# -- local files ------------------------------------------------------------------

def quarantine_file_names(name: str) -> dict[str, str]:
    """The file names of quarantined brain ``name``: ``db`` and one per companion kind, SQLite's own naming."""
    names = {"db": f"{name}.db"}
    names.update({kind: f"{name}.db-{kind}" for kind in COMPANIONS})
    return names


@contextlib.contextmanager
def readable_view(db_path: str) -> Iterator[str]:
    """A path through which a copied brain (and its ``-wal``) can be read without changing any of its files.

    A database with no ``-wal`` beside it is read in place (the readers of
    ``_brain`` open it read-only and immutable). With a ``-wal``, SQLite
    needs a ``-shm`` it may write: the database and ``-wal`` are then
    hard-linked (copied where links are impossible) into a scratch folder
    beside them, so the ``-shm`` SQLite makes lands there, and the scratch
    folder is removed afterwards.
    """
    wal = db_path + "-wal"
    if not os.path.exists(wal):
        yield db_path
        return
    scratch = tempfile.mkdtemp(prefix=".view-", dir=os.path.dirname(os.path.abspath(db_path)))
    try:
        view = os.path.join(scratch, os.path.basename(db_path))
        for src, dst in ((db_path, view), (wal, view + "-wal")):
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
        yield view
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_quietly(*paths: str | None) -> None:
    for path in paths:
        if path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


# -- Docker side ------------------------------------------------------------------

def _docker_message(exc: BaseException) -> str:
    return str(getattr(exc, "explanation", None) or exc)


class BrainTransfer:
    """Brain transfers for one Docker daemon (an :class:`EngineDocker`), each bounded by ``timeout`` seconds."""

    def __init__(self, docker: EngineDocker, timeout: float = 600.0, chunk_size: int = CHUNK_SIZE) -> None:
        self.docker = docker
        self.api = docker.client.api
        self.timeout = float(timeout)
        self.chunk_size = chunk_size

    def deadline(self, what: str) -> Deadline:
        return Deadline(self.timeout, what)

    # -- primitives -------------------------------------------------------------

    def run(self, container: Any, argv: list[str], deadline: Deadline) -> ExecOutput:
        """Run ``argv`` in ``container`` (no shell), waiting at most until ``deadline``.

        On a timeout the command may still run inside the container (the
        Docker API cannot stop an exec); the error says so.
        """
        deadline.check(f"starting {argv[0]} in {container.name}")
        try:
            exec_id = self.api.exec_create(container.id, argv, stdout=True, stderr=True)["Id"]
        except APIError as exc:
            raise BrainCopyError(f"Cannot run {argv[0]} in container {container.name}: {_docker_message(exc)}") from None
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["output"] = self.api.exec_start(exec_id, demux=True)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                box["error"] = exc

        worker = threading.Thread(target=target, name=f"exec-{argv[0]}", daemon=True)
        worker.start()
        worker.join(deadline.remaining())
        if worker.is_alive():
            raise TransferTimeoutError(
                f"{argv[0]} in container {container.name} did not finish within {deadline.seconds:g} s "
                f"({deadline.what}); it may still be running there")
        if "error" in box:
            raise BrainCopyError(f"Cannot run {argv[0]} in container {container.name}: {_docker_message(box['error'])}")
        stdout, stderr = box.get("output") or (None, None)
        try:
            exit_code = self.api.exec_inspect(exec_id).get("ExitCode")
        except APIError as exc:
            raise BrainCopyError(f"Cannot read the exit code of {argv[0]} in {container.name}: {_docker_message(exc)}") from None
        return ExecOutput(list(argv), exit_code, (stdout or b"").decode("utf-8", "replace"),
                          (stderr or b"").decode("utf-8", "replace"))

    def _archive_url(self, container: Any) -> str:
        return self.api._url("/containers/{0}/archive", container.id)

    @staticmethod
    def _path_stat(response: Any) -> dict[str, Any]:
        header = response.headers.get("x-docker-container-path-stat")
        if not header:
            return {}
        try:
            data = json.loads(base64.b64decode(header))
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _http_error(self, response: Any, doing: str) -> BrainCopyError:
        try:
            detail = response.json().get("message") or response.text
        except ValueError:
            detail = response.text
        return BrainCopyError(f"Cannot {doing}: the Docker daemon answered {response.status_code}: {detail.strip()}")

    @contextlib.contextmanager
    def _archive(self, container: Any, path: str) -> Iterator[tuple[Iterator[bytes], dict[str, Any]]]:
        """The raw tar stream of ``path`` and its stat; the HTTP response is closed afterwards.

        The SDK's ``get_archive`` turns the socket's timeout off; this keeps
        the client's timeout on every read, so a stalled daemon cannot hang
        a transfer.
        """
        doing = f"read {path} from container {container.name}"
        try:
            response = self.api.get(self._archive_url(container), params={"path": path}, stream=True,
                                    headers={"Accept-Encoding": "identity"}, timeout=self.api.timeout)
        except Exception as exc:  # requests/urllib3 transport errors
            raise BrainCopyError(f"Cannot {doing}: {type(exc).__name__}: {exc}") from None
        try:
            if response.status_code == 404:
                raise BrainFileMissingError(f"{path} does not exist in container {container.name}")
            if response.status_code != 200:
                raise self._http_error(response, doing)
            yield response.raw.stream(self.chunk_size, decode_content=False), self._path_stat(response)
        finally:
            response.close()

    def stat(self, container: Any, path: str) -> dict[str, Any] | None:
        """Docker's stat of ``path`` in ``container`` (name, size, mode, mtime), or ``None`` if it is missing."""
        doing = f"look up {path} in container {container.name}"
        try:
            response = self.api.head(self._archive_url(container), params={"path": path}, timeout=self.api.timeout)
        except Exception as exc:  # requests/urllib3 transport errors
            raise BrainCopyError(f"Cannot {doing}: {type(exc).__name__}: {exc}") from None
        with contextlib.closing(response):
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise BrainCopyError(f"Cannot {doing}: the Docker daemon answered {response.status_code}")
            return self._path_stat(response)

    def fetch(self, container: Any, path: str, dest: str | None, deadline: Deadline,
              verify: bool = True) -> CopiedFile:
        """Stream ``path`` out of ``container`` to the new local file ``dest`` (or only hash it).

        With ``verify`` the written file is read back and must hash the same
        as the stream did.
        """
        source = f"{container.name}:{path}"
        with self._archive(container, path) as (chunks, info):
            try:
                copied = extract_single_member(
                    chunks, dest, posixpath.basename(path), source=source,
                    expected_size=info.get("size") if isinstance(info.get("size"), int) else None,
                    deadline=deadline, chunk_size=self.chunk_size)
            except (APIError, DockerException, OSError) as exc:
                raise BrainCopyError(f"Cannot copy {source}: {_docker_message(exc)}") from None
            except Exception as exc:  # urllib3/requests errors while streaming
                if isinstance(exc, BrainCopyError):
                    raise
                raise BrainCopyError(f"Cannot copy {source}: {type(exc).__name__}: {exc}") from None
        if dest is not None and verify:
            deadline.check(f"verifying the copy {dest}")
            on_disk = sha256_file(dest)
            if on_disk != copied.sha256 or os.path.getsize(dest) != copied.size:
                remove_quietly(dest)
                raise BrainCopyError(
                    f"The copy {dest} of {source} does not match what was read (sha256 {on_disk} on disk, "
                    f"{copied.sha256} streamed); it was removed")
        return copied

    def put(self, container: Any, local_path: str, path_inside: str, owner: Owner, deadline: Deadline) -> str:
        """Upload the local file ``local_path`` as ``path_inside`` (the directory must exist); return its sha256."""
        check_container_path(path_inside, "upload destination")
        digest = hashlib.sha256()
        stream = tar_stream_for_file(local_path, posixpath.basename(path_inside), owner, deadline=deadline,
                                     digest=digest, chunk_size=self.chunk_size)
        try:
            ok = self.api.put_archive(container.id, posixpath.dirname(path_inside), stream)
        except BrainCopyError:
            raise
        except (APIError, DockerException, OSError) as exc:
            raise BrainCopyError(
                f"Cannot upload {local_path} to {container.name}:{path_inside}: {_docker_message(exc)}") from None
        except Exception as exc:  # requests errors during the upload
            raise BrainCopyError(
                f"Cannot upload {local_path} to {container.name}:{path_inside}: {type(exc).__name__}: {exc}") from None
        if not ok:
            raise BrainCopyError(f"Docker refused the upload of {local_path} to {container.name}:{path_inside}")
        return digest.hexdigest()

    def remove(self, container: Any, paths: list[str], deadline: Deadline) -> ExecOutput:
        for path in paths:
            check_container_path(path, "path to remove")
        return self.run(container, ["rm", "-f", "--", *paths], deadline)

    # -- containers -------------------------------------------------------------

    @contextlib.contextmanager
    def helper(self, facts: EngineFacts) -> Iterator[Any]:
        """A throwaway container of the Engine's own image with the Engine's volumes, removed afterwards.

        It runs no Engine: its main process is ``sqlite3`` waiting on an open
        stdin, so the commands run in it are the same as in a running Engine.
        """
        engine = self.docker.container(facts.name)
        user = (engine.attrs.get("Config") or {}).get("User") or None
        name = f"{facts.name}-snapshot-helper-{secrets.token_hex(3)}"
        try:
            helper = self.docker.client.containers.create(
                facts.image_id or facts.image, entrypoint=["sqlite3"], command=[], stdin_open=True,
                volumes_from=[facts.id], network_disabled=True, user=user, name=name,
                labels={HELPER_LABEL: "engine_snapshot", HELPER_ENGINE_LABEL: facts.name},
            )
        except (APIError, DockerException) as exc:
            raise BrainCopyError(
                f"Cannot create a helper container from the image of {facts.name} ({facts.image}): "
                f"{_docker_message(exc)}") from None
        try:
            try:
                helper.start()
                helper.reload()
            except (APIError, DockerException) as exc:
                raise BrainCopyError(f"Cannot start helper container {name}: {_docker_message(exc)}") from None
            if helper.status != "running":
                raise BrainCopyError(f"Helper container {name} stopped right away (status {helper.status})")
            yield helper
        finally:
            with contextlib.suppress(APIError, DockerException):
                helper.remove(force=True)

    @contextlib.contextmanager
    def access(self, facts: EngineFacts) -> Iterator[tuple[Any, str]]:
        """A running container that sees the brain: the Engine itself when it runs (``exec``), else a helper."""
        if facts.running:
            yield self.docker.container(facts.name), "exec"
            return
        with self.helper(facts) as helper:
            yield helper, "helper"

    # -- operations -------------------------------------------------------------

    def journal_mode(self, container: Any, brain_path: str, deadline: Deadline) -> str:
        output = self.run(container, journal_mode_argv(brain_path), deadline)
        if not output.ok:
            raise BrainCopyError(explain_sqlite_failure(output, brain_path))
        lines = [line.strip().lower() for line in output.stdout.splitlines() if line.strip()]
        return lines[-1] if lines else "unknown"

    def direct_source(self, facts: EngineFacts) -> DirectSource:
        """:func:`direct_source` for ``facts``'s brain, with its mount as the daemon reports it now."""
        try:
            attrs = self.docker.container(facts.name).attrs
        except EngineDockerError as exc:
            raise BrainCopyError(str(exc)) from None
        return direct_source(self.docker.docker_host, brain_mount(attrs), facts.brain_path)

    def snapshot_to(self, facts: EngineFacts, dest: str, deadline: Deadline | None = None,
                    direct: DirectSource | None = None) -> SnapshotCopy:
        """An online backup of ``facts``'s brain as the new local file ``dest``.

        With ``direct`` holding a path, straight from that file on this host
        (:meth:`snapshot_direct`); otherwise the contract's ``.backup``
        inside a container, streamed out through the archive API, with
        ``direct``'s problem as the result's ``fallback_reason``. Raises
        :class:`BrainCopyError` with the cause; ``dest`` and any temporary
        copy are removed on every failure.
        """
        deadline = deadline or self.deadline(f"snapshot of {facts.name}")
        if direct is not None and direct.path:
            return self.snapshot_direct(direct.path, dest, deadline)
        copy = self.snapshot_archive(facts, dest, deadline)
        copy.fallback_reason = direct.problem if direct is not None else None
        return copy

    def snapshot_direct(self, path: str, dest: str, deadline: Deadline) -> SnapshotCopy:
        """SQLite's online backup of the brain file ``path`` on this host into ``dest``, then its sha256.

        A brain in WAL mode is copied in one read transaction (the state when
        the copy starts, however much is written meanwhile); the copy keeps
        its journal mode flag, as the contract's ``.backup`` does.
        """
        seconds: dict[str, float] = {}

        def check(_status: int, _remaining: int, _total: int) -> None:
            deadline.check(f"copying {path}")

        started = time.monotonic()
        try:
            online_backup(path, dest, pages=DIRECT_STEP_PAGES, progress=check, one_file=False)
        except BrainError as exc:
            raise BrainCopyError(str(exc)) from None
        seconds["backup"] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        try:
            digest, info, brain = sha256_file(dest), os.stat(dest), os.stat(path)
        except OSError as exc:
            remove_quietly(dest)
            raise BrainCopyError(f"Cannot read the copy {dest} of {path}: {exc.strerror or exc}") from None
        seconds["hash"] = round(time.monotonic() - started, 3)
        copied = CopiedFile(source=path, path=dest, size=info.st_size, sha256=digest,
                            mode=stat.S_IMODE(brain.st_mode), uid=brain.st_uid, gid=brain.st_gid,
                            mtime=info.st_mtime)
        return SnapshotCopy(copied, "direct", None, seconds, host_path=path)

    def snapshot_archive(self, facts: EngineFacts, dest: str, deadline: Deadline) -> SnapshotCopy:
        """The contract's online backup inside a container that sees the brain, streamed out to ``dest``."""
        brain = check_container_path(facts.brain_path, "brain path")
        temp = backup_temp_path(brain)
        seconds: dict[str, float] = {}
        warnings: list[str] = []
        with self.access(facts) as (container, method):
            started = time.monotonic()
            try:
                mode = self.journal_mode(container, brain, deadline)
                output = self.run(container, backup_argv(brain, temp, hold_read_transaction=(mode == "wal")), deadline)
                if not output.ok:
                    raise BrainCopyError(explain_sqlite_failure(output, brain))
                seconds["backup"] = round(time.monotonic() - started, 3)
                started = time.monotonic()
                copied = self.fetch(container, temp, dest, deadline, verify=True)
                seconds["transfer"] = round(time.monotonic() - started, 3)
            finally:
                try:
                    cleanup = self.remove(container, temp_leftovers(temp), Deadline(max(deadline.remaining(), 30.0)))
                    if not cleanup.ok:
                        warnings.append(f"Could not remove the temporary backup {temp} in {container.name}: "
                                        f"{cleanup.message()}; remove it by hand")
                except BrainCopyError as exc:
                    warnings.append(f"Could not remove the temporary backup {temp} in {container.name}: {exc}")
        return SnapshotCopy(copied, method, temp, seconds, warnings)

    def copy_brain_files(self, container: Any, brain_path: str, dest_dir: str, base: str,
                         deadline: Deadline) -> dict[str, CopiedFile]:
        """Copy the brain and whichever of its ``-wal``/``-shm``/``-journal`` exist, byte for byte, verified.

        Files land in ``dest_dir`` as ``quarantine_file_names(base)``; the
        result maps ``db`` and each companion kind found to its copy. On
        failure every copy made here is removed.
        """
        names = quarantine_file_names(base)
        sources = {"db": brain_path, **companion_paths(brain_path)}
        copies: dict[str, CopiedFile] = {}
        try:
            for kind, source in sources.items():
                try:
                    copies[kind] = self.fetch(container, source, os.path.join(dest_dir, names[kind]), deadline)
                except BrainFileMissingError:
                    if kind == "db":
                        raise
        except BaseException:
            remove_quietly(*(c.path for c in copies.values()))
            raise
        fsync_dir(dest_dir)
        return copies

    def swap_in(self, container: Any, brain_path: str, snapshot_db: str, sha256: str, owner: Owner,
                deadline: Deadline, still_stopped: Callable[[], str | None] | None = None) -> dict[str, Any]:
        """Replace ``brain_path`` by the local ``snapshot_db`` atomically, inside ``container``.

        Upload under a temporary name beside the brain, read it back and
        compare with ``sha256``, ask ``still_stopped`` (a message when the
        Engine came back, else ``None``), remove the stale ``-wal``/``-shm``/
        ``-journal``, rename over the brain. Before the rename any failure
        removes the upload and leaves the brain as it was.
        """
        temp = restore_temp_path(brain_path)
        renamed = False
        try:
            sent = self.put(container, snapshot_db, temp, owner, deadline)
            if sent != sha256:
                raise BrainCopyError(
                    f"The snapshot file {snapshot_db} changed while it was uploaded (sha256 {sent}, manifest {sha256})")
            landed = self.fetch(container, temp, None, deadline)
            if landed.sha256 != sha256:
                raise BrainCopyError(
                    f"The upload {container.name}:{temp} does not match the snapshot (sha256 {landed.sha256}, "
                    f"expected {sha256})")
            if still_stopped is not None:
                problem = still_stopped()
                if problem:
                    raise BrainCopyError(problem)
            stale = list(companion_paths(brain_path).values())
            output = self.remove(container, stale, deadline)
            if not output.ok:
                raise BrainCopyError(f"Cannot remove {', '.join(stale)}: {output.message()}")
            output = self.run(container, ["mv", "-f", "--", temp, brain_path], deadline)
            if not output.ok:
                raise BrainCopyError(f"Cannot rename {temp} over {brain_path}: {output.message()}")
            renamed = True
            self.run(container, ["sync"], Deadline(max(deadline.remaining(), 30.0)))
        finally:
            if not renamed:
                with contextlib.suppress(BrainCopyError):
                    self.remove(container, [temp], Deadline(max(deadline.remaining(), 30.0)))
        return {"temp": temp, "size": landed.size, "sha256": landed.sha256,
                "removed": stale}
