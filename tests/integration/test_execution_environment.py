"""The AWX execution environment: ``ansible-builder create`` for real, and what its build context carries.

No image can be pulled or built here, so the test stops at the build
context, and plays its two stages that need no image with the context's own
files: the galaxy stage (``ansible-galaxy collection install -r
requirements.yml`` from the context's ``_build``) and the builder stage's
introspection (the context's ``introspect.py`` over what was installed),
which is where the collection's Python and system packages come from.
"""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from tests.integration.conftest import ROOT

BIN = Path(sys.executable).parent
EE_DIR = ROOT / "extensions" / "awx" / "ee"


def run(*cmd, cwd=None) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{cmd}: rc={proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def requirement_lines(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()
            if line.split("#", 1)[0].strip()]


@pytest.fixture(scope="module")
def context(tmp_path_factory):
    """The EE definition copied aside, the collection built beside it, and ``ansible-builder create`` run."""
    work = tmp_path_factory.mktemp("ee")
    ee = work / "ee"
    shutil.copytree(EE_DIR, ee)
    run(BIN / "ansible-galaxy", "collection", "build", "--output-path", ee, ROOT)
    run(BIN / "ansible-builder", "create", "-f", ee / "execution-environment.yml", "-c", work / "context",
        "--output-filename", "Containerfile")
    return work


def test_the_definition_is_version_3_with_a_parameter_base_image():
    definition = yaml.safe_load((EE_DIR / "execution-environment.yml").read_text())
    assert definition["version"] == 3
    assert definition["images"]["base_image"]["name"]
    assert set(definition["dependencies"]) == {"python_interpreter", "ansible_core", "ansible_runner", "galaxy"}


def test_the_containerfile_takes_the_base_image_as_a_build_argument(context):
    definition = yaml.safe_load((EE_DIR / "execution-environment.yml").read_text())
    containerfile = (context / "context" / "Containerfile").read_text()
    base = definition["images"]["base_image"]["name"]
    # ARG before the first FROM: `ansible-builder build --build-arg EE_BASE_IMAGE=...` (or podman's) replaces it.
    assert containerfile.index(f'ARG EE_BASE_IMAGE="{base}"') < containerfile.index("FROM $EE_BASE_IMAGE AS base")
    assert re.search(r'^ARG PKGMGR="/usr/bin/dnf"$', containerfile, re.M)
    assert "ansible-galaxy collection install $ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml" in containerfile
    assert "introspect.py introspect" in containerfile


def test_ansible_core_and_runner_match_the_collections_requirements(context):
    containerfile = (context / "context" / "Containerfile").read_text()
    refs = re.search(r'^ARG ANSIBLE_INSTALL_REFS="([^"]*)"$', containerfile, re.M).group(1).split()
    by_name = {Requirement(r).name: Requirement(r) for r in refs}
    assert set(by_name) == {"ansible-core", "ansible-runner"}
    # The image's Python is 3.12+: the ansible-core line of requirements.txt for it.
    cores = [Requirement(line) for line in requirement_lines(ROOT / "requirements.txt")
             if Requirement(line).name == "ansible-core"]
    [modern] = [r for r in cores if r.marker is not None and r.marker.evaluate({"python_version": "3.12"})]
    assert by_name["ansible-core"].specifier == modern.specifier
    tested = [Requirement(line) for line in requirement_lines(ROOT / "requirements-test.txt")
              if Requirement(line).name == "ansible-runner"]
    assert [by_name["ansible-runner"].specifier] == [r.specifier for r in tested]


def test_the_context_carries_the_collection_built_from_this_checkout(context):
    version = yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"]
    tarball = context / "context" / "_build" / "collections" / f"engineops-fleet-{version}.tar.gz"
    assert tarball.is_file(), sorted((context / "context" / "_build").rglob("*"))
    requirements = yaml.safe_load((context / "context" / "_build" / "requirements.yml").read_text())
    assert requirements == {"collections": [{"name": f"collections/{tarball.name}", "type": "file"}]}
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    assert {"meta/execution-environment.yml", "requirements.txt", "bindep.txt", "MANIFEST.json"} <= names
    assert {"extensions/awx/engineops-fleet.json", "extensions/awx/project/upgrade.yml"} <= names
    # Nothing of the test bed or of the build machine: no tests, venvs, caches, nested tarballs.
    unwanted = [n for n in names if n.split("/")[0] in ("tests", ".venv", ".git", ".ansible", "benchmarks", "scripts")
                or n.endswith((".tar.gz", ".pyc"))]
    assert unwanted == []


def test_the_galaxy_stage_installs_the_collection_and_introspection_finds_its_packages(context):
    build = context / "context" / "_build"
    installed = context / "usr-share-ansible-collections"
    # The galaxy stage of the Containerfile: WORKDIR /build, ansible-galaxy collection install -r requirements.yml.
    run(BIN / "ansible-galaxy", "collection", "install", "-r", "requirements.yml", "--collections-path", installed,
        cwd=build)
    collection = installed / "ansible_collections" / "engineops" / "fleet"
    assert (collection / "meta" / "execution-environment.yml").is_file()
    # The builder stage: the context's own introspect.py over the installed collections.
    pip, system = context / "pip.txt", context / "bindep.txt"
    run(sys.executable, build / "scripts" / "introspect.py", "introspect", installed, "--write-pip", pip,
        "--write-bindep", system)
    # ansible-builder leaves out what every EE has (ansible-core, PyYAML, ...): its own list, in the context.
    spec = importlib.util.spec_from_file_location("ee_introspect", build / "scripts" / "introspect.py")
    introspect = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(introspect)
    wanted = [Requirement(line) for line in requirement_lines(ROOT / "requirements.txt")]
    expected = sorted(str(r) for r in wanted if r.name.lower() not in introspect.EXCLUDE_REQUIREMENTS)
    assert {"docker", "requests"} <= {Requirement(r).name for r in expected}
    assert sorted(str(Requirement(line)) for line in requirement_lines(pip)) == expected
    assert requirement_lines(system) == requirement_lines(ROOT / "bindep.txt")
    assert all("from collection engineops.fleet" in line for line in pip.read_text().splitlines() if line.strip())


def test_bindep_reads_the_system_packages():
    # bindep exits 2 on a file it cannot parse; here it lists the package of this (Debian) machine.
    proc = run(BIN / "bindep", "-f", ROOT / "bindep.txt", "-l", "newline")
    assert proc.stdout.split() == ["openssh-client"]
