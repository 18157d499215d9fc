# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The pure parts of _brain_copy: tar framing, paths, command lines, the read-only view. No Docker."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import stat
import tarfile
import time

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._brain_copy import (
    BrainCopyError,
    Deadline,
    ExecOutput,
    Owner,
    TransferTimeoutError,
    backup_argv,
    backup_temp_path,
    check_container_path,
    companion_paths,
    direct_source,
    explain_sqlite_failure,
    extract_single_member,
    journal_mode_argv,
    quarantine_file_names,
    readable_view,
    restore_temp_path,
    tar_stream_for_file,
    temp_leftovers,
)

PAYLOAD = os.urandom(3 * 4096 + 123)


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def regular(name: str = "brain-1.db", data: bytes = PAYLOAD, uid: int = 1000, gid: int = 1001, mode: int = 0o640):
    info = tarfile.TarInfo(name)
    info.uid, info.gid, info.mode, info.mtime = uid, gid, mode, 1_700_000_000
    return info, data


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


# -- container paths ----------------------------------------------------------------

@pytest.mark.parametrize("path", ["/data/brain.sqlite", "/data/sub dir/brain.db", "/b", "/data/.brain-x"])
def test_container_paths_accepted(path):
    assert check_container_path(path) == path


@pytest.mark.parametrize("path", ["", "data/brain.sqlite", "/data/../etc/passwd", "/data//brain", "/data/brain/",
                                  "/", "/data/it's", '/data/"x"', "/data/a\nb", "/data/a\\b", None, "/./data"])
def test_container_paths_refused(path):
    with pytest.raises(BrainCopyError, match="cannot be used"):
        check_container_path(path, "brain path")


def test_companions_and_temporary_names_stay_beside_the_brain():
    assert companion_paths("/data/brain.sqlite") == {
        "wal": "/data/brain.sqlite-wal", "shm": "/data/brain.sqlite-shm", "journal": "/data/brain.sqlite-journal"}
    assert backup_temp_path("/data/brain.sqlite", epoch=1700000000, token="ab12") == "/data/brain-1700000000-ab12.db"
    assert backup_temp_path("/srv/x/b.db", epoch=5, token="0") == "/srv/x/brain-5-0.db"
    fresh = backup_temp_path("/data/brain.sqlite")
    assert fresh.startswith("/data/brain-") and fresh.endswith(".db") and fresh != backup_temp_path("/data/brain.sqlite")
    assert restore_temp_path("/data/brain.sqlite", token="ff") == "/data/.brain.sqlite.restore-ff"
    assert temp_leftovers("/data/t.db") == ["/data/t.db", "/data/t.db-wal", "/data/t.db-shm", "/data/t.db-journal"]
    for bad_token in ("../x", "A", "g"):
        with pytest.raises(BrainCopyError, match="hex"):
            backup_temp_path("/data/brain.sqlite", token=bad_token)
        with pytest.raises(BrainCopyError, match="hex"):
            restore_temp_path("/data/brain.sqlite", token=bad_token)
    with pytest.raises(BrainCopyError):
        backup_temp_path("relative/brain.sqlite")


def test_quarantine_file_names_follow_sqlite_naming():
    assert quarantine_file_names("q1") == {"db": "q1.db", "wal": "q1.db-wal", "shm": "q1.db-shm",
                                           "journal": "q1.db-journal"}


# -- command lines ----------------------------------------------------------------

def test_backup_command_holds_one_read_transaction_in_wal_mode():
    argv = backup_argv("/data/brain.sqlite", "/data/brain-1-a.db", hold_read_transaction=True)
    assert argv[:4] == ["sqlite3", "-readonly", "-bail", "/data/brain.sqlite"]
    assert argv[4].startswith(".timeout ")
    assert argv[5:] == ["BEGIN", "SELECT 1 FROM sqlite_master LIMIT 1", ".backup '/data/brain-1-a.db'", "COMMIT"]


def test_backup_command_is_the_plain_documented_one_otherwise():
    argv = backup_argv("/data/brain.sqlite", "/data/with space.db", hold_read_transaction=False)
    assert argv[-1] == ".backup '/data/with space.db'" and "BEGIN" not in argv


def test_commands_refuse_paths_that_would_break_quoting():
    with pytest.raises(BrainCopyError):
        backup_argv("/data/brain.sqlite", "/data/x'; .shell rm -rf /", True)
    with pytest.raises(BrainCopyError):
        journal_mode_argv("/data/../brain")
    assert journal_mode_argv("/data/brain.sqlite")[-1] == "PRAGMA journal_mode"


@pytest.mark.parametrize("code, stderr, expected", [
    (127, 'exec: "sqlite3": executable file not found in $PATH', "no sqlite3 CLI"),
    (1, 'Error: unable to open database "/data/brain.sqlite": unable to open database file', "does not exist"),
    (26, "Error: in prepare, file is not a database (26)", "not a SQLite database"),
    (11, "Error: database disk image is malformed", "damaged"),
    (5, "Error: database is locked", "stayed locked"),
    (2, "something else", "exit code 2: something else"),
])
def test_sqlite_failures_are_explained(code, stderr, expected):
    text = explain_sqlite_failure(ExecOutput(["sqlite3"], code, "", stderr), "/data/brain.sqlite")
    assert expected in text


def test_exec_output_message_keeps_the_last_lines():
    out = ExecOutput(["x"], 3, "", "\n".join(f"line {i}" for i in range(10)))
    assert out.message() == "exit code 3: line 5; line 6; line 7; line 8; line 9" and not out.ok
    assert ExecOutput(["x"], 0, "", "").message() == "exit code 0: no output"


# -- tar: one member out ----------------------------------------------------------------

@pytest.mark.parametrize("chunk", [1, 511, 512, 4096, 10_000, 1 << 20])
def test_extract_single_member_streams_to_a_new_file(tmp_path, chunk):
    dest = str(tmp_path / "copy.db")
    got = extract_single_member(chunked(tar_bytes(regular()), chunk), dest, "brain-1.db", expected_size=len(PAYLOAD),
                                chunk_size=4096)
    with open(dest, "rb") as handle:
        assert handle.read() == PAYLOAD
    assert got.sha256 == hashlib.sha256(PAYLOAD).hexdigest() and got.size == len(PAYLOAD)
    assert (got.uid, got.gid, got.mode, got.path) == (1000, 1001, 0o640, dest)
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert got.to_dict()["mode"] == "0640"


def test_extract_single_member_can_only_hash(tmp_path):
    got = extract_single_member([tar_bytes(regular())], None, "brain-1.db")
    assert got.path is None and got.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert os.listdir(tmp_path) == []


def test_extract_accepts_an_empty_file_and_a_dot_slash_name(tmp_path):
    got = extract_single_member([tar_bytes(regular("./brain-1.db", b""))], str(tmp_path / "c"), "brain-1.db")
    assert got.size == 0 and got.sha256 == hashlib.sha256(b"").hexdigest()


def _refused(tmp_path, data: bytes, match: str, **kwargs) -> None:
    dest = str(tmp_path / "copy.db")
    with pytest.raises(BrainCopyError, match=match):
        extract_single_member(chunked(data, 777), dest, "brain-1.db", **kwargs)
    assert not os.path.exists(dest), "a refused archive must leave no file"


def test_extract_refuses_another_name_or_a_path(tmp_path):
    _refused(tmp_path, tar_bytes(regular("other.db")), "expected only the file")
    _refused(tmp_path, tar_bytes(regular("../brain-1.db")), "expected only the file")
    _refused(tmp_path, tar_bytes(regular("x/brain-1.db")), "expected only the file")


def test_extract_refuses_links_and_directories(tmp_path):
    link = tarfile.TarInfo("brain-1.db")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _refused(tmp_path, tar_bytes((link, None)), "a link")
    hard = tarfile.TarInfo("brain-1.db")
    hard.type, hard.linkname = tarfile.LNKTYPE, "other"
    _refused(tmp_path, tar_bytes((hard, None)), "a link")
    folder = tarfile.TarInfo("brain-1.db")
    folder.type = tarfile.DIRTYPE
    _refused(tmp_path, tar_bytes((folder, None)), "a directory")


def test_extract_refuses_a_second_member(tmp_path):
    _refused(tmp_path, tar_bytes(regular(), regular("extra", b"x")), "more than one entry")


def test_extract_refuses_empty_truncated_or_garbage_streams(tmp_path):
    _refused(tmp_path, b"", "not a valid tar stream|empty")
    _refused(tmp_path, b"\0" * 1024, "empty")
    whole = tar_bytes(regular())
    _refused(tmp_path, whole[:512 + 5000], "ended after|not a valid tar")
    _refused(tmp_path, os.urandom(4096), "not a valid tar stream")


def test_extract_refuses_a_size_other_than_docker_reported(tmp_path):
    _refused(tmp_path, tar_bytes(regular()), "announces", expected_size=len(PAYLOAD) + 1)


def test_extract_never_overwrites_nor_follows_a_link(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"keep")
    link = tmp_path / "copy.db"
    link.symlink_to(target)
    with pytest.raises(BrainCopyError, match="already exists"):
        extract_single_member([tar_bytes(regular())], str(link), "brain-1.db")
    assert target.read_bytes() == b"keep" and link.is_symlink()


def test_extract_refuses_a_bad_expected_name(tmp_path):
    with pytest.raises(BrainCopyError, match="plain file name"):
        extract_single_member([tar_bytes(regular())], str(tmp_path / "c"), "a/b")


def test_extract_stops_at_the_deadline(tmp_path):
    deadline = Deadline(0.05, "test copy")
    time.sleep(0.06)
    _refused(tmp_path, tar_bytes(regular()), "Timed out", deadline=deadline)


# -- tar: one file in ----------------------------------------------------------------

def test_tar_stream_round_trips_with_owner_and_mode(tmp_path):
    src = tmp_path / "snap.db"
    src.write_bytes(PAYLOAD)
    digest = hashlib.sha256()
    data = b"".join(tar_stream_for_file(str(src), ".brain.sqlite.restore-ab", Owner(999, 998, 0o640), digest=digest,
                                        chunk_size=1000))
    assert len(data) % tarfile.RECORDSIZE == 0
    assert digest.hexdigest() == hashlib.sha256(PAYLOAD).hexdigest()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [".brain.sqlite.restore-ab"]
        member = members[0]
        assert (member.uid, member.gid, member.mode, member.size) == (999, 998, 0o640, len(PAYLOAD))
        assert tar.extractfile(member).read() == PAYLOAD
    # And what goes in comes out through the extractor unchanged.
    got = extract_single_member(chunked(data, 333), None, ".brain.sqlite.restore-ab")
    assert got.sha256 == hashlib.sha256(PAYLOAD).hexdigest() and got.uid == 999


def test_tar_stream_of_an_empty_file(tmp_path):
    src = tmp_path / "empty"
    src.write_bytes(b"")
    data = b"".join(tar_stream_for_file(str(src), "e", Owner()))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert [(m.name, m.size, m.mode) for m in tar.getmembers()] == [("e", 0, 0o644)]


def test_tar_stream_refuses_a_file_that_changes_while_read(tmp_path):
    src = tmp_path / "snap.db"
    src.write_bytes(PAYLOAD)
    stream = tar_stream_for_file(str(src), "x", Owner(), chunk_size=4096)
    next(stream)  # header, size announced
    next(stream)
    with open(src, "r+b") as handle:
        handle.truncate(4096)
    with pytest.raises(BrainCopyError, match="shrank"):
        list(stream)
    src.write_bytes(PAYLOAD)
    stream = tar_stream_for_file(str(src), "x", Owner(), chunk_size=4096)
    next(stream)
    with open(src, "ab") as handle:
        handle.write(b"more")
    with pytest.raises(BrainCopyError, match="grew"):
        list(stream)


@pytest.mark.parametrize("arcname", ["", "a/b", "..", "."])
def test_tar_stream_refuses_member_names_with_paths(tmp_path, arcname):
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with pytest.raises(BrainCopyError, match="plain file name"):
        list(tar_stream_for_file(str(src), arcname, Owner()))


# -- deadlines ----------------------------------------------------------------

def test_deadline():
    deadline = Deadline(30, "a snapshot")
    deadline.check("copying")
    assert 29 < deadline.remaining() <= 30 and not deadline.expired()
    short = Deadline(0.01, "a snapshot")
    time.sleep(0.02)
    with pytest.raises(TransferTimeoutError, match=r"Timed out after 0.01 s while copying x \(a snapshot\)"):
        short.check("copying x")
    assert short.remaining() == 0
    with pytest.raises(BrainCopyError, match="positive"):
        Deadline(0)


# -- reading a quarantined brain without touching it ------------------------------------

def _wal_brain(path: str, rows: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE episodes (id INTEGER PRIMARY KEY, v TEXT)")
    conn.commit()
    conn.executemany("INSERT INTO episodes (v) VALUES (?)", [("x",)] * rows)
    conn.commit()
    return conn


def _digests(folder) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in sorted(os.listdir(folder))}


def test_readable_view_of_a_brain_with_a_wal_changes_nothing(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    conn = _wal_brain(str(live / "brain.sqlite"), 25)  # kept open: the rows are only in the -wal
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir()
    for suffix in ("", "-wal"):
        (quarantine / f"q.db{suffix}").write_bytes((live / f"brain.sqlite{suffix}").read_bytes())
    conn.close()
    before = _digests(quarantine)
    with readable_view(str(quarantine / "q.db")) as view:
        assert os.path.dirname(view) != str(quarantine)
        reader = sqlite3.connect(f"file:{view}?mode=ro", uri=True)
        assert reader.execute("SELECT count(*) FROM episodes").fetchone() == (25,)
        reader.close()
    assert _digests(quarantine) == before  # no -shm made there, no byte changed
    assert sorted(os.listdir(quarantine)) == ["q.db", "q.db-wal"]


def test_readable_view_without_a_wal_is_the_file_itself(tmp_path):
    path = tmp_path / "q.db"
    sqlite3.connect(str(path)).close()
    with readable_view(str(path)) as view:
        assert view == str(path)
    assert os.listdir(tmp_path) == ["q.db"]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_extract_applies_long_name_and_pax_headers(tmp_path, fmt):
    name = "brain-" + "n" * 150 + ".db"
    info = tarfile.TarInfo(name)
    info.uid, info.gid, info.mode, info.size = 3_000_000, 7, 0o600, len(PAYLOAD)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        tar.addfile(info, io.BytesIO(PAYLOAD))
    got = extract_single_member(chunked(buf.getvalue(), 1000), str(tmp_path / "c"), name)
    assert got.sha256 == hashlib.sha256(PAYLOAD).hexdigest() and got.uid == 3_000_000 and got.gid == 7


def test_extract_refuses_an_extension_header_without_its_entry(tmp_path):
    info = tarfile.TarInfo("brain-" + "n" * 150 + ".db")
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    extension = header[:-tarfile.BLOCKSIZE]  # the PAX header and its records, not the entry's own header
    _refused(tmp_path, extension + tarfile.NUL * 1024, "followed by the end")
    _refused(tmp_path, extension[:700], "ends inside a header")


def test_extract_refuses_a_header_with_a_bad_checksum(tmp_path):
    data = bytearray(tar_bytes(regular()))
    data[0] ^= 0x01  # the name changes, the stored checksum no longer matches
    _refused(tmp_path, bytes(data), "not a valid tar stream")


# -- the direct copy's decision --------------------------------------------------

def _volume(tmp_path, brain: str = "brain.sqlite", **mount):
    """A volume's mount point on this host holding a brain file, and its ``Mounts`` entry."""
    data = tmp_path / "volumes" / "engine-data-1" / "_data"
    data.mkdir(parents=True)
    (data / brain).write_bytes(b"SQLite format 3\x00" + b"\x00" * 84)
    entry = {"Type": "volume", "Name": "engine-data-1", "Driver": "local", "Source": str(data),
             "Destination": "/data", "RW": True}
    entry.update(mount)
    return data, entry


@pytest.mark.parametrize("host", ["unix:///var/run/docker.sock", "/var/run/docker.sock", "http+unix://%2Frun%2Fd.sock"])
def test_direct_on_a_local_socket_and_a_local_volume(tmp_path, host):
    data, mount = _volume(tmp_path)
    found = direct_source(host, mount, "/data/brain.sqlite")
    assert found.path == str(data / "brain.sqlite") and found.problem is None


def test_direct_with_a_bind_mount_and_a_nested_brain_path(tmp_path):
    data, mount = _volume(tmp_path, brain="brain.sqlite", Type="bind", Name=None, Driver=None, Destination="/srv/")
    (data / "sub").mkdir()
    (data / "sub" / "b.db").write_bytes(b"x")
    assert direct_source("unix:///d.sock", mount, "/srv/sub/b.db").path == str(data / "sub" / "b.db")
    # A single file bind-mounted as the brain.
    file_mount = {"Type": "bind", "Source": str(data / "brain.sqlite"), "Destination": "/data/brain.sqlite"}
    assert direct_source("unix:///d.sock", file_mount, "/data/brain.sqlite").path == str(data / "brain.sqlite")


@pytest.mark.parametrize("host, fragment", [
    ("tcp://127.0.0.1:2375", "reached at tcp://127.0.0.1:2375, not through a unix socket"),
    ("https://127.0.0.1:2376", "not through a unix socket on this host"),
    ("ssh://root@127.0.0.1", "ssh://root@127.0.0.1"),
])
def test_no_direct_copy_from_a_remote_daemon(tmp_path, host, fragment):
    _data, mount = _volume(tmp_path)
    found = direct_source(host, mount, "/data/brain.sqlite")
    assert found.path is None and fragment in found.problem


def test_no_direct_copy_with_another_driver_or_mount(tmp_path):
    _data, mount = _volume(tmp_path, Driver="rexray/ebs")
    found = direct_source("unix:///d.sock", mount, "/data/brain.sqlite")
    assert found.path is None and "volume driver 'rexray/ebs', not 'local'" in found.problem
    _data2, tmpfs = _volume(tmp_path / "t", Type="tmpfs")
    assert "mount of type 'tmpfs'" in direct_source("unix:///d.sock", tmpfs, "/data/brain.sqlite").problem
    assert "not on a volume or bind mount" in direct_source("unix:///d.sock", None, "/data/brain.sqlite").problem
    relative = dict(mount, Driver="local", Source="volumes/x")
    assert "no absolute mount point" in direct_source("unix:///d.sock", relative, "/data/brain.sqlite").problem


def test_no_direct_copy_when_this_host_does_not_see_the_brain(tmp_path):
    data, mount = _volume(tmp_path)
    elsewhere = dict(mount, Source=str(tmp_path / "vm-only" / "_data"))
    found = direct_source("unix:///d.sock", elsewhere, "/data/brain.sqlite")
    assert found.path is None and "does not exist on this host" in found.problem
    found = direct_source("unix:///d.sock", mount, "/data/other.sqlite")
    assert found.path is None and f"not a regular file at {data / 'other.sqlite'}" in found.problem
    (data / "dir.sqlite").mkdir()
    assert "not a regular file" in direct_source("unix:///d.sock", mount, "/data/dir.sqlite").problem


def test_no_direct_copy_through_a_symlink(tmp_path):
    data, mount = _volume(tmp_path)
    # Inside the container /data/link.sqlite -> /data/brain.sqlite; on this host that target is another path.
    os.symlink("/data/brain.sqlite", data / "link.sqlite")
    found = direct_source("unix:///d.sock", mount, "/data/link.sqlite")
    assert found.path is None and "symlink" in found.problem
    os.symlink("brain.sqlite", data / "relative.sqlite")
    assert "symlink" in direct_source("unix:///d.sock", mount, "/data/relative.sqlite").problem


@pytest.mark.skipif(os.geteuid() == 0, reason="root may read and write any file")
def test_no_direct_copy_without_read_and_write_access(tmp_path):
    data, mount = _volume(tmp_path)
    os.chmod(data / "brain.sqlite", 0o444)
    found = direct_source("unix:///d.sock", mount, "/data/brain.sqlite")
    assert found.path is None and f"uid {os.geteuid()}" in found.problem and "may not read and write" in found.problem


def test_direct_decision_refuses_a_bad_brain_path(tmp_path):
    _data, mount = _volume(tmp_path)
    with pytest.raises(BrainCopyError, match="brain path"):
        direct_source("unix:///d.sock", mount, "/data/../etc/passwd")
