# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Compose-managed single Engines: a real compose project whose service ``engine`` is a reference Engine.

engine_container and the upgrade and rollback playbooks move the container;
the project's file (or its ``.env``) must then name the new image, so that a
later ``docker compose up -d``, run in the project directory as its owner
would, keeps it.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ansible_collections.engineops.fleet.plugins.module_utils._compose import PROJECT_LABEL, SERVICE_LABEL
from tests.engine_sim import releases
from tests.integration.rollouts import explain, versions, with_traffic, write_inventory
from tests.testbed.fleet import engine_env
from tests.testbed.images import REGISTRY, image_ref

BASELINE = image_ref("baseline")
PATCH = image_ref("patch")

COMPOSE_FILE = """\
# One user's Engine, as its owner wrote it.
services:
  engine:
    image: {image}  # the Engine's release
    container_name: {name}
    restart: unless-stopped
    environment: {environment}
    ports:
      - "127.0.0.1:{port}:8000"
    volumes:
      - {volume}:/data
    labels: {labels}

volumes:
  {volume}:
    external: true  # seeded by the test bed
"""


def compose_command() -> list[str]:
    """``docker compose`` (v2 and later), else ``docker-compose`` (v1); scripts/ensure-docker.sh installs one."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    pytest.fail("neither docker compose nor docker-compose is installed: run scripts/ensure-docker.sh")


class ComposeEngine:
    """A compose project in ``folder`` (named after it) with service ``engine``: one Engine of ``fleet``."""

    def __init__(self, fleet, folder: Path, image: str, env_file: str | None) -> None:
        self.fleet = fleet
        self.engine = fleet.engines[0]
        self.folder = folder
        self.project = folder.name
        self.file = folder / "compose.yaml"
        self.env_file = folder / ".env"
        folder.mkdir()
        self.file.write_text(COMPOSE_FILE.format(
            image=image,
            name=self.engine.name,
            port=self.engine.port,
            volume=self.engine.volume,
            environment=yaml.safe_dump(engine_env(self.engine.key), default_flow_style=True, width=10_000).strip(),
            labels=yaml.safe_dump(fleet.labels(), default_flow_style=True).strip(),
        ))
        if env_file is not None:
            self.env_file.write_text(env_file)

    def compose(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([*compose_command(), *args], cwd=self.folder, capture_output=True, text=True,
                              timeout=300, check=False)
        assert proc.returncode == 0, f"docker compose {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        return proc

    def up(self) -> None:
        """``docker compose up -d`` in the project directory, then wait until the Engine answers."""
        self.compose("up", "-d")
        self.fleet.wait_healthy(60)

    def container(self):
        return self.fleet.container(self.engine)

    def backups(self) -> list[Path]:
        return sorted(p for p in self.folder.iterdir() if p.name.endswith("~"))


@pytest.fixture
def compose_engine(make_fleet, tmp_path):
    """``compose_engine(image=..., env_file=None)``: a seeded Engine brought up by ``docker compose up -d``."""
    made = []

    def factory(image: str = BASELINE, env_file: str | None = None) -> ComposeEngine:
        fleet = make_fleet(1, start=False)
        fleet.seed(fleet.engines[0])
        project = ComposeEngine(fleet, tmp_path / fleet.prefix, image, env_file)
        made.append(project)
        project.up()
        return project

    yield factory
    for project in made:
        # By project name: a test may have moved the file away. The volume is external: make_fleet removes it.
        project.compose("--project-name", project.project, "down", "--remove-orphans")


def _edit(result) -> dict:
    [edit] = result["compose"]["edits"]
    return edit


def test_swap_keeps_the_compose_file_in_step(compose_engine, run_module):
    project = compose_engine()
    before_text = project.file.read_text()
    old = project.container()
    args = {"name": project.engine.name, "image": PATCH}

    check = run_module("engine_container", args, check=True, diff=True)
    assert not check["failed"], check.get("msg")
    assert check["changed"] is True and check["recreated"] is True
    assert f"edit {project.file}: image {BASELINE} -> {PATCH}" in check["actions"]
    assert check["compose"]["project"] == project.project and check["compose"]["service"] == "engine"
    assert check["compose"]["image_file"] == str(project.file)
    assert _edit(check)["backup"] is None
    # The diff shows the file's line, comment and all.
    assert f"-    image: {BASELINE}  # the Engine's release" in check["_stdout"], check["_stdout"]
    assert f"+    image: {PATCH}  # the Engine's release" in check["_stdout"], check["_stdout"]
    assert project.file.read_text() == before_text and project.backups() == []
    assert project.container().id == old.id

    result = run_module("engine_container", args)
    assert not result["failed"], result.get("msg")
    assert result["changed"] is True and result["container"]["image"] == PATCH
    edit = _edit(result)
    assert (edit["path"], edit["change"], edit["before"], edit["after"]) == (str(project.file), "image", BASELINE, PATCH)
    # A targeted edit: one line changed, comments and layout kept; the old file backed up.
    assert project.file.read_text() == before_text.replace(f"image: {BASELINE}", f"image: {PATCH}")
    assert [str(p) for p in project.backups()] == [edit["backup"]]
    assert Path(edit["backup"]).read_text() == before_text
    assert any(a.startswith(f"edited {project.file}: image {BASELINE} -> {PATCH}") for a in result["actions"])
    new = project.container()
    assert new.labels[PROJECT_LABEL] == project.project and new.labels[SERVICE_LABEL] == "engine"
    # compose still takes the new container for its service.
    listed = project.compose("ps", "--quiet", "engine").stdout.split()
    assert listed == [new.id] or listed == [new.id[:12]], listed

    again = run_module("engine_container", args)
    assert not again["failed"], again.get("msg")
    assert again["changed"] is False and again["compose"]["changed"] is False and again["compose"]["edits"] == []
    assert project.container().id == new.id and len(project.backups()) == 1

    # The owner's next `docker compose up -d` keeps the new image. The service's config changed (its image),
    # so compose recreates the container once, on that image; after that it leaves it alone.
    project.up()
    after_up = project.container()
    assert after_up.attrs["Config"]["Image"] == PATCH
    assert after_up.id != new.id
    project.up()
    assert project.container().id == after_up.id
    assert project.engine.client().execute("What is the capital of France?", "after-compose-up").ok


def test_a_version_variable_is_kept_in_step_in_the_env_file(compose_engine, run_module):
    env_text = "# Engine release, bumped by the upgrades\nENGINE_VERSION=2.3.0  # current\n"
    template = f"{REGISTRY}/{releases.REPOSITORY}:${{ENGINE_VERSION}}"
    project = compose_engine(image=template, env_file=env_text)
    before_text = project.file.read_text()
    assert project.container().attrs["Config"]["Image"] == BASELINE

    result = run_module("engine_container", {"name": project.engine.name, "image": PATCH}, diff=True)
    assert not result["failed"], result.get("msg")
    assert result["compose"]["variable"] == "ENGINE_VERSION" and result["compose"]["image_value"] == template
    edit = _edit(result)
    assert (edit["path"], edit["change"], edit["before"], edit["after"]) == (
        str(project.env_file), "variable ENGINE_VERSION", "2.3.0", "2.3.1")
    assert project.env_file.read_text() == env_text.replace("=2.3.0 ", "=2.3.1 ")
    assert project.file.read_text() == before_text
    assert "+ENGINE_VERSION=2.3.1  # current" in result["_stdout"]

    project.up()
    assert project.container().attrs["Config"]["Image"] == PATCH
    assert run_module("engine_container", {"name": project.engine.name, "image": PATCH})["changed"] is False


def test_what_cannot_be_kept_in_step_is_refused_before_anything_changes(compose_engine, run_module):
    project = compose_engine()
    old = project.container()
    args = {"name": project.engine.name, "image": PATCH}
    # The owner has since made compose build the Engine.
    built = project.file.read_text().replace("    image:", "    build: ./engine\n    image:")
    project.file.write_text(built)
    # The pre-flight's pull (state=pulled) already says so, before any Engine is touched.
    refused = run_module("engine_container", {**args, "state": "pulled"})
    assert refused["failed"] and "build:" in refused["msg"], refused["msg"]
    refused = run_module("engine_container", args)
    assert refused["failed"]
    assert "keep its compose project in step" in refused["msg"] and "build:" in refused["msg"], refused["msg"]
    assert "Nothing was changed" in refused["msg"]
    assert project.container().id == old.id and project.container().status == "running"
    assert project.file.read_text() == built and project.backups() == []

    # A file that is not on this host.
    project.file.rename(project.folder / "moved.yaml")
    refused = run_module("engine_container", args)
    assert refused["failed"] and "is not on this host" in refused["msg"], refused["msg"]
    assert project.container().id == old.id

    # compose_sync false moves the container anyway, with a warning, and leaves the files alone.
    moved = run_module("engine_container", {**args, "compose_sync": False})
    assert not moved["failed"], moved.get("msg")
    assert moved["container"]["image"] == PATCH and "compose" not in moved
    assert "compose_sync is false" in " ".join(moved["_stderr"].split()), moved["_stderr"]
    assert (project.folder / "moved.yaml").read_text() == built and project.backups() == []
    (project.folder / "moved.yaml").rename(project.file)


@pytest.mark.timeout(2400)  # real playbooks on a real Engine; slow on a loaded machine
def test_single_rollout_and_its_rollback_keep_the_compose_project_in_step(compose_engine, play, tmp_path):
    project = compose_engine()
    fleet, engine = project.fleet, project.engine
    inventory = write_inventory(fleet, tmp_path, engine_watch_seconds=10)
    baseline_text = project.file.read_text()

    # The single strategy with its watch window upgrades the compose Engine ...
    proc, report = with_traffic(fleet, lambda: play(
        "engineops.fleet.upgrade", inventory, {"engine_target_version": releases.tag("patch"), "engine_rollout": "single"}))
    assert proc.returncode == 0, explain(proc)
    assert "Watch the single Engine before calling it done" in proc.stdout
    assert report.lost == [], report.summary()
    assert versions(fleet) == {engine.name: releases.tag("patch")}
    assert project.file.read_text() == baseline_text.replace(BASELINE, PATCH)
    # ... and the owner's docker compose up -d leaves it on the target.
    project.up()
    assert versions(fleet) == {engine.name: releases.tag("patch")}

    # A bad release is caught in the watch window and rolled back: the file names the patch again.
    bad = releases.tag("bad-errors")
    proc, report = with_traffic(fleet, lambda: play(
        "engineops.fleet.upgrade", inventory, {"engine_target_version": bad, "engine_rollout": "single"}))
    assert proc.returncode != 0, explain(proc)
    assert "image rollback (schema unchanged)" in proc.stdout, explain(proc)
    assert report.lost == [], report.summary()
    assert versions(fleet) == {engine.name: releases.tag("patch")}
    assert project.file.read_text() == baseline_text.replace(BASELINE, PATCH)
    project.up()
    assert versions(fleet) == {engine.name: releases.tag("patch")}

    # rollback.yml to an explicit version: the file names the baseline again, and compose up keeps it.
    proc = play("engineops.fleet.rollback", inventory, {"engine_rollback_version": releases.tag("baseline")})
    assert proc.returncode == 0, explain(proc)
    assert versions(fleet) == {engine.name: releases.tag("baseline")}
    assert project.file.read_text() == baseline_text
    project.up()
    assert versions(fleet) == {engine.name: releases.tag("baseline")}
    assert len(project.backups()) == 4  # one per edit: to the patch, to the bad release, back, to the baseline
