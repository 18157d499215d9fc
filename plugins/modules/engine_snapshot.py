#!/usr/bin/python
# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: engine_snapshot
short_description: Take, verify, list, restore and prune snapshots of an Engine's brain
version_added: 0.1.0
description:
  - Manages file snapshots of the SQLite brain of one Engine, kept on the host the module runs on, one folder per
    Engine (O(snapshot_dir)/<name>), each snapshot a C(NAME.db) file and a C(NAME.json) manifest (engine, container,
    image, version, schema fingerprint, applied migrations, size, sha256, creation time, reason). Files are mode
    C(0600), folders C(0700).
  - O(state=present) takes an online backup of the brain into the snapshot folder, checks the copy with
    C(PRAGMA integrity_check), records its sha256 and writes the manifest. A damaged brain is refused. It copies the
    brain one of two ways (O(copy_method)), and RV(backup.copy_method) says which one it took.
  - V(direct) reads the brain straight from the volume's mount point on this host with SQLite's online backup API,
    writing the copy into the snapshot folder, and hashes the copy on disk. It needs the Docker daemon on this very
    host (a unix socket O(docker_host)), the brain on a volume of the C(local) driver or a bind mount, and that mount
    point readable and writable here (so in practice the module running as root).
  - V(archive) takes the Engine's documented online backup, C(sqlite3 BRAIN ".backup /data/brain-<epoch>.db"), inside
    a container that sees the brain, streams the copy out through the Docker API (C(get_archive), so a remote
    O(docker_host) works too), removes the temporary copy inside the container and checks the local copy against the
    stream's sha256. The container is the Engine's own (C(docker exec)) while it runs. When it does not run, a
    throwaway helper container of the Engine's own image with the Engine's volumes runs the very same commands and is
    removed afterwards.
  - Both ways copy a brain in WAL mode inside a single read transaction, one consistent state of the brain, so steady
    writes neither block the copy nor make it start over. Both keep the brain's journal mode flag in the copy.
  - O(state=verified) checks a snapshot against its manifest (size, sha256) and with C(PRAGMA integrity_check), and
    fails if it does not match.
  - O(state=restored) refuses while the Engine runs. It verifies the snapshot, copies the brain it replaces (with its
    C(-wal), C(-shm) and C(-journal) files) byte for byte into the quarantine folder and verifies the copies, uploads
    the snapshot beside the brain under a temporary name, checks the upload, removes the stale C(-wal), C(-shm) and
    C(-journal) files and renames the upload over the brain. It returns the lost-write account, per table the rows the
    replaced brain had beyond the snapshot. Quarantined brains are never removed by this module.
  - O(state=absent) removes one snapshot (O(snapshot)) or applies retention (O(keep)). Pre-upgrade snapshots younger
    than 7 days are kept unless O(force).
  - O(state=listed) returns the snapshots of the Engine with their manifests, newest first, and its quarantined brains.
  - O(state=verified), O(state=absent) and O(state=listed) only read and write files on this host; they do not need
    the Engine's container, so they also work after it was removed.
options:
  name:
    description:
      - Name of the Engine's container, for example V(engine-042). It also names the Engine's snapshot folder.
    type: str
    required: true
  state:
    description:
      - V(present) takes a snapshot, V(verified) checks one, V(restored) puts one back into the brain, V(absent)
        removes one or applies retention, V(listed) lists them (C(list) is not a valid state name for Ansible's
        module checks).
    type: str
    choices: [present, verified, restored, absent, listed]
    default: present
  snapshot:
    description:
      - Name of the snapshot, 1 to 128 letters, digits, C(.), C(_) and C(-), not starting with C(.) or C(-) and
        without C(..); it can never name a path outside the snapshot folder.
      - With O(state=present), by default a new name C(<name>_<UTC time>_<reason>_<version>). With an explicit name
        that already exists and verifies, nothing is done.
      - Required with O(state=verified) and O(state=restored). With O(state=absent), the one snapshot to remove
        (mutually exclusive with O(keep)).
    type: str
  snapshot_dir:
    description:
      - Folder holding the snapshots, on the host the module runs on. Each Engine has a subfolder named after it.
    type: path
    default: /var/lib/engineops/snapshots
  quarantine_dir:
    description:
      - Folder where a restore keeps the brain it replaced, with a subfolder per Engine.
      - By default the subfolder C(quarantine) of the Engine's snapshot folder, O(snapshot_dir)/<name>/quarantine.
    type: path
  reason:
    description:
      - Why the snapshot is taken, recorded in its manifest and its default name. Retention never removes a
        V(pre-upgrade) snapshot younger than 7 days unless O(force).
    type: str
    choices: [manual, pre-upgrade]
    default: manual
  keep:
    description:
      - With O(state=absent), keep this many newest snapshots of the Engine and remove the others (pre-upgrade
        snapshots younger than 7 days stay unless O(force)).
    type: int
  force:
    description:
      - With O(state=absent), also remove pre-upgrade snapshots younger than 7 days.
      - With O(state=present) and an explicit O(snapshot) that exists but does not verify, replace it.
      - With O(state=restored), restore a snapshot whose manifest names another Engine.
    type: bool
    default: false
  migrations_table:
    description:
      - Name of the table in which the Engine records applied migrations, used for the schema fingerprint.
      - The Engine's documentation does not name it; by default any table whose name contains C(migration) and has
        an id-like column is used.
    type: str
  timeout:
    description:
      - Seconds each Docker-side step (the backup inside the container, a transfer, an upload) may take in all, and
        the copy straight from the volume (RV(backup.copy_method=direct)) too.
    type: float
    default: 600
  copy_method:
    description:
      - How O(state=present) copies the brain out.
      - V(auto) copies it directly from the volume's mount point when this host can (see V(direct)), and otherwise
        through the Docker archive API; RV(backup.fallback_reason) then says why not directly.
      - V(direct) only directly, and fails before anything is written when the volume cannot be reached from this
        host (a remote or TCP O(docker_host), a volume driver other than C(local), a mount point missing here, or a
        user who may not read and write it).
      - V(archive) always through the Docker archive API (the container's C(.backup) and C(get_archive)).
    type: str
    choices: [auto, direct, archive]
    default: auto
extends_documentation_fragment:
  - engineops.fleet.engine
  - engineops.fleet.engine.actiongroup
attributes:
  check_mode:
    support: full
    description:
      - Reports what would be done (the snapshot name, the snapshots retention would remove, whether a restore would
        change the brain) and changes nothing.
      - A restore in check mode copies the current brain to a temporary folder to report the lost-write account, and
        removes that copy.
  diff_mode:
    support: full
    description: Shows the snapshot names before and after, or the brain's sha256 and fingerprint before and after a restore.
  idempotent:
    support: partial
    description: Changes nothing when the wanted state already holds, except for a new snapshot.
    details:
      - O(state=present) without O(snapshot) takes a new snapshot on every run; with an existing O(snapshot) that
        verifies it changes nothing.
      - O(state=restored) changes nothing when the brain already equals the snapshot (same sha256, no pending
        C(-wal) or C(-journal)).
notes:
  - The Engine's image must ship the C(sqlite3) CLI (its documentation promises it), and C(rm) and C(mv) for the
    clean-up and the rename.
  - The snapshot folder needs room for one more copy of the brain; with RV(backup.copy_method=archive), the
    brain's volume for a temporary one too.
seealso:
  - module: engineops.fleet.engine_info
author:
  - engineops.fleet contributors (@engineops)
"""

EXAMPLES = r"""
- name: Snapshot the brain before an upgrade
  engineops.fleet.engine_snapshot:
    name: engine-042
    reason: pre-upgrade
  register: pre_upgrade

- name: Check the snapshot before going on
  engineops.fleet.engine_snapshot:
    name: engine-042
    state: verified
    snapshot: "{{ pre_upgrade.snapshot.name }}"

- name: Roll the brain back (the Engine must be stopped)
  engineops.fleet.engine_snapshot:
    name: engine-042
    state: restored
    snapshot: "{{ pre_upgrade.snapshot.name }}"
  register: restore

- name: Report what the rollback lost
  ansible.builtin.debug:
    msg: "{{ restore.lost_writes.total }} rows lost; replaced brain kept in {{ restore.quarantine.path }}"

- name: Keep the 5 newest snapshots (young pre-upgrade ones stay)
  engineops.fleet.engine_snapshot:
    name: engine-042
    state: absent
    keep: 5

- name: List the snapshots
  engineops.fleet.engine_snapshot:
    name: engine-042
    state: listed
  register: snapshots
"""

RETURN = r"""
snapshot_dir:
  description: The Engine's snapshot folder.
  returned: always
  type: str
  sample: /var/lib/engineops/snapshots/engine-042
snapshot:
  description:
    - The snapshot's manifest and files. In check mode with O(state=present), only RV(snapshot.name) and
      RV(snapshot.path) of the snapshot that would be taken.
  returned: when state is present, verified or restored
  type: dict
  contains:
    name:
      description: Snapshot name.
      type: str
      sample: engine-042_20250310T120000Z_pre-upgrade_2.3.0
    engine:
      description: The Engine the snapshot was taken of.
      type: str
    container:
      description: Its container name.
      type: str
    image:
      description: The image the Engine ran.
      type: str
      sample: registry.example.com/september-engine:2.3.0
    version:
      description: The version from the image tag.
      type: str
      sample: 2.3.0
    fingerprint:
      description: Schema fingerprint of the snapshot.
      type: str
    migrations:
      description: Applied migrations recorded in the snapshot.
      type: list
      elements: str
    migrations_table:
      description: Table the migrations were read from.
      type: str
    size:
      description: Size of the snapshot file in bytes.
      type: int
    sha256:
      description: sha256 of the snapshot file.
      type: str
    created:
      description: When the backup started, UTC.
      type: str
      sample: "2025-03-10T12:00:00Z"
    reason:
      description: V(manual) or V(pre-upgrade).
      type: str
    file:
      description: File name of the snapshot in the snapshot folder.
      type: str
    schema_version:
      description: Version of the manifest format.
      type: int
    path:
      description: Path of the snapshot file.
      type: str
    manifest_path:
      description: Path of the manifest.
      type: str
backup:
  description: How the snapshot was taken.
  returned: when state is present and a snapshot was taken
  type: dict
  contains:
    copy_method:
      description: V(direct) (read from the volume's mount point on this host) or V(archive) (through the Docker
        archive API).
      type: str
      sample: direct
    method:
      description: V(direct), or with the archive path V(exec) (inside the running Engine) or V(helper) (a throwaway
        container, the Engine not running).
      type: str
    container_path:
      description: The temporary backup inside the container, removed afterwards (V(null) when direct).
      type: str
    host_path:
      description: The brain file read on this host (V(null) with the archive path).
      type: str
      sample: /var/lib/docker/volumes/engine-data-042/_data/brain.sqlite
    fallback_reason:
      description: With O(copy_method=auto) and the archive path, why the brain could not be copied directly;
        V(null) otherwise.
      type: str
      sample: the Docker daemon is reached at https://docker-7.example.com:2376, not through a unix socket on this host, so its
        volumes may be on another host
    seconds:
      description: Duration of the backup (C(backup)) and then, with the archive path, of the copy out (C(transfer)),
        or, direct, of hashing the copy (C(hash)).
      type: dict
integrity:
  description: The C(PRAGMA integrity_check) result of the new snapshot (C(path), C(ok), C(messages)).
  returned: when state is present and a snapshot was taken
  type: dict
swap:
  description: What the restore did inside the Engine's volume.
  returned: when state is restored and the brain was replaced
  type: dict
  contains:
    temp:
      description: The temporary name the snapshot was uploaded to, then renamed over the brain.
      type: str
    size:
      description: Size of the upload, read back before the rename.
      type: int
    sha256:
      description: sha256 of the upload, read back before the rename.
      type: str
    removed:
      description: The stale C(-wal), C(-shm) and C(-journal) paths removed before the rename.
      type: list
      elements: str
verify:
  description: The result of checking the snapshot against its manifest.
  returned: when state is verified or restored, or present with an existing O(snapshot)
  type: dict
  contains:
    ok:
      description: Whether the snapshot matches its manifest and passes C(PRAGMA integrity_check).
      type: bool
    reasons:
      description: What is wrong when not RV(verify.ok).
      type: list
      elements: str
    size:
      description: Size of the file found.
      type: int
    sha256:
      description: sha256 of the file found.
      type: str
    integrity:
      description: The C(PRAGMA integrity_check) result (C(ok), C(messages)).
      type: dict
brain:
  description: The Engine's brain before a restore.
  returned: when state is restored
  type: dict
  contains:
    path:
      description: The brain's path inside the container.
      type: str
    sha256:
      description: sha256 of the brain before the restore.
      type: str
    size:
      description: Its size in bytes.
      type: int
    fingerprint:
      description: Its schema fingerprint (V(null) if it could not be read, see RV(brain.fingerprint_error)).
      type: str
    migrations:
      description: Its applied migrations.
      type: list
      elements: str
    fingerprint_error:
      description: Why the replaced brain could not be read.
      type: str
lost_writes:
  description:
    - Per table, the rows the replaced brain had beyond the snapshot (what the restore loses; it stays readable in the
      quarantine). V(null) when the replaced brain could not be read (RV(lost_writes_error)) or was already the
      snapshot.
  returned: when state is restored
  type: dict
  contains:
    total:
      description: Rows lost over all tables.
      type: int
    tables:
      description: Per table, C(rows) lost, the C(method) used to match rows (V(primary_key), V(rowid), V(count) or
        V(new_table)), C(replaced_rows) and C(snapshot_rows).
      type: dict
    snapshot_only_tables:
      description: Tables the snapshot has and the replaced brain did not.
      type: list
      elements: str
  sample:
    total: 12
    tables:
      episodes: {rows: 4, method: primary_key, replaced_rows: 204, snapshot_rows: 200}
      feedback: {rows: 4, method: new_table, replaced_rows: 4, snapshot_rows: null}
    snapshot_only_tables: []
lost_writes_error:
  description: Why no lost-write account could be made.
  returned: when state is restored and the account failed
  type: str
quarantine:
  description: Where the replaced brain was kept (never removed by this module).
  returned: when state is restored and the brain was replaced
  type: dict
  contains:
    name:
      description: Name of the quarantined brain.
      type: str
    path:
      description: Its database file.
      type: str
    manifest_path:
      description: Its manifest (reason V(quarantine), with the sha256 of every file and the lost-write account).
      type: str
    files:
      description: Per kind (C(db), C(wal), C(shm), C(journal)), the file kept, its size and sha256.
      type: dict
snapshots:
  description: The Engine's snapshots, newest first, each its manifest plus C(path), C(manifest_path) and C(protected)
    (a pre-upgrade snapshot younger than 7 days).
  returned: when state is listed
  type: list
  elements: dict
quarantined:
  description: The Engine's quarantined brains, newest first, as their manifests plus C(path).
  returned: when state is listed
  type: list
  elements: dict
skipped:
  description: Manifests that could not be read, each C(file) and C(reason).
  returned: when state is listed or absent
  type: list
  elements: dict
removed:
  description: Names of the snapshots removed (or, in check mode, that would be).
  returned: when state is absent
  type: list
  elements: str
kept:
  description: With O(keep), the snapshots kept and why.
  returned: when state is absent
  type: list
  elements: dict
"""

import os
import tempfile

from ansible_collections.engineops.fleet.plugins.module_utils._brain import (
    BrainError,
    integrity_check,
    lost_write_account,
    schema_fingerprint,
)
from ansible_collections.engineops.fleet.plugins.module_utils._brain_copy import (
    COPY_METHODS,
    BrainCopyError,
    BrainTransfer,
    Deadline,
    Owner,
    fsync_dir,
    quarantine_file_names,
    readable_view,
    remove_quietly,
)
from ansible_collections.engineops.fleet.plugins.module_utils._common import EngineModule
from ansible_collections.engineops.fleet.plugins.module_utils._docker import EngineDockerError
from ansible_collections.engineops.fleet.plugins.module_utils._snapshot import (
    DEFAULT_PRE_UPGRADE_MIN_AGE,
    DEFAULT_SNAPSHOT_DIR,
    REASON_PRE_UPGRADE,
    REASON_QUARANTINE,
    Manifest,
    SnapshotError,
    format_utc,
    list_snapshots,
    make_snapshot_name,
    plan_retention,
    read_manifest,
    snapshot_paths,
    utc_now,
    validate_snapshot_name,
    verify_snapshot,
    write_json_atomic,
    write_manifest,
)

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "state": {"type": "str", "default": "present", "choices": ["present", "verified", "restored", "absent", "listed"]},
    "snapshot": {"type": "str"},
    "snapshot_dir": {"type": "path", "default": DEFAULT_SNAPSHOT_DIR},
    "quarantine_dir": {"type": "path"},
    "reason": {"type": "str", "default": "manual", "choices": ["manual", "pre-upgrade"]},
    "keep": {"type": "int"},
    "force": {"type": "bool", "default": False},
    "migrations_table": {"type": "str"},
    "timeout": {"type": "float", "default": 600.0},
    "copy_method": {"type": "str", "default": "auto", "choices": list(COPY_METHODS)},
}


def _names(manifests) -> list[str]:
    return sorted(m.name for m in manifests)


class SnapshotManager:
    """One Engine's snapshots: the module's states on top of ``_snapshot``, ``_brain`` and ``_brain_copy``."""

    def __init__(self, em: EngineModule) -> None:
        self.em = em
        self.params = em.params
        self.engine = self.params["name"]
        self.state = self.params["state"]
        self.result: dict = {"changed": False}
        self._validate()
        self.folder = os.path.join(self.params["snapshot_dir"], self.engine)
        if self.params["quarantine_dir"]:
            self.quarantine_folder = os.path.join(self.params["quarantine_dir"], self.engine)
        else:
            self.quarantine_folder = os.path.join(self.folder, "quarantine")
        self.result["snapshot_dir"] = self.folder

    # -- input ------------------------------------------------------------------

    def _validate(self) -> None:
        """Every check on the input that needs no Docker, before anything is read or touched."""
        p = self.params
        try:
            validate_snapshot_name(self.engine)
        except SnapshotError as exc:
            self.fail(f"Engine name {self.engine!r} cannot name a snapshot folder: {exc}; give the container's name "
                      "as docker ps shows it, e.g. engine-042")
        if p["snapshot"] is not None:
            try:
                validate_snapshot_name(p["snapshot"])
            except SnapshotError as exc:
                self.fail(f"Cannot use snapshot name {p['snapshot']!r} for {self.engine}: {exc}")
        if self.state in ("verified", "restored") and p["snapshot"] is None:
            self.fail(f"state={self.state} needs the snapshot option: the name of one snapshot of {self.engine} "
                      "(state=listed shows them)")
        if self.state == "absent":
            if p["snapshot"] is None and p["keep"] is None:
                self.fail(f"state=absent needs either snapshot (one snapshot of {self.engine} to remove) or keep "
                          "(how many of the newest to keep)")
            if p["snapshot"] is not None and p["keep"] is not None:
                self.fail("state=absent takes snapshot or keep, not both")
        if p["keep"] is not None and p["keep"] < 0:
            self.fail(f"keep={p['keep']} is invalid: it must be 0 or more (the number of newest snapshots to keep)")
        if p["timeout"] <= 0:
            self.fail(f"timeout={p['timeout']:g} is invalid: it must be a positive number of seconds")
        for option in ("snapshot_dir", "quarantine_dir"):
            path = p[option]
            if path is not None and os.path.exists(path) and not os.path.isdir(path):
                self.fail(f"{option} {path!r} exists and is not a directory; give a directory for the snapshots of "
                          f"{self.engine}")

    def fail(self, msg: str, **extra) -> None:
        self.result.update(extra)
        self.em.fail(msg, **self.result)

    # -- shared -----------------------------------------------------------------

    def facts(self, doing: str):
        """The Engine container's facts; fails naming ``doing`` when the daemon or the container is not there."""
        try:
            return self.em.docker.facts(self.engine)
        except EngineDockerError as exc:
            self.fail(f"Cannot {doing}: {exc}")
            raise  # unreachable

    def transfer(self) -> BrainTransfer:
        return BrainTransfer(self.em.docker, timeout=self.params["timeout"])

    def snapshot_dict(self, manifest: Manifest, folder: str | None = None) -> dict:
        paths = snapshot_paths(folder or self.folder, manifest.name)
        data = manifest.to_dict()
        data.update(path=paths.db, manifest_path=paths.manifest)
        return data

    def existing(self):
        try:
            return list_snapshots(self.folder)
        except SnapshotError as exc:
            self.fail(f"Cannot list the snapshots of {self.engine} in {self.folder}: {exc}")
            raise  # unreachable

    def paths_of(self, name: str, doing: str):
        try:
            return snapshot_paths(self.folder, name)
        except SnapshotError as exc:
            self.fail(f"Cannot {doing} snapshot {name!r} of {self.engine}: {exc}")
            raise  # unreachable

    def require_snapshot(self, name: str, doing: str):
        paths = self.paths_of(name, doing)
        if not os.path.exists(paths.db) and not os.path.exists(paths.manifest):
            known = ", ".join(_names(self.existing())) or "none"
            self.fail(f"Cannot {doing} snapshot {name!r} of {self.engine}: there is no such snapshot in "
                      f"{self.folder}; snapshots there: {known}")
        return paths

    def make_dirs(self, path: str) -> None:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            self.fail(f"Cannot create the snapshot folder {path!r} for {self.engine}: {exc.strerror or exc}")

    @staticmethod
    def protected(manifest: Manifest, now) -> bool:
        return manifest.reason == REASON_PRE_UPGRADE and now - manifest.created < DEFAULT_PRE_UPGRADE_MIN_AGE

    def set_diff(self, before: dict, after: dict) -> None:
        if self.em.diff_mode:
            self.result["diff"] = {"before": before, "after": after}

    # -- present ------------------------------------------------------------------

    def new_name(self, facts, created) -> str:
        base = make_snapshot_name(self.engine, self.params["reason"], created=created, version=facts.version)
        name, counter = base, 1
        while True:
            paths = self.paths_of(name, "name")
            if not os.path.lexists(paths.db) and not os.path.lexists(paths.manifest):
                return name
            counter += 1
            name = validate_snapshot_name(f"{base[:120]}-{counter}")

    def direct_source(self, transfer: BrainTransfer, facts, name: str):
        """Where to copy the brain from directly, per O(copy_method); ``None`` for the archive path."""
        method = self.params["copy_method"]
        if method == "archive":
            return None
        try:
            direct = transfer.direct_source(facts)
        except BrainCopyError as exc:
            self.fail(f"Cannot take snapshot {name!r} of {self.engine}: {exc}")
        if method == "direct" and direct.path is None:
            self.fail(f"Cannot take snapshot {name!r} of {self.engine} with copy_method=direct: {direct.problem}; use "
                      "copy_method=auto (it falls back to the Docker archive API) or archive")
        return direct

    def present(self) -> None:
        p = self.params
        facts = self.facts(f"take a snapshot of {self.engine}")
        before = _names(self.existing())
        name = p["snapshot"]
        created = utc_now()
        if name is not None:
            paths = self.paths_of(name, "take")
            if os.path.lexists(paths.db) or os.path.lexists(paths.manifest):
                check = verify_snapshot(self.folder, name)
                self.result["verify"] = check.to_dict()
                if check.ok:
                    self.result["snapshot"] = self.snapshot_dict(check.manifest)
                    self.set_diff({"snapshots": before}, {"snapshots": before})
                    return
                if not p["force"]:
                    self.fail(f"Cannot take snapshot {name!r} of {self.engine}: a snapshot of that name exists in "
                              f"{self.folder} and does not verify ({'; '.join(check.reasons)}); remove it "
                              "(state=absent), choose another name, or set force to replace it")
        else:
            name = self.new_name(facts, created)
        paths = self.paths_of(name, "take")
        transfer = self.transfer()
        direct = self.direct_source(transfer, facts, name)
        after = sorted(set(before) | {name})
        self.result.update(changed=True, snapshot={"name": name, "path": paths.db, "manifest_path": paths.manifest})
        self.set_diff({"snapshots": before}, {"snapshots": after})
        if self.em.check_mode:
            return
        self.make_dirs(self.folder)
        partial = os.path.join(paths.directory, f".{name}.db.partial")
        remove_quietly(partial)
        try:
            copy = transfer.snapshot_to(facts, partial, direct=direct)
        except BrainCopyError as exc:
            self.result["changed"] = False
            self.fail(f"Cannot take snapshot {name!r} of {self.engine}: {exc}")
        for warning in copy.warnings:
            self.em.module.warn(warning)
        self.result["backup"] = {key: value for key, value in copy.to_dict().items() if key not in ("file", "warnings")}
        try:
            integrity = integrity_check(partial)
            if not integrity.ok:
                raise BrainError(
                    "the copy fails PRAGMA integrity_check (" + "; ".join(integrity.messages[:5]) + "): the brain "
                    "itself is damaged; no snapshot was kept. Restore an earlier snapshot, or repair the brain")
            fingerprint = schema_fingerprint(partial, migrations_table=p["migrations_table"])
        except BrainError as exc:
            remove_quietly(partial)
            self.result["changed"] = False
            self.fail(f"Cannot take snapshot {name!r} of {self.engine}: {exc}")
        manifest = Manifest(
            name=name, engine=self.engine, fingerprint=fingerprint.fingerprint, size=copy.file.size,
            sha256=copy.file.sha256, created=created, reason=p["reason"], file=os.path.basename(paths.db),
            container=facts.name, image=facts.image, version=facts.version, migrations=fingerprint.migrations,
            migrations_table=fingerprint.migrations_table,
        )
        try:
            os.replace(partial, paths.db)
            fsync_dir(paths.directory)
            write_manifest(self.folder, manifest)
        except (OSError, SnapshotError) as exc:
            remove_quietly(partial)
            self.fail(f"Cannot store snapshot {name!r} of {self.engine} in {self.folder}: {exc}")
        self.result["snapshot"] = self.snapshot_dict(manifest)
        self.result["integrity"] = integrity.to_dict()

    # -- verified -----------------------------------------------------------------

    def verified(self) -> None:
        name = self.params["snapshot"]
        self.require_snapshot(name, "verify")
        check = verify_snapshot(self.folder, name)
        self.result["verify"] = check.to_dict()
        if check.manifest is not None:
            self.result["snapshot"] = self.snapshot_dict(check.manifest)
        if not check.ok:
            self.fail(f"Snapshot {name!r} of {self.engine} does not verify: {'; '.join(check.reasons)}")
        if check.manifest.engine != self.engine:
            self.em.module.warn(f"Snapshot {name!r} in the folder of {self.engine} was taken of {check.manifest.engine}")

    # -- restored -----------------------------------------------------------------

    def analyse(self, db_copy: str, snapshot_db: str) -> tuple[dict, dict | None, str | None]:
        """Fingerprint of a copied brain and its lost-write account against the snapshot."""
        info: dict = {"fingerprint": None, "migrations": []}
        account, error = None, None
        with readable_view(db_copy) as view:
            try:
                fp = schema_fingerprint(view, migrations_table=self.params["migrations_table"])
                info.update(fingerprint=fp.fingerprint, migrations=fp.migrations)
            except BrainError as exc:
                info["fingerprint_error"] = str(exc)
            try:
                account = lost_write_account(view, snapshot_db).to_dict()
            except BrainError as exc:
                error = f"Cannot count the writes the restore loses: {exc}"
        return info, account, error

    def restored(self) -> None:
        p = self.params
        name = p["snapshot"]
        doing = f"restore snapshot {name!r} into {self.engine}"
        paths = self.require_snapshot(name, "restore")
        facts = self.facts(doing)
        if facts.running or facts.restarting or facts.state == "paused":
            self.fail(f"Cannot restore snapshot {name!r} into {self.engine}: the engine is {facts.state}; drain and "
                      f"stop it first (engineops.fleet.engine_drain, or docker stop {self.engine}), then restore")
        check = verify_snapshot(self.folder, name)
        self.result["verify"] = check.to_dict()
        if not check.ok:
            self.fail(f"Cannot {doing}: the snapshot does not verify: {'; '.join(check.reasons)}")
        manifest = check.manifest
        self.result["snapshot"] = self.snapshot_dict(manifest)
        if manifest.engine != self.engine and not p["force"]:
            self.fail(f"Cannot {doing}: the snapshot was taken of {manifest.engine}, not {self.engine}; set force "
                      "to restore it anyway")
        transfer = self.transfer()
        brain = facts.brain_path
        try:
            container = self.em.docker.container(self.engine)
            deadline = transfer.deadline(doing)
            current = transfer.stat(container, brain)
            companions = {kind: transfer.stat(container, f"{brain}-{kind}") for kind in ("wal", "journal")}
            pending = [kind for kind, st in companions.items() if st is not None and st.get("size", 1) > 0]
            self.result["brain"] = {"path": brain, "sha256": None, "size": None if current is None else current.get("size")}
            if current is not None and current.get("size") == manifest.size and not pending:
                same = transfer.fetch(container, brain, None, deadline)
                self.result["brain"]["sha256"] = same.sha256
                if same.sha256 == manifest.sha256:
                    self.result.update(lost_writes={"total": 0, "tables": {}, "snapshot_only_tables": []})
                    self.result["brain"].update(fingerprint=manifest.fingerprint, migrations=list(manifest.migrations))
                    after = self.brain_state(manifest)
                    self.set_diff(after, after)
                    return
        except (BrainCopyError, EngineDockerError) as exc:
            self.fail(f"Cannot {doing}: {exc}")
        self.result["changed"] = True
        if self.em.check_mode:
            self.preview(transfer, container, brain, paths.db, manifest)
            return
        self.make_dirs(self.quarantine_folder)
        owner = Owner()
        quarantine = None
        if current is not None:
            quarantine = self.quarantine(transfer, container, facts, brain, paths.db, manifest)
            db = quarantine["files"]["db"]
            owner = Owner(uid=db["uid"], gid=db["gid"], mode=int(db["mode"], 8) & 0o7777)
        else:
            self.result.update(lost_writes=None, lost_writes_error=f"{self.engine} had no brain at {brain}")

        def still_stopped() -> str | None:
            now = self.em.docker.facts(self.engine)
            if now.running or now.restarting:
                return (f"the engine was started ({now.state}) during the restore; the brain was not replaced and "
                        "the upload was removed")
            return None

        try:
            with transfer.helper(facts) as helper:
                swap = transfer.swap_in(helper, brain, paths.db, manifest.sha256, owner,
                                        Deadline(p["timeout"], doing), still_stopped=still_stopped)
                landed = transfer.stat(helper, brain)
        except (BrainCopyError, EngineDockerError) as exc:
            kept = f" The replaced brain is kept in {quarantine['path']}." if quarantine else ""
            self.fail(f"Cannot {doing}: {exc}.{kept}")
        if landed is None or landed.get("size") != manifest.size:
            self.fail(f"Cannot {doing}: after the rename {brain} has {None if landed is None else landed.get('size')} "
                      f"bytes, the snapshot {manifest.size}; the replaced brain is kept in "
                      f"{quarantine['path'] if quarantine else 'nowhere (there was none)'}")
        self.result["swap"] = swap

    def brain_state(self, manifest: Manifest | None = None, info: dict | None = None) -> dict:
        if manifest is not None:
            return {"brain": {"sha256": manifest.sha256, "size": manifest.size, "fingerprint": manifest.fingerprint,
                              "migrations": list(manifest.migrations)}}
        info = info or {}
        return {"brain": {key: info.get(key) for key in ("sha256", "size", "fingerprint", "migrations")}}

    def preview(self, transfer: BrainTransfer, container, brain: str, snapshot_db: str, manifest: Manifest) -> None:
        """Check mode: copy the current brain to a temporary folder, account for the lost writes, remove the copy."""
        if self.result["brain"]["size"] is None:
            self.result.update(lost_writes=None, lost_writes_error=f"{self.engine} has no brain at {brain}")
            self.set_diff(self.brain_state(info={}), self.brain_state(manifest))
            return
        parent = self.folder if os.path.isdir(self.folder) else None
        with tempfile.TemporaryDirectory(prefix=".restore-preview-", dir=parent) as scratch:
            try:
                copies = transfer.copy_brain_files(container, brain, scratch, "brain",
                                                   transfer.deadline(f"check-mode preview of the restore of {self.engine}"))
            except BrainCopyError as exc:
                self.fail(f"Cannot restore snapshot {manifest.name!r} into {self.engine}: {exc}")
            info, account, error = self.analyse(copies["db"].path, snapshot_db)
        info.update(path=brain, sha256=copies["db"].sha256, size=copies["db"].size)
        self.result["brain"] = info
        self.result["lost_writes"] = account
        if error:
            self.result["lost_writes_error"] = error
        self.set_diff(self.brain_state(info=info), self.brain_state(manifest))

    def quarantine(self, transfer: BrainTransfer, container, facts, brain: str, snapshot_db: str,
                   manifest: Manifest) -> dict:
        """Copy the brain about to be replaced (and its companions) into the quarantine, verified; account for it."""
        created = utc_now()
        base = make_snapshot_name(self.engine, REASON_QUARANTINE, created=created, version=facts.version)
        qname, counter = base, 1
        while any(os.path.lexists(os.path.join(self.quarantine_folder, f))
                  for f in list(quarantine_file_names(qname).values()) + [f"{qname}.json"]):
            counter += 1
            qname = validate_snapshot_name(f"{base[:120]}-{counter}")
        try:
            qpaths = snapshot_paths(self.quarantine_folder, qname)
            copies = transfer.copy_brain_files(container, brain, qpaths.directory, qname,
                                               transfer.deadline(f"quarantine of the brain of {self.engine}"))
        except (BrainCopyError, SnapshotError) as exc:
            self.fail(f"Cannot restore snapshot {manifest.name!r} into {self.engine}: the brain to replace could not "
                      f"be copied to the quarantine {self.quarantine_folder}, so nothing was replaced: {exc}")
        info, account, error = self.analyse(copies["db"].path, snapshot_db)
        info.update(path=brain, sha256=copies["db"].sha256, size=copies["db"].size)
        files = {kind: {"file": os.path.basename(c.path), "path": c.path, "size": c.size, "sha256": c.sha256,
                        "mode": f"{c.mode:04o}", "uid": c.uid, "gid": c.gid} for kind, c in copies.items()}
        record = Manifest(
            name=qname, engine=self.engine, fingerprint=info.get("fingerprint") or "unreadable",
            size=copies["db"].size, sha256=copies["db"].sha256, created=created, reason=REASON_QUARANTINE,
            file=os.path.basename(qpaths.db), container=facts.name, image=facts.image, version=facts.version,
            migrations=info.get("migrations") or [],
        ).to_dict()
        record.update(files=files, replaced_by=manifest.name, lost_writes=account, lost_writes_error=error,
                      fingerprint_error=info.get("fingerprint_error"))
        try:
            write_json_atomic(qpaths.manifest, record, mode=0o600)
        except OSError as exc:
            self.fail(f"Cannot restore snapshot {manifest.name!r} into {self.engine}: cannot write the quarantine "
                      f"manifest {qpaths.manifest}, so nothing was replaced: {exc}")
        quarantine = {"name": qname, "path": qpaths.db, "manifest_path": qpaths.manifest, "files": files}
        self.result.update(brain=info, lost_writes=account, quarantine=quarantine)
        if error:
            self.result["lost_writes_error"] = error
        self.set_diff(self.brain_state(info=info), self.brain_state(manifest))
        return quarantine

    # -- absent -------------------------------------------------------------------

    def remove(self, name: str) -> None:
        paths = self.paths_of(name, "remove")
        try:
            remove_quietly(paths.db)
            remove_quietly(paths.manifest)
        except OSError as exc:
            self.fail(f"Cannot remove snapshot {name!r} of {self.engine} from {self.folder}: {exc}",
                      removed=self.result.get("removed"))

    def absent(self) -> None:
        p = self.params
        snapshots = self.existing()
        before = _names(snapshots)
        self.result["skipped"] = [{"file": f, "reason": r} for f, r in snapshots.skipped]
        now = utc_now()
        if p["snapshot"] is not None:
            name = p["snapshot"]
            paths = self.paths_of(name, "remove")
            removed, kept = [], []
            if os.path.lexists(paths.db) or os.path.lexists(paths.manifest):
                try:
                    manifest = read_manifest(self.folder, name)
                except SnapshotError:
                    manifest = None
                if manifest is not None and self.protected(manifest, now) and not p["force"]:
                    self.fail(f"Cannot remove snapshot {name!r} of {self.engine}: it is a pre-upgrade snapshot younger "
                              f"than {DEFAULT_PRE_UPGRADE_MIN_AGE.days} days (created {format_utc(manifest.created)}); "
                              "set force to remove it")
                removed = [name]
        else:
            plan = plan_retention(list(snapshots), p["keep"], now=now, force=p["force"])
            removed = [d.name for d in plan.remove]
            kept = [d.to_dict() for d in plan.keep]
        self.result.update(changed=bool(removed), removed=removed, kept=kept)
        self.set_diff({"snapshots": before}, {"snapshots": [n for n in before if n not in removed]})
        if self.em.check_mode:
            return
        done = []
        for name in removed:
            self.result["removed"] = done
            self.remove(name)
            done.append(name)
        self.result["removed"] = done

    # -- list ---------------------------------------------------------------------

    def listing(self) -> None:
        now = utc_now()
        snapshots = self.existing()
        self.result["snapshots"] = [dict(self.snapshot_dict(m), protected=self.protected(m, now)) for m in snapshots]
        skipped = [{"file": f, "reason": r} for f, r in snapshots.skipped]
        quarantined = []
        try:
            found = list_snapshots(self.quarantine_folder)
        except SnapshotError as exc:
            self.em.module.warn(f"Cannot list the quarantine {self.quarantine_folder} of {self.engine}: {exc}")
        else:
            quarantined = [self.snapshot_dict(m, self.quarantine_folder) for m in found]
            skipped += [{"file": os.path.join("quarantine", f), "reason": r} for f, r in found.skipped]
        self.result.update(quarantined=quarantined, skipped=skipped)

    def run(self) -> dict:
        {"present": self.present, "verified": self.verified, "restored": self.restored,
         "absent": self.absent, "listed": self.listing}[self.state]()
        return self.result


def main() -> None:
    em = EngineModule(ARGUMENT_SPEC, needs_http=False, supports_check_mode=True)
    em.exit(**SnapshotManager(em).run())


if __name__ == "__main__":
    main()
