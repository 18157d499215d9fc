"""playbooks/host.yml (role engineops.fleet.host) for real on this machine, over the local connection.

This machine is a Debian 12 whose system Python refuses pip (PEP 668) and has
no Docker SDK: the role makes a virtualenv from a local folder of wheels
(offline), is idempotent and check-mode aware, keeps a Python that already
fits, and the Python it prints runs the Engine modules.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.integration.test_docker_sdk_versions import VENVS, sdk_venv

PLAYBOOK = "engineops.fleet.host"
SYSTEM_PYTHON = "/usr/bin/python3"
HOST_REQUIREMENTS = ["docker>=7.1,<8", "requests>=2.31,<3"]

pytestmark = pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="no system Python at /usr/bin/python3")


@pytest.fixture(scope="module")
def wheels():
    """A folder of wheels of the host requirements for the system Python, made once (pip download)."""
    where = VENVS / "host-wheels"
    stamp = where / "requirements.json"
    if stamp.exists() and json.loads(stamp.read_text()) == HOST_REQUIREMENTS:
        return str(where)
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    python311 = shutil.which("python3.11")
    if python311 is None:
        pytest.skip("python3.11 (for pip download) is not installed")
    done = subprocess.run([python311, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(where),
                           *HOST_REQUIREMENTS], capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        shutil.rmtree(where, ignore_errors=True)
        pytest.skip(f"cannot download the host requirements: {done.stderr[-500:]}")
    stamp.write_text(json.dumps(HOST_REQUIREMENTS))
    return str(where)


def inventory(tmp_path: Path, **host_vars) -> Path:
    path = tmp_path / "hosts.yml"
    hosts = {"docker-host-1": {"ansible_connection": "local", "ansible_python_interpreter": SYSTEM_PYTHON, **host_vars},
             # A second Engine on the same (local) Docker host: the role runs once for both.
             "docker-host-1-engine-2": {"ansible_connection": "local", "ansible_python_interpreter": SYSTEM_PYTHON,
                                        **host_vars}}
    path.write_text(yaml.safe_dump({"all": {"children": {"engines": {"hosts": hosts}}}}))
    return path


def recap(stdout: str) -> dict[str, dict[str, int]]:
    rows = {}
    for match in re.finditer(r"^(\S+)\s+:\s+(.*)$", stdout, re.M):
        counts = dict(re.findall(r"(\w+)=(\d+)", match.group(2)))
        if counts:
            rows[match.group(1)] = {k: int(v) for k, v in counts.items()}
    return rows


def test_a_venv_from_local_wheels_idempotent_and_check_mode_aware(tmp_path, run_playbook, run_module, wheels, make_fleet):
    venv = tmp_path / "opt" / "venv"
    snapshots, baselines = tmp_path / "state" / "snapshots", tmp_path / "state" / "baselines"
    # venv, not auto: auto would apt-get install python3-docker into this shared machine's system Python.
    hosts = inventory(tmp_path, host_venv_path=str(venv), host_wheel_dir=wheels, host_python=SYSTEM_PYTHON,
                      host_python_setup="venv", engine_snapshot_dir=str(snapshots), engine_baseline_dir=str(baselines))

    planned = run_playbook(PLAYBOOK, hosts, None, "--check")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert recap(planned.stdout)["docker-host-1"]["changed"] >= 2
    assert f"Would use ansible_python_interpreter={venv}/bin/python" in planned.stdout
    assert not venv.exists() and not snapshots.exists()
    assert recap(planned.stdout)["docker-host-1-engine-2"]["changed"] == 0  # the role ran for the first Engine only

    made = run_playbook(PLAYBOOK, hosts)
    assert made.returncode == 0, made.stdout + made.stderr
    assert recap(made.stdout)["docker-host-1"]["changed"] >= 2
    assert f"Use ansible_python_interpreter={venv}/bin/python" in made.stdout
    assert "Docker daemon" in made.stdout
    for folder in (snapshots, baselines):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    found = subprocess.run([str(venv / "bin" / "python"), "-c", "import docker, requests; print(docker.__version__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert found.split(".")[0] == "7"

    again = run_playbook(PLAYBOOK, hosts)
    assert again.returncode == 0, again.stdout + again.stderr
    assert recap(again.stdout)["docker-host-1"]["changed"] == 0, again.stdout
    checked = run_playbook(PLAYBOOK, hosts, None, "--check")
    assert checked.returncode == 0 and recap(checked.stdout)["docker-host-1"]["changed"] == 0, checked.stdout

    # The Python it printed runs the Engine modules.
    engine = make_fleet(1).engines[0]
    info = run_module("engine_info", {"name": engine.name}, ANSIBLE_PYTHON_INTERPRETER=str(venv / "bin" / "python"))
    assert not info["failed"] and info["engine"]["version"] == "2.3.0", info.get("msg")


def test_a_python_that_fits_is_kept(tmp_path, run_playbook):
    fitting = sdk_venv("debian12", ["docker==5.0.3", "requests==2.28.1", "urllib3==1.26.12", "websocket-client==1.2.3"])
    hosts = inventory(tmp_path, host_python=fitting, host_venv_path=str(tmp_path / "unused-venv"),
                      engine_snapshot_dir=str(tmp_path / "s"), engine_baseline_dir=str(tmp_path / "b"))
    kept = run_playbook(PLAYBOOK, hosts, {"host_python_setup": "check"})
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert f"Use ansible_python_interpreter={fitting}" in kept.stdout and "docker 5.0.3" in kept.stdout
    assert not (tmp_path / "unused-venv").exists()


def test_check_only_fails_on_a_python_without_the_sdk(tmp_path, run_playbook):
    hosts = inventory(tmp_path, host_venv_path=str(tmp_path / "venv"),
                      engine_snapshot_dir=str(tmp_path / "s"), engine_baseline_dir=str(tmp_path / "b"))
    refused = run_playbook(PLAYBOOK, hosts, {"host_python_setup": "check"})
    assert refused.returncode != 0
    assert "has docker missing" in refused.stdout and "5.0.3 or newer" in refused.stdout
    assert not (tmp_path / "venv").exists() and not (tmp_path / "s").exists()


def test_a_docker_daemon_that_does_not_answer_fails_clearly(tmp_path, run_playbook, wheels):
    fitting = sdk_venv("debian12", ["docker==5.0.3", "requests==2.28.1", "urllib3==1.26.12", "websocket-client==1.2.3"])
    hosts = inventory(tmp_path, host_python=fitting, engine_docker_host="unix:///nonexistent/docker.sock",
                      engine_snapshot_dir=str(tmp_path / "s"), engine_baseline_dir=str(tmp_path / "b"))
    refused = run_playbook(PLAYBOOK, hosts)
    assert refused.returncode != 0
    assert "unix:///nonexistent/docker.sock does not answer" in refused.stdout
    assert not (tmp_path / "s").exists()


def test_bad_inputs_are_refused_before_anything_changes(tmp_path, run_playbook):
    hosts = inventory(tmp_path, host_venv_path="relative/venv")
    refused = run_playbook(PLAYBOOK, hosts, {"host_python_setup": "sometimes"})
    assert refused.returncode != 0
    assert "host_python_setup" in refused.stdout and "sometimes" in refused.stdout
