"""The engines inventory plugin against real fleets on the local Docker daemon, through the real Ansible CLI:
``ansible-inventory --list/--graph/--host``, the cache, keys that never show, constructed options, and playbooks
(health, an upgrade) run over the inventory it makes."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.engineops.fleet.plugins.filter.fleet import canary_cohort
from tests.engine_sim import releases
from tests.integration.conftest import BIN, ROOT, ansible_env
from tests.integration.rollouts import FAST, explain, versions
from tests.testbed.fleet import LABEL
from tests.testbed.images import image_ref

DOCKER_HOST = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
ENV_KEY = "{{ lookup('ansible.builtin.env', 'ENGINE_KEY') }}"


def write_config(folder: Path, fleet, name: str = "fleet.engines.yml", **options) -> Path:
    """An inventory folder with the plugin's config for ``fleet`` (selected by its test bed label)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "plugin": "engineops.fleet.engines",
        "docker_hosts": [{"docker_host": DOCKER_HOST, "name": "local"}],
        "labels": [f"{LABEL}={fleet.prefix}"],
        **options,
    }
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


def inventory_cli(tmp_path: Path, source: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``ansible-inventory -i source args``; a source that fails to parse fails the command."""
    cmd = [str(BIN / "ansible-inventory"), "-i", str(source), *args]
    full_env = ansible_env(tmp_path, ANSIBLE_INVENTORY_UNPARSED_FAILED="1", **env)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=300, check=False)


def listed(tmp_path: Path, source: Path, **env: str) -> dict:
    proc = inventory_cli(tmp_path, source, "--list", **env)
    assert proc.returncode == 0, explain(proc)
    return json.loads(proc.stdout)


def plain(value):
    """A host variable as ``--list`` shows it: values read from Docker are marked unsafe."""
    return value["__ansible_unsafe"] if isinstance(value, dict) and "__ansible_unsafe" in value else value


def group_hosts(data: dict, group: str) -> list[str]:
    return sorted(data.get(group, {}).get("hosts", []))


def test_list_and_graph_of_a_real_fleet(make_fleet, tmp_path):
    fleet = make_fleet(4)
    patched = fleet.engines[:2]
    for engine in patched:
        fleet.swap(engine, "patch")
    fleet.wait_healthy(60)
    source = write_config(tmp_path / "inventory", fleet, canary_percent=25)
    data = listed(tmp_path, source)
    names = sorted(e.name for e in fleet.engines)
    assert group_hosts(data, "engines") == names
    hostvars = data["_meta"]["hostvars"]
    for engine in fleet.engines:
        host = {k: plain(v) for k, v in hostvars[engine.name].items()}
        assert host == {
            "engine_name": engine.name,
            "engine_url": engine.url,
            "engine_version": releases.tag("patch" if engine in patched else "baseline"),
            "engine_image": fleet.container(engine).attrs["Config"]["Image"],
            "engine_docker_host": DOCKER_HOST,
            "engine_docker_host_name": "local",
            "ansible_connection": "local",
        }
    version_group = "engine_version_" + releases.tag("patch").replace(".", "_")
    assert group_hosts(data, version_group) == sorted(e.name for e in patched)
    assert group_hosts(data, "docker_host_local") == names
    assert group_hosts(data, "engine_canary") == canary_cohort(names, 25)
    assert group_hosts(data, "engine_rest") == sorted(set(names) - set(canary_cohort(names, 25)))
    assert sorted(data["engines"]["children"]) == sorted(
        ["docker_host_local", "engine_canary", "engine_rest", version_group,
         "engine_version_" + releases.tag("baseline").replace(".", "_")])

    graph = inventory_cli(tmp_path, source, "--graph", version_group)
    assert graph.returncode == 0, explain(graph)
    assert graph.stdout.split() == [f"@{version_group}:"] + [f"|--{e.name}" for e in sorted(patched, key=lambda e: e.name)]

    one = inventory_cli(tmp_path, source, "--host", fleet.engines[0].name)
    assert one.returncode == 0, explain(one)
    assert plain(json.loads(one.stdout)["engine_url"]) == fleet.engines[0].url


def test_engines_of_other_fleets_and_other_images_are_left_out(make_fleet, docker_client, tmp_path):
    fleet = make_fleet(2)
    other = make_fleet(1)
    # A container of this fleet that is no Engine (another image), and a stopped Engine.
    docker_client.containers.create(image_ref("baseline", releases.REPOSITORY + "-alt"),
                                    name=f"not-an-engine-{fleet.prefix}", labels=fleet.labels())
    fleet.container(fleet.engines[1]).stop(timeout=30)
    source = write_config(tmp_path / "inventory", fleet)
    assert group_hosts(listed(tmp_path, source), "engines") == [fleet.engines[0].name]
    with_stopped = write_config(tmp_path / "inventory", fleet, include_stopped=True)
    data = listed(tmp_path, with_stopped)
    assert group_hosts(data, "engines") == sorted(e.name for e in fleet.engines)
    assert other.engines[0].name not in data["_meta"]["hostvars"]
    by_label = write_config(tmp_path / "inventory", fleet, image_repositories=[], include_stopped=True)
    assert group_hosts(listed(tmp_path, by_label), "engines") == sorted(
        [e.name for e in fleet.engines] + [f"not-an-engine-{fleet.prefix}"])


@pytest.mark.parametrize("lookup", ["env", "file"])
def test_keys_never_show_and_reach_the_tasks(make_fleet, run_playbook, tmp_path, lookup):
    fleet = make_fleet(2)
    key = fleet.engines[0].key
    keys = tmp_path / "keys"
    keys.mkdir()
    for engine in fleet.engines:
        (keys / engine.name).write_text(key + "\n")
    template = ENV_KEY if lookup == "env" else "{{ lookup('ansible.builtin.file', '%s/' ~ engine_name) }}" % keys
    source = write_config(tmp_path / "inventory", fleet, key_template=template,
                          cache=True, cache_plugin="ansible.builtin.jsonfile", cache_connection=str(tmp_path / "cache"))
    for args in (["--list"], ["--list", "--yaml"], ["--list", "--export"], ["--host", fleet.engines[0].name]):
        proc = inventory_cli(tmp_path, source, *args, ENGINE_KEY=key)
        assert proc.returncode == 0, explain(proc)
        assert fleet.engines[0].name in proc.stdout
        assert key not in proc.stdout + proc.stderr, args
    assert "engine_key" in proc.stdout  # the template is there, its value is not
    cached = list((tmp_path / "cache").iterdir())
    assert cached and not any(key in p.read_text() for p in cached)

    # The template is resolved when a task needs the key: the Engines answer an endpoint that requires it.
    playbook = tmp_path / "export.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Read each Engine's memory with its key",
        "hosts": "engines",
        "gather_facts": False,
        "tasks": [{"name": "Export", "ansible.builtin.uri": {
            "url": "{{ engine_url }}/memory/export", "headers": {"X-Engine-Key": "{{ engine_key }}"},
            "status_code": [200, 401]}, "register": "export"},
            {"name": "Report", "ansible.builtin.debug": {"msg": "status={{ export.status }}"}}],
    }]))
    good = run_playbook(playbook, source, ENGINE_KEY=key)
    assert good.returncode == 0, explain(good)
    assert good.stdout.count("status=200") == 2, explain(good)
    assert key not in good.stdout
    if lookup == "env":
        wrong = run_playbook(playbook, source, ENGINE_KEY="not-" + key)
        assert wrong.stdout.count("status=401") == 2, explain(wrong)


def test_a_literal_key_is_refused(make_fleet, tmp_path):
    fleet = make_fleet(1, start=False)
    source = write_config(tmp_path / "inventory", fleet, key_template=fleet.engines[0].key)
    proc = inventory_cli(tmp_path, source, "--list")
    assert proc.returncode != 0
    assert "key_template must be a template" in proc.stderr, explain(proc)
    assert fleet.engines[0].key not in proc.stdout + proc.stderr


def test_the_cache_serves_the_listing_until_flushed(make_fleet, tmp_path):
    fleet = make_fleet(3)
    cache = {"cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(tmp_path / "cache")}
    source = write_config(tmp_path / "inventory", fleet, **cache)
    names = sorted(e.name for e in fleet.engines)
    assert group_hosts(listed(tmp_path, source), "engines") == names
    gone = fleet.engines[2]
    fleet.container(gone).remove(force=True)
    # From the cache: the removed Engine is still listed, and the other options apply at once.
    regrouped = write_config(tmp_path / "inventory", fleet, engines_group="fleet", **cache)
    assert group_hosts(listed(tmp_path, regrouped), "fleet") == names
    flushed = inventory_cli(tmp_path, regrouped, "--list", "--flush-cache")
    assert flushed.returncode == 0, explain(flushed)
    assert group_hosts(json.loads(flushed.stdout), "fleet") == names[:2]
    assert group_hosts(listed(tmp_path, regrouped), "fleet") == names[:2]
    # Without the cache, the daemon is asked every time.
    fleet.start(gone)
    uncached = write_config(tmp_path / "inventory", fleet)
    assert group_hosts(listed(tmp_path, uncached), "engines") == names


def test_compose_groups_keyed_groups_and_strict(make_fleet, docker_client, tmp_path):
    fleet = make_fleet(2)
    # A created (never started) Engine container whose label holds a template: read from Docker, never run.
    odd = f"engine-{fleet.prefix}-odd"
    docker_client.containers.create(fleet.image, name=odd, labels={**fleet.labels(), "io.example.note": "{{ 7 * 6 }}"})
    options = {
        "include_stopped": True,
        "strict": True,
        "compose": {"engine_port_published": "engine_host_port", "engine_note": "engine_labels['io.example.note'] | default('')"},
        "groups": {"engines_not_running": "engine_state != 'running'"},
        "keyed_groups": [{"key": f"engine_labels['{LABEL}']", "prefix": "fleet"},
                         {"key": "engine_state", "prefix": "state"}],
    }
    source = write_config(tmp_path / "inventory", fleet, **options)
    data = listed(tmp_path, source)
    hostvars = data["_meta"]["hostvars"]
    for engine in fleet.engines:
        assert hostvars[engine.name]["engine_port_published"] == engine.port
    assert plain(hostvars[odd]["engine_note"]) == "{{ 7 * 6 }}"
    assert "engine_url" not in hostvars[odd]  # created, so nothing published yet
    assert group_hosts(data, "engines_not_running") == [odd]
    assert group_hosts(data, f"fleet_{fleet.prefix}") == sorted([odd] + [e.name for e in fleet.engines])
    assert group_hosts(data, "state_created") == [odd]

    # The label's template is not run in a play either.
    playbook = tmp_path / "note.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Show the note", "hosts": odd, "gather_facts": False,
                                         "tasks": [{"name": "Note", "ansible.builtin.debug": {"var": "engine_note"}}]}]))
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(playbook), "-i", str(source)], env=ansible_env(tmp_path),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, explain(proc)
    assert '"engine_note": "{{ 7 * 6 }}"' in proc.stdout, explain(proc)

    # strict: an expression that fails for a host fails the inventory; without strict, the host is left without it.
    failing = {**options, "compose": {"engine_tier": "engine_labels['io.example.tier']"}}
    proc = inventory_cli(tmp_path, write_config(tmp_path / "inventory", fleet, **failing), "--list")
    assert proc.returncode != 0
    assert "Could not set engine_tier for host" in proc.stderr, explain(proc)
    data = listed(tmp_path, write_config(tmp_path / "inventory", fleet, **{**failing, "strict": False}))
    assert group_hosts(data, "engines") == sorted([odd] + [e.name for e in fleet.engines])
    assert not any("engine_tier" in h for h in data["_meta"]["hostvars"].values())


def test_two_docker_hosts_with_the_same_engine_names(make_fleet, tmp_path):
    fleet = make_fleet(2)
    two = [{"docker_host": DOCKER_HOST, "name": "left"}, {"docker_host": DOCKER_HOST, "name": "right"}]
    clash = inventory_cli(tmp_path, write_config(tmp_path / "inventory", fleet, docker_hosts=two), "--list")
    assert clash.returncode != 0
    assert f"Two Engines get the inventory name '{fleet.engines[0].name}'" in clash.stderr, explain(clash)
    source = write_config(tmp_path / "inventory", fleet, docker_hosts=two,
                          hostname="engine_docker_host_name ~ '-' ~ engine_name")
    data = listed(tmp_path, source)
    assert group_hosts(data, "docker_host_right") == sorted(f"right-{e.name}" for e in fleet.engines)
    assert len(group_hosts(data, "engines")) == 4
    assert plain(data["_meta"]["hostvars"][f"left-{fleet.engines[1].name}"]["engine_name"]) == fleet.engines[1].name


def test_an_unreachable_docker_host_is_named(make_fleet, tmp_path):
    fleet = make_fleet(1, start=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    hosts = [{"docker_host": DOCKER_HOST, "name": "local"},
             {"docker_host": f"tcp://127.0.0.1:{port}", "name": "down", "ansible_connection": "local"}]
    proc = inventory_cli(tmp_path, write_config(tmp_path / "inventory", fleet, docker_hosts=hosts, timeout=5), "--list")
    assert proc.returncode != 0
    assert f"Cannot list the Engine containers of Docker host down (tcp://127.0.0.1:{port})" in proc.stderr, explain(proc)


def test_the_demo_inventory(make_fleet, tmp_path):
    """inventories/demo as shipped, but for a test fleet: its label, and the demo's key when ENGINE_KEY is unset."""
    fleet = make_fleet(2, key="demo-key-not-a-secret")
    folder = tmp_path / "demo"
    shutil.copytree(ROOT / "inventories" / "demo", folder)
    config_file = folder / "demo.engines.yml"
    config = yaml.safe_load(config_file.read_text())
    assert config["labels"] == [f"{LABEL}=demo"]
    config_file.write_text(yaml.safe_dump({**config, "labels": [f"{LABEL}={fleet.prefix}"]}))
    data = listed(tmp_path, folder)
    assert group_hosts(data, "engines") == sorted(e.name for e in fleet.engines)
    playbook = tmp_path / "key.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Export", "hosts": "engines", "gather_facts": False, "tasks": [
        {"name": "Export", "ansible.builtin.uri": {"url": "{{ engine_url }}/memory/export",
                                                   "headers": {"X-Engine-Key": "{{ engine_key }}"}}}]}]))
    env = ansible_env(tmp_path)
    env.pop("ENGINE_KEY", None)
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(playbook), "-i", str(folder)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, explain(proc)


@pytest.mark.timeout(2400)  # real Engines upgraded; slow on a loaded machine
def test_playbooks_run_over_the_plugin_inventory(make_fleet, run_playbook, tmp_path):
    fleet = make_fleet(2)
    folder = tmp_path / "inventory"
    source = write_config(folder, fleet, key_template=ENV_KEY)
    (folder / "group_vars").mkdir()
    (folder / "group_vars" / "engines.yml").write_text(yaml.safe_dump({
        "ansible_python_interpreter": sys.executable,
        "engine_snapshot_dir": str(tmp_path / "snapshots"),
        "engine_baseline_dir": str(tmp_path / "baselines"),
        "engine_ledger_dir": str(tmp_path / "ledger"),
        "engine_batches": ["100%"],
        **FAST,
        # The inventory is the point here, not the verdicts: latency measured minutes apart on a busy
        # machine can fail an identical release (the metrics gate is tested by the rollout tests).
        "engine_metrics_enabled": False,
    }))
    key = {"ENGINE_KEY": fleet.engines[0].key}
    health = run_playbook("engineops.fleet.health", folder, None, **key)
    assert health.returncode == 0, explain(health)
    assert health.stdout.count(f"{releases.tag('baseline')} ready") == 2, explain(health)

    upgrade = run_playbook("engineops.fleet.upgrade", folder, {"engine_target_version": releases.tag("patch")},
                           ANSIBLE_FORKS="4", **key)
    assert upgrade.returncode == 0, explain(upgrade)
    assert set(versions(fleet).values()) == {releases.tag("patch")}
    data = listed(tmp_path, source)
    assert group_hosts(data, "engine_version_" + releases.tag("patch").replace(".", "_")) == sorted(
        e.name for e in fleet.engines)


@pytest.mark.timeout(2400)  # Docker hosts behind SSH on a loaded machine
def test_docker_hosts_over_ssh(ssh_bed, make_ssh_fleet, tmp_path):
    """The plugin lists the Engines of the SSH test bed's Docker hosts through ssh:// (use_ssh_client), and the
    playbooks run on those hosts over SSH with what it made."""
    fleets = make_ssh_fleet(2)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # The ssh command the Docker SDK runs (and Ansible's) with the test bed's key and known_hosts, as an
    # operator's ~/.ssh/config would give them.
    config = tmp_path / "ssh_config"
    config.write_text(f"Host 127.0.0.1\n  IdentityFile {ssh_bed.client_key}\n  IdentitiesOnly yes\n"
                      f"  UserKnownHostsFile {ssh_bed.known_hosts}\n  StrictHostKeyChecking yes\n  BatchMode yes\n")
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f"#!/bin/sh\nexec {shutil.which('ssh')} -F {config} \"$@\"\n")
    wrapper.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    keys = tmp_path / "keys"
    keys.mkdir()
    for fleet in fleets:
        for engine in fleet.engines:
            (keys / engine.name).write_text(engine.key)
    hosts = []
    for host in ssh_bed.hosts:
        own = {k: v for k, v in host.inventory_vars().items() if k not in ("ansible_host", "ansible_port", "ansible_user")}
        hosts.append({"name": host.name, "docker_host": f"ssh://root@127.0.0.1:{host.ssh_port}", "use_ssh_client": True,
                      "vars": own})
    folder = tmp_path / "inventory"
    source = write_config(folder, fleets[0], docker_hosts=hosts, labels=[], timeout=120,
                          key_template="{{ lookup('ansible.builtin.file', '%s/' ~ engine_name) }}" % keys)
    data = listed(tmp_path, source, **env)
    hostvars = data["_meta"]["hostvars"]
    for host, fleet in zip(ssh_bed.hosts, fleets):
        group = "docker_host_" + host.name.replace("-", "_")
        assert group_hosts(data, group) == sorted(e.name for e in fleet.engines)
        for engine in fleet.engines:
            got = {k: plain(hostvars[engine.name][k]) for k in
                   ("engine_url", "engine_docker_host", "ansible_host", "ansible_port", "ansible_user", "engine_version")}
            assert got == {"engine_url": f"http://127.0.0.1:{engine.published_port}",
                           "engine_docker_host": "unix:///var/run/docker.sock", "ansible_host": "127.0.0.1",
                           "ansible_port": host.ssh_port, "ansible_user": "root",
                           "engine_version": releases.tag("baseline")}
    assert not any(e.key in json.dumps(data) for fleet in fleets for e in fleet.engines)

    # The health playbook and a keyed call run on the Docker hosts, against their own socket and 127.0.0.1.
    (folder / "group_vars").mkdir()
    (folder / "group_vars" / "engines.yml").write_text(yaml.safe_dump({"engine_health_timeout": 60}))
    full_env = ansible_env(tmp_path, ANSIBLE_INVENTORY_UNPARSED_FAILED="1", ANSIBLE_FORKS="8", **env)
    full_env.pop("ANSIBLE_PYTHON_INTERPRETER")  # each host's own Python, from the inventory
    del full_env["ANSIBLE_CALLBACKS_ENABLED"]
    health = subprocess.run([str(BIN / "ansible-playbook"), "engineops.fleet.health", "-i", str(folder)], env=full_env,
                            capture_output=True, text=True, timeout=900, check=False)
    assert health.returncode == 0, explain(health)
    assert health.stdout.count(f"{releases.tag('baseline')} ready") == 4, explain(health)
    playbook = tmp_path / "export.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Export", "hosts": "engines", "gather_facts": False, "tasks": [
        {"name": "Export", "ansible.builtin.uri": {"url": "{{ engine_url }}/memory/export",
                                                   "headers": {"X-Engine-Key": "{{ engine_key }}"}}}]}]))
    export = subprocess.run([str(BIN / "ansible-playbook"), str(playbook), "-i", str(folder)], env=full_env,
                            capture_output=True, text=True, timeout=900, check=False)
    assert export.returncode == 0, explain(export)
    assert "ok=1" in export.stdout and "failed=0" in export.stdout, explain(export)
