"""Run the collection's modules and playbooks for real, with the Ansible CLI.

``run_module("engine_info", {"name": ...}, check=True)`` runs
``ansible localhost -m engineops.fleet.engine_info`` and returns the
module's result as Ansible displays it (``callback_plugins/result_file.py``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tests

ROOT = Path(tests._ROOT)
BIN = Path(sys.executable).parent


def ansible_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=tests._TREE,
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_CALLBACK_PLUGINS=str(Path(__file__).parent / "callback_plugins"),
        ANSIBLE_CALLBACKS_ENABLED="result_file",
        RESULT_FILE=str(tmp / "result.json"),
    )
    env.update(extra)
    return env


@pytest.fixture
def run_module(tmp_path):
    """``run_module(name, args, check=False, diff=False)`` -> the module's result dict."""

    def run(name: str, args: dict, check: bool = False, diff: bool = False, **env: str) -> dict:
        result_file = tmp_path / "result.json"
        if result_file.exists():
            result_file.unlink()
        cmd = [str(BIN / "ansible"), "localhost", "-i", "localhost,", "-c", "local",
               "-m", f"engineops.fleet.{name}", "-a", json.dumps(args)]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        proc = subprocess.run(cmd, env=ansible_env(tmp_path, **env), capture_output=True, text=True, timeout=600, check=False)
        if not result_file.exists():
            raise AssertionError(f"{name} left no result\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
        result = json.loads(result_file.read_text())
        # A result does not always carry the failure itself.
        result["failed"] = bool(result.get("failed")) or proc.returncode != 0
        result["_stdout"] = proc.stdout
        result["_stderr"] = proc.stderr  # the warnings
        return result

    return run


@pytest.fixture
def run_playbook(tmp_path):
    """``run_playbook(playbook, inventory, extra_vars=None, *args)`` -> CompletedProcess (stdout, stderr, returncode).

    ``playbook`` is a path or an FQCN (``engineops.fleet.upgrade``); ``inventory`` a path.
    """

    def run(playbook: str, inventory: str | Path, extra_vars: dict | None = None, *args: str,
            timeout: float = 1200, **env: str) -> subprocess.CompletedProcess:
        cmd = [str(BIN / "ansible-playbook"), str(playbook), "-i", str(inventory)]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        cmd += list(args)
        full_env = ansible_env(tmp_path, **env)
        if "ANSIBLE_CALLBACKS_ENABLED" not in env:
            del full_env["ANSIBLE_CALLBACKS_ENABLED"]  # the result file is for ad hoc module runs
        return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)

    return run


@pytest.fixture
def play(run_playbook):
    """``run_playbook`` with enough forks for a whole fleet at once (the pre-flight runs on every Engine)."""

    def run(*args, **env):
        env.setdefault("ANSIBLE_FORKS", "16")
        return run_playbook(*args, **env)

    return run
