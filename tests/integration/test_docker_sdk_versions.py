"""The modules on the Docker SDK a Debian 12 / Ubuntu 24.04 host ships (python3-docker 5.0.3),
and a clear failure on an older one.

Each test runs real modules with ``ansible_python_interpreter`` pointing at a
virtualenv (Python 3.11) holding Debian 12's versions of docker, requests and
urllib3, against real Engine containers. The virtualenvs are built once
from PyPI (or the local wheel folders pip is configured with) under
``.ansible/sdk-venvs/``; the tests are skipped only when they cannot be built.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

import tests
from tests.testbed.loadgen import LoadGenerator

VENVS = Path(tests._ROOT) / ".ansible" / "sdk-venvs"
# Debian 12's python3-docker, python3-requests, python3-urllib3, python3-websocket.
DEBIAN_12 = ["docker==5.0.3", "requests==2.28.1", "urllib3==1.26.12", "websocket-client==1.2.3"]
TOO_OLD = ["docker==4.4.4", "requests==2.28.1", "urllib3==1.26.12", "websocket-client==1.2.3"]


def sdk_venv(name: str, requirements: list[str]) -> str:
    """The python of a Python 3.11 virtualenv with ``requirements``; skips the test if it cannot be built."""
    python311 = shutil.which("python3.11")
    if python311 is None:
        pytest.skip("python3.11 is not installed")
    where = VENVS / name
    python = where / "bin" / "python"
    stamp = where / "requirements.json"
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == requirements:
        return str(python)
    shutil.rmtree(where, ignore_errors=True)
    where.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([python311, "-m", "venv", str(where)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True, capture_output=True,
                       timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(where, ignore_errors=True)
        pytest.skip(f"cannot build a virtualenv with {' '.join(requirements)}: {getattr(exc, 'stderr', exc)!r}")
    stamp.write_text(json.dumps(requirements))
    return str(python)


@pytest.fixture(scope="module")
def debian_python():
    python = sdk_venv("debian12", DEBIAN_12)
    found = subprocess.run([python, "-c", "import docker, requests; print(docker.__version__, requests.__version__)"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert found == ["5.0.3", "2.28.1"]
    return python


def test_info_health_snapshot_on_docker_sdk_5_0_3(make_fleet, run_module, debian_python, tmp_path):
    engine = make_fleet(1).engines[0]
    on_503 = {"ANSIBLE_PYTHON_INTERPRETER": debian_python}
    info = run_module("engine_info", {"name": engine.name}, **on_503)
    assert not info["failed"], info.get("msg")
    assert info["engine"]["version"] == "2.3.0" and info["engine_url"] == engine.url
    assert info["brain"]["migrations"]

    health = run_module("engine_health", {"name": engine.name, "log_lines": 20}, **on_503)
    assert not health["failed"] and health["ready"] is True, health.get("msg")

    snapdir = tmp_path / "snapshots"
    taken = run_module("engine_snapshot", {"name": engine.name, "snapshot_dir": str(snapdir), "snapshot": "on-503"},
                       **on_503)
    assert not taken["failed"] and taken["changed"] is True, taken.get("msg")
    verified = run_module("engine_snapshot", {"name": engine.name, "snapshot_dir": str(snapdir), "snapshot": "on-503",
                                              "state": "verified"}, **on_503)
    assert not verified["failed"] and verified["changed"] is False, verified.get("msg")


def test_metrics_reads_the_logs_since_a_fractional_time_on_docker_sdk_5_0_3(make_fleet, run_module, debian_python):
    engine = make_fleet(1).engines[0]
    since = f"{time.time():.3f}"  # a float: SDK 5.0.3 refused it ("since value should be datetime or positive int")
    observed = run_module("engine_metrics", {"name": engine.name, "engine_key": engine.key, "since": since,
                                             "probes": 20}, ANSIBLE_PYTHON_INTERPRETER=debian_python)
    assert not observed["failed"], observed.get("msg")
    window = observed["window"]
    assert window["probes"]["sent"] == 20
    # The 20 probes started after `since` and the logs (read with since) say so.
    assert window["logs"]["turns_started"] >= 20 and window["turns"] >= 20


def test_drain_accounts_turns_from_the_logs_on_docker_sdk_5_0_3(make_fleet, run_module, debian_python):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    container = fleet.container(engine)
    # Long enough to be still in flight when the drain (after the ansible CLI starts up) sends SIGTERM.
    holder = threading.Thread(target=lambda: engine.client(timeout=60).execute("Hold [sim:sleep=15000]", "held-503"),
                              daemon=True)
    holder.start()
    deadline = time.monotonic() + 15
    while b'"Starting execution"' not in container.logs():
        assert time.monotonic() < deadline, "the held turn did not start"
        time.sleep(0.05)
    drained = run_module("engine_drain", {"name": engine.name, "grace_period": 60},
                         ANSIBLE_PYTHON_INTERPRETER=debian_python)
    holder.join(30)
    assert not drained["failed"], drained.get("msg")
    drain = drained["drain"]
    assert drained["changed"] is True and drain["account_source"] == "logs" and drain["in_flight"] == 1
    assert [(t["task_id"], t["outcome"]) for t in drain["turns"]] == [("held-503", "completed")]
    container.reload()
    assert container.status == "exited"


def test_a_canary_metrics_window_under_load_on_docker_sdk_5_0_3(make_fleet, run_module, debian_python):
    engine = make_fleet(1).engines[0]
    since = f"{time.time():.3f}"
    load = LoadGenerator([engine], workers_per_engine=2, seconds=60, pause=0.05).start()
    try:
        time.sleep(2)
        observed = run_module("engine_metrics", {"name": engine.name, "engine_key": engine.key, "since": since,
                                                 "probes": 10}, ANSIBLE_PYTHON_INTERPRETER=debian_python)
    finally:
        load.stop()
    assert not observed["failed"], observed.get("msg")
    window = observed["window"]
    assert window["probes"]["sent"] == 10 and window["logs"]["turns_started"] > 10  # probes and the load's turns


@pytest.mark.parametrize("module", ["engine_info", "engine_health", "engine_snapshot", "engine_drain",
                                    "engine_metrics"])
def test_an_older_docker_sdk_fails_at_once_saying_how_to_get_a_right_one(make_fleet, run_module, module):
    python = sdk_venv("docker-4.4.4", TOO_OLD)
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    result = run_module(module, {"name": engine.name}, ANSIBLE_PYTHON_INTERPRETER=python)
    assert result["failed"]
    msg = result["msg"]
    assert "is 4.4.4" in msg and "5.0.3 or newer" in msg and python in msg
    assert "python3-docker" in msg and "ansible_python_interpreter" in msg and "engineops.fleet.host" in msg
    container = fleet.container(engine)
    container.reload()
    assert container.status == "running"  # nothing was done
