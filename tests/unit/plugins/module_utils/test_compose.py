# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._compose import (
    CONFIG_FILES_LABEL,
    ENV_FILE_LABEL,
    PROJECT_LABEL,
    SERVICE_LABEL,
    WORKING_DIR_LABEL,
    ComposeError,
    ComposeProject,
    Variable,
    parse_env_file,
    parse_template,
    plan_sync,
    project_of,
    read_project_files,
    service_entry,
    set_env_value,
    write_edit,
)

OLD = "registry.example.com/september-engine:2.3.0"
NEW = "registry.example.com/september-engine:2.3.1"
MAIN = "/srv/app/compose.yaml"
OVERRIDE = "/srv/app/compose.override.yaml"
ENV = "/srv/app/.env"

COMPOSE = """\
# The Engine of user 42
services:
  engine:
    image: {image}  # pinned by the upgrade playbook
    restart: unless-stopped
    ports:
      - "127.0.0.1:9042:8000"
  sidecar:
    image: busybox:1.36
"""


def project(*files: str, env_files: tuple[str, ...] = (ENV,)) -> ComposeProject:
    return ComposeProject("app", "engine", "/srv/app", tuple(files or (MAIN,)), env_files)


def labels(**extra: str) -> dict[str, str]:
    return {
        PROJECT_LABEL: "app",
        SERVICE_LABEL: "engine",
        WORKING_DIR_LABEL: "/srv/app",
        CONFIG_FILES_LABEL: f"{MAIN},{OVERRIDE}",
        **extra,
    }


# -- labels ---------------------------------------------------------------------


def test_project_of_a_compose_container():
    found = project_of(labels())
    assert found == ComposeProject("app", "engine", "/srv/app", (MAIN, OVERRIDE), (ENV,))


def test_project_of_takes_relative_files_from_the_working_dir_and_the_env_file_label():
    found = project_of(labels(**{CONFIG_FILES_LABEL: "compose.yaml", ENV_FILE_LABEL: "prod.env"}))
    assert found.config_files == (MAIN,)
    assert found.env_files == ("/srv/app/prod.env",)


def test_a_container_compose_did_not_make_is_no_project():
    assert project_of({"io.engineops.testbed": "x"}) is None
    assert project_of(None) is None


@pytest.mark.parametrize(("missing", "message"), [
    (CONFIG_FILES_LABEL, "has no label com.docker.compose.project.config_files"),
    (WORKING_DIR_LABEL, "has no label com.docker.compose.project.working_dir"),
])
def test_project_of_refuses_labels_without_the_files(missing, message):
    with pytest.raises(ComposeError, match=message):
        project_of({k: v for k, v in labels().items() if k != missing})


def test_project_read_from_stdin_is_refused():
    with pytest.raises(ComposeError, match="standard input"):
        project_of(labels(**{CONFIG_FILES_LABEL: "-"}))


# -- interpolation and env files ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("engine:2.3.0", ["engine:2.3.0"]),
    ("engine:${TAG}", ["engine:", Variable("TAG", "", "", 7, 13)]),
    ("engine:$TAG", ["engine:", Variable("TAG", "", "", 7, 11)]),
    ("${REG:-r.example}/engine:${TAG-2.3.0}",
     [Variable("REG", ":-", "r.example", 0, 17), "/engine:", Variable("TAG", "-", "2.3.0", 25, 37)]),
    ("a$$b", ["a$b"]),
])
def test_parse_template(text, expected):
    assert parse_template(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("engine:${TAG:+x}", "cannot be kept in step"),
    ("engine:${TAG:-${OTHER}}", "nests a variable"),
    ("engine:$1", "starts no variable"),
])
def test_parse_template_refuses_what_cannot_be_kept(text, message):
    with pytest.raises(ComposeError, match=message):
        parse_template(text)


ENV_TEXT = """\
# versions
export REGISTRY=registry.example.com
ENGINE_VERSION=2.3.0   # bumped by the upgrade
QUOTED="2.3.0"
SINGLE='2.3.0' # single
"""


def test_parse_env_file():
    entries = parse_env_file(ENV, ENV_TEXT)
    assert {k: (e.value, e.quote, e.line) for k, e in entries.items()} == {
        "REGISTRY": ("registry.example.com", "", 2),
        "ENGINE_VERSION": ("2.3.0", "", 3),
        "QUOTED": ("2.3.0", '"', 4),
        "SINGLE": ("2.3.0", "'", 5),
    }


@pytest.mark.parametrize(("name", "line"), [
    ("ENGINE_VERSION", "ENGINE_VERSION=2.3.1   # bumped by the upgrade"),
    ("QUOTED", 'QUOTED="2.3.1"'),
    ("SINGLE", "SINGLE='2.3.1' # single"),
])
def test_set_env_value_keeps_quotes_and_comments(name, line):
    entries = parse_env_file(ENV, ENV_TEXT)
    text = set_env_value(ENV_TEXT, entries[name], "2.3.1")
    assert line in text.splitlines()
    assert len(text.splitlines()) == len(ENV_TEXT.splitlines())
    assert parse_env_file(ENV, text)[name].value == "2.3.1"


def test_set_env_value_refuses_what_the_quoting_cannot_hold():
    entries = parse_env_file(ENV, ENV_TEXT)
    with pytest.raises(ComposeError, match="unquoted value"):
        set_env_value(ENV_TEXT, entries["ENGINE_VERSION"], "2.3.1 # no")


# -- compose files ---------------------------------------------------------------


def test_service_entry_finds_the_image_scalar():
    text = COMPOSE.format(image=OLD)
    entry = service_entry(MAIN, text, "engine")
    assert entry.image.value == OLD and entry.image.line == 4
    assert text[entry.image.start:entry.image.end] == OLD
    assert not entry.build
    assert service_entry(MAIN, text, "nothere") is None
    assert service_entry(MAIN, "version: '3'\n", "engine") is None


@pytest.mark.parametrize("text", [
    "x-img: &img " + OLD + "\nservices:\n  engine:\n    image: *img\n",
    "services:\n  engine:\n    image: &img " + OLD + "\n  other:\n    image: *img\n",
    "services:\n  engine:\n    image: !!str " + OLD + "\n",
    "services:\n  engine:\n    image: |\n      " + OLD + "\n",
    "services:\n  engine:\n    image: registry.example.com/\n      september-engine:2.3.0\n",
])
def test_an_image_through_an_anchor_or_tag_is_refused(text):
    with pytest.raises(ComposeError, match="anchor, alias or tag, or over several lines"):
        service_entry(MAIN, text, "engine")


def test_invalid_yaml_is_refused_naming_the_file():
    with pytest.raises(ComposeError, match=f"compose file {MAIN} is not valid YAML"):
        service_entry(MAIN, "services: [\n", "engine")


# -- plans ---------------------------------------------------------------


@pytest.mark.parametrize("image_text", [OLD, f"'{OLD}'", f'"{OLD}"'])
def test_a_literal_image_is_edited_in_place_in_its_own_quoting(image_text):
    text = COMPOSE.format(image=image_text)
    plan = plan_sync(project(), NEW, {MAIN: text, ENV: None})
    [edit] = plan.edits
    assert (edit.path, edit.change, edit.before, edit.after) == (MAIN, "image", OLD, NEW)
    assert edit.after_text == COMPOSE.format(image=image_text.replace(OLD, NEW))
    assert plan.image_before == OLD and plan.image_after == NEW and plan.changed
    assert plan.actions() == [f"edit {MAIN}: image {OLD} -> {NEW}"]


def test_files_that_name_the_target_need_no_edit():
    plan = plan_sync(project(), NEW, {MAIN: COMPOSE.format(image=NEW), ENV: None})
    assert not plan.changed and plan.edits == []
    # Docker Hub's implicit prefix is the same image.
    plan = plan_sync(project(), "docker.io/library/busybox:1.36",
                     {MAIN: COMPOSE.format(image="busybox:1.36"), ENV: None})
    assert not plan.changed


def test_the_override_file_that_sets_the_image_is_the_one_edited():
    override = "services:\n  engine:\n    image: " + OLD + "\n"
    texts = {MAIN: COMPOSE.format(image="registry.example.com/september-engine:2.2.0"), OVERRIDE: override, ENV: None}
    plan = plan_sync(project(MAIN, OVERRIDE), NEW, texts)
    [edit] = plan.edits
    assert edit.path == OVERRIDE and edit.after_text == override.replace(OLD, NEW)
    # An override that does not set the image leaves the main file to edit.
    texts[OVERRIDE] = "services:\n  engine:\n    environment:\n      X: '1'\n"
    texts[MAIN] = COMPOSE.format(image=OLD)
    [edit] = plan_sync(project(MAIN, OVERRIDE), NEW, texts).edits
    assert edit.path == MAIN


def test_a_variable_set_in_the_env_file_is_edited_there():
    text = COMPOSE.format(image="${REGISTRY}/september-engine:${ENGINE_VERSION}")
    plan = plan_sync(project(), NEW, {MAIN: text, ENV: ENV_TEXT})
    [edit] = plan.edits
    assert (edit.path, edit.change, edit.before, edit.after) == (ENV, "variable ENGINE_VERSION", "2.3.0", "2.3.1")
    assert edit.after_text == ENV_TEXT.replace("ENGINE_VERSION=2.3.0", "ENGINE_VERSION=2.3.1")
    assert plan.variable == "ENGINE_VERSION" and plan.image_before == OLD
    # Again on the edited env file: nothing to do.
    assert not plan_sync(project(), NEW, {MAIN: text, ENV: edit.after_text}).changed


def test_a_variable_only_a_default_gives_has_its_default_edited():
    text = COMPOSE.format(image="registry.example.com/september-engine:${ENGINE_VERSION:-2.3.0}")
    [edit] = plan_sync(project(), NEW, {MAIN: text, ENV: "OTHER=1\n"}).edits
    assert (edit.path, edit.change, edit.before, edit.after) == (MAIN, "default of ENGINE_VERSION", "2.3.0", "2.3.1")
    assert edit.after_text == text.replace(":-2.3.0}", ":-2.3.1}")


def test_the_env_file_wins_over_a_default():
    text = COMPOSE.format(image="registry.example.com/september-engine:${ENGINE_VERSION:-2.2.0}")
    [edit] = plan_sync(project(), NEW, {MAIN: text, ENV: ENV_TEXT}).edits
    assert edit.path == ENV and edit.before == "2.3.0"


def test_a_variable_only_the_shell_knows_is_refused():
    text = COMPOSE.format(image="registry.example.com/september-engine:${ENGINE_VERSION}")
    with pytest.raises(ComposeError, match=r"uses \$ENGINE_VERSION, which neither the project's env file"):
        plan_sync(project(), NEW, {MAIN: text, ENV: None})


def test_an_image_no_single_variable_can_make_the_target_is_refused():
    text = COMPOSE.format(image="${REGISTRY}/september-engine:${ENGINE_VERSION}")
    with pytest.raises(ComposeError, match="cannot be made other.example.com/september-engine:2.3.1"):
        plan_sync(project(), "other.example.com/september-engine:2.3.1", {MAIN: text, ENV: ENV_TEXT})


def test_a_built_service_is_refused():
    text = "services:\n  engine:\n    build: .\n    image: " + OLD + "\n"
    with pytest.raises(ComposeError, match=r"built by the project \(build: in /srv/app/compose.yaml\)"):
        plan_sync(project(), NEW, {MAIN: text, ENV: None})


@pytest.mark.parametrize(("text", "message"), [
    ("services:\n  other:\n    image: x:1\n", "none of the project's files"),
    ("services:\n  engine:\n    extends:\n      file: base.yaml\n      service: engine\n", "comes through extends"),
    ("x-base: &base\n  image: x:1\nservices:\n  engine:\n    <<: *base\n", "comes through extends: or a YAML merge"),
])
def test_a_service_whose_image_no_file_sets_is_refused(text, message):
    with pytest.raises(ComposeError, match=message):
        plan_sync(project(), NEW, {MAIN: text, ENV: None})


def test_a_new_value_plain_yaml_cannot_hold_is_refused():
    text = "services: {engine: {image: " + OLD + "}}\n"
    with pytest.raises(ComposeError, match="without changing how the file reads"):
        plan_sync(project(), "registry.example.com/september-engine:2.3.1 #x", {MAIN: text, ENV: None})


# -- on disk ---------------------------------------------------------------


def test_read_project_files(tmp_path):
    main = tmp_path / "compose.yaml"
    main.write_text(COMPOSE.format(image=OLD))
    proj = ComposeProject("app", "engine", str(tmp_path), (str(main),), (str(tmp_path / ".env"),))
    assert read_project_files(proj) == {str(main): main.read_text(), str(tmp_path / ".env"): None}
    gone = ComposeProject("app", "engine", str(tmp_path), (str(tmp_path / "gone.yaml"),), ())
    with pytest.raises(ComposeError, match="gone.yaml of project 'app' is not on this host"):
        read_project_files(gone)


def test_write_edit_backs_up_and_keeps_the_mode(tmp_path):
    main = tmp_path / "compose.yaml"
    main.write_text(COMPOSE.format(image=OLD))
    os.chmod(main, 0o640)
    proj = ComposeProject("app", "engine", str(tmp_path), (str(main),), (str(tmp_path / ".env"),))
    [edit] = plan_sync(proj, NEW, read_project_files(proj)).edits
    write_edit(edit)
    assert main.read_text() == COMPOSE.format(image=NEW)
    assert stat.S_IMODE(main.stat().st_mode) == 0o640
    assert edit.backup and open(edit.backup).read() == COMPOSE.format(image=OLD)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["compose.yaml", os.path.basename(edit.backup)])


def test_write_edit_refuses_a_file_changed_since_it_was_read(tmp_path):
    main = tmp_path / "compose.yaml"
    main.write_text(COMPOSE.format(image=OLD))
    proj = ComposeProject("app", "engine", str(tmp_path), (str(main),), (str(tmp_path / ".env"),))
    [edit] = plan_sync(proj, NEW, read_project_files(proj)).edits
    main.write_text(COMPOSE.format(image="someone/else:1.0.0"))
    with pytest.raises(ComposeError, match="changed while the Engine was moved"):
        write_edit(edit)
    assert main.read_text() == COMPOSE.format(image="someone/else:1.0.0")
    assert edit.backup is None
