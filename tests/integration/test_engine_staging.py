# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""engine_staging against real containers of the reference Engine, through the ansible CLI."""
from __future__ import annotations

import os

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._brain import row_counts
from ansible_collections.engineops.fleet.plugins.module_utils._brain_copy import readable_view
from ansible_collections.engineops.fleet.plugins.module_utils._staging import STAGING_LABEL, STAGING_SNAPSHOT_LABEL
from tests.integration.test_engine_snapshot import failed, ok
from tests.testbed.images import image_ref

MODULE = "engine_staging"
MAJOR_ENV = {"LLM_EMBEDDING_MODEL": "text-embedding-3-small"}


@pytest.fixture
def staged(docker_client):
    """Engines whose staging copies the test may leave; their containers and volumes are removed afterwards."""
    engines: list[str] = []
    yield engines
    for engine in engines:
        label = {"label": f"{STAGING_LABEL}={engine}"}
        for container in docker_client.containers.list(all=True, filters=label):
            container.remove(force=True)
        for volume in docker_client.volumes.list(filters=label):
            volume.remove(force=True)


def staging_left(docker_client, engine) -> tuple[list, list]:
    label = {"label": f"{STAGING_LABEL}={engine.name}"}
    return docker_client.containers.list(all=True, filters=label), docker_client.volumes.list(filters=label)


def take_snapshot(run_module, engine, snapdir: str, name: str = "stage") -> dict:
    result = ok(run_module("engine_snapshot", {"name": engine.name, "snapshot_dir": snapdir, "snapshot": name}))
    return result["snapshot"]


def brain_rows(docker_client, volume: str) -> dict[str, int]:
    mountpoint = docker_client.volumes.get(volume).attrs["Mountpoint"]
    with readable_view(os.path.join(mountpoint, "brain.sqlite")) as view:
        return row_counts(view)


def prod_state(fleet, engine) -> tuple:
    attrs = fleet.container(engine).attrs
    return attrs["Id"], attrs["Config"]["Image"], attrs["State"]["StartedAt"], attrs["State"]["Running"]


def test_present_stages_the_major_on_a_copy_of_the_brain_and_absent_removes_it(
        make_fleet, run_module, docker_client, tmp_path, staged):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    staged.append(engine.name)
    snapdir = str(tmp_path / "snapshots")
    snap = take_snapshot(run_module, engine, snapdir)
    major = image_ref("major")
    args = {"name": engine.name, "image": major, "snapshot": snap["name"], "snapshot_dir": snapdir, "env": MAJOR_ENV}
    before = prod_state(fleet, engine)
    staging_name = f"{engine.name}-staging"

    # Check mode: says what it would create, creates nothing.
    preview = ok(run_module(MODULE, args, check=True, diff=True))
    assert preview["changed"] is True
    assert preview["staging"]["name"] == staging_name
    assert preview["staging"]["image"] == major
    assert preview["staging"]["volume"] == f"{staging_name}-data"
    assert any("create container" in a for a in preview["actions"])
    assert staging_left(docker_client, engine) == ([], [])

    # For real.
    result = ok(run_module(MODULE, args, diff=True))
    assert result["changed"] is True
    staging = result["staging"]
    assert staging["name"] == staging_name and staging["running"] is True
    assert staging["image"] == major and staging["engine"] == engine.name and staging["snapshot"] == snap["name"]
    assert staging["url"].startswith("http://127.0.0.1:") and staging["url"] != engine.url
    assert "LLM_EMBEDDING_MODEL" in staging["env_names"]
    assert engine.key not in result["_stdout"] and MAJOR_ENV["LLM_EMBEDDING_MODEL"] not in result["_stdout"]
    assert snap["sha256"] in " ".join(result["actions"])

    container = docker_client.containers.get(staging_name)
    assert container.id == staging["id"]
    host = container.attrs["HostConfig"]
    assert host["RestartPolicy"]["Name"] in ("no", "")
    assert host["PortBindings"] == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert container.labels[STAGING_LABEL] == engine.name
    assert container.labels[STAGING_SNAPSHOT_LABEL] == snap["name"]
    mounts = {m["Destination"]: m.get("Name") for m in container.attrs["Mounts"]}
    assert mounts == {"/data": staging["volume"]}
    assert docker_client.volumes.get(staging["volume"]).attrs["Labels"][STAGING_LABEL] == engine.name

    # The staging Engine becomes healthy on the major release, on the production brain migrated forward.
    health = ok(run_module("engine_health", {"name": staging_name, "engine_url": staging["url"], "timeout": 90}))
    assert health["ready"] is True
    snap_rows = row_counts(os.path.join(snapdir, engine.name, snap["name"] + ".db"))
    staged_rows = brain_rows(docker_client, staging["volume"])
    assert sum(snap_rows.values()) > 0
    for table, rows in snap_rows.items():
        assert staged_rows.get(table, 0) >= rows, (table, rows, staged_rows)
    assert set(staged_rows) > set(snap_rows)  # the major's migrations ran on the copy

    # Production untouched: same container, same image, never restarted, still healthy.
    assert prod_state(fleet, engine) == before
    assert ok(run_module("engine_health", {"name": engine.name, "timeout": 30}))["ready"] is True

    # Idempotent.
    again = ok(run_module(MODULE, args))
    assert again["changed"] is False
    assert again["staging"]["id"] == staging["id"] and again["staging"]["url"] == staging["url"]

    # Absent: check mode removes nothing, then both go, then nothing to do.
    absent = {"name": engine.name, "state": "absent"}
    preview = ok(run_module(MODULE, absent, check=True))
    assert preview["changed"] is True
    assert len(staging_left(docker_client, engine)[0]) == 1
    gone = ok(run_module(MODULE, absent, diff=True))
    assert gone["changed"] is True
    assert gone["actions"] == [f"removed container {staging_name}", f"removed volume {staging['volume']}"]
    assert staging_left(docker_client, engine) == ([], [])
    assert ok(run_module(MODULE, absent))["changed"] is False
    assert prod_state(fleet, engine) == before


def test_a_production_container_is_never_taken_for_a_staging_engine(make_fleet, run_module, docker_client, tmp_path,
                                                                    staged):
    fleet = make_fleet(2)
    engine, other = fleet.engines
    staged.append(engine.name)
    snapdir = str(tmp_path / "snapshots")
    snap = take_snapshot(run_module, engine, snapdir)
    before = prod_state(fleet, other)

    # absent refuses a container without the staging label, naming it.
    failed(run_module(MODULE, {"name": engine.name, "state": "absent", "staging_name": other.name}),
           f"container {other.name} exists and is not a staging Engine")
    # present refuses to take its name.
    failed(run_module(MODULE, {"name": engine.name, "image": image_ref("major"), "snapshot": snap["name"],
                               "snapshot_dir": snapdir, "env": MAJOR_ENV, "staging_name": other.name}),
           f"container {other.name} exists and is not a staging Engine")
    # Nor can the production Engine be its own staging name.
    failed(run_module(MODULE, {"name": engine.name, "state": "absent", "staging_name": engine.name}),
           "is the production Engine's own name")
    assert prod_state(fleet, other) == before
    assert staging_left(docker_client, engine) == ([], [])


def test_bad_input_is_refused_before_anything_is_created(make_fleet, run_module, docker_client, tmp_path, staged):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    staged.append(engine.name)
    snapdir = str(tmp_path / "snapshots")
    snap = take_snapshot(run_module, engine, snapdir)
    args = {"name": engine.name, "image": image_ref("major"), "snapshot": snap["name"], "snapshot_dir": snapdir,
            "env": MAJOR_ENV}

    failed(run_module(MODULE, {**args, "snapshot": "no-such-snapshot"}), "no such snapshot", snap["name"])
    failed(run_module(MODULE, {**args, "image": image_ref("major").rsplit(":", 1)[0] + ":latest"}), "latest")
    failed(run_module(MODULE, {**args, "env": {"LLM_EMBEDDING_MODEL": True}}), "ambiguous")

    # A snapshot whose bytes no longer match its manifest's sha256.
    path = os.path.join(snapdir, engine.name, snap["name"] + ".db")
    with open(path, "r+b") as handle:
        handle.seek(4096)
        data = handle.read(64)
        handle.seek(4096)
        handle.write(bytes(b ^ 0xFF for b in data))
    msg = failed(run_module(MODULE, args), "does not verify", "sha256", "Nothing was changed")
    assert snap["sha256"] in msg
    assert staging_left(docker_client, engine) == ([], [])
    assert docker_client.containers.list(all=True, filters={"name": f"{engine.name}-staging"}) == []
