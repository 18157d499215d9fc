# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The engines inventory plugin at 1,000 Engine containers over 20 Docker hosts, against baselines of the same run.

    .venv/bin/python benchmarks/inventory_scale.py [--hosts 20] [--per-host 50] [--latency 0.05] [--rounds 5]
                                                  [--output FILE]

Each "Docker host" is a stub of the Docker Engine API on 127.0.0.1 (an HTTP
server of its own on its own port) that answers what the plugin asks:
``/_ping``, ``/version`` and ``/containers/json`` (with its label filter),
the last after ``--latency`` seconds, a stand-in for a remote daemon's round
trip. It holds ``--per-host`` Engine containers in the shape the daemon
gives them (names, image, labels, published port, mounts), on two versions.

Per round, in turn:

- **SDK, one host after the other**: a bare ``docker.APIClient`` per host and
  its ``containers()`` call, as a script that lists the fleet would do;
- **plugin, in process**: ``InventoryManager`` over the plugin's config (the
  same calls, every host at once, plus building 1,000 hosts and their groups);
- **static YAML**: ``ansible-inventory --list`` of a YAML inventory holding the
  very hosts, variables and groups the plugin makes (what a hand-kept
  inventory of that fleet costs);
- **plugin, CLI**: ``ansible-inventory --list`` over the plugin, and again
  with ``cache: true`` (jsonfile) once the cache is warm.

Prints the medians and the ratios (plugin in process / SDK one host after the
other; CLI plugin / CLI static; CLI cached / CLI static), checks each
inventory has every Engine, and writes the figures as JSON to ``--output``
(default ``tests/output/bench/inventory_scale.json``, ignored by git).
Nothing but 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tests  # noqa: E402  (makes the collection importable as ansible_collections.engineops.fleet)

BIN = os.path.dirname(sys.executable)
FLEET_LABEL = "io.example.fleet=bench"
API_VERSION = "1.45"


def stub_containers(host: int, count: int) -> list[dict]:
    """``count`` Engine containers of stub host ``host``, as ``GET /containers/json`` lists them."""
    containers = []
    for i in range(count):
        name = f"engine-h{host:02d}-{i:03d}"
        containers.append({
            "Id": f"{host:04x}{i:04x}".ljust(64, "0"),
            "Names": [f"/{name}"],
            "Image": f"registry.example.com/september-engine:{'2.3.1' if i % 3 else '2.3.0'}",
            "ImageID": "sha256:" + f"{i % 3:02x}" * 32,
            "Command": "python3 /app/engine.py",
            "Created": 1764750000 + i,
            "State": "running",
            "Status": "Up 2 days",
            "Labels": {"io.example.fleet": "bench", "io.example.user": f"user-{host}-{i}"},
            "Ports": [{"IP": "127.0.0.1", "PrivatePort": 8000, "PublicPort": 9001 + i, "Type": "tcp"}],
            "Mounts": [{"Type": "volume", "Name": f"engine-data-{name}", "Source": f"/var/lib/docker/volumes/engine-data-{name}/_data",
                        "Destination": "/data", "Driver": "local", "Mode": "z", "RW": True, "Propagation": ""}],
            "HostConfig": {"NetworkMode": "bridge"},
            "NetworkSettings": {"Networks": {"bridge": {"IPAddress": f"172.17.{i // 250}.{i % 250 + 2}"}}},
        })
    return containers


class StubDockerHost:
    """One stub Docker daemon on 127.0.0.1: /_ping, /version and /containers/json (label filter honoured)."""

    def __init__(self, containers: list[dict], latency: float) -> None:
        body = {"all": containers}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def reply(self, code: int, payload, content_type: str = "application/json") -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Api-Version", API_VERSION)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
                self.do_GET()

            def do_GET(self) -> None:  # noqa: N802
                url = urlsplit(self.path)
                path = "/" + url.path.lstrip("/").split("/", 1)[-1] if url.path.startswith("/v1.") else url.path
                stub.requests.append(path)
                if path == "/_ping":
                    self.reply(200, b"OK", "text/plain")
                elif path == "/version":
                    self.reply(200, {"Version": "28.2.2", "ApiVersion": API_VERSION, "MinAPIVersion": "1.24",
                                     "Os": "linux", "Arch": "amd64"})
                elif path == "/containers/json":
                    time.sleep(latency)
                    filters = json.loads(parse_qs(url.query).get("filters", ["{}"])[0])
                    wanted = filters.get("label") or []
                    listed = [c for c in body["all"] if all(self.has_label(c, label) for label in wanted)]
                    self.reply(200, listed)
                else:
                    self.reply(404, {"message": f"stub: no {path}"})

            @staticmethod
            def has_label(container: dict, label: str) -> bool:
                key, sep, value = label.partition("=")
                return key in container["Labels"] and (not sep or container["Labels"][key] == value)

        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"tcp://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def timed(action) -> tuple[float, object]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def sdk_sequential(urls: list[str]) -> int:
    """The baseline: every host's containers with a bare SDK client, one host after the other."""
    import docker

    total = 0
    for url in urls:
        client = docker.APIClient(base_url=url, version="auto", timeout=60)
        total += len(client.containers(filters={"label": [FLEET_LABEL]}))
        client.close()
    return total


def plugin_in_process(config: str) -> int:
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    inventory = InventoryManager(loader=DataLoader(), sources=[config])
    return len(inventory.groups["engines"].get_hosts()) if "engines" in inventory.groups else 0


def cli_list(source: str, env: dict[str, str], *extra: str) -> int:
    proc = subprocess.run([os.path.join(BIN, "ansible-inventory"), "-i", source, "--list", *extra], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ansible-inventory -i {source} failed:\n{proc.stderr[-3000:]}")
    return len(json.loads(proc.stdout).get("engines", {}).get("hosts", []))


def static_inventory(listing: dict) -> dict:
    """The YAML inventory holding what ``ansible-inventory --list`` showed, group by group."""
    hostvars = {
        name: {k: v["__ansible_unsafe"] if isinstance(v, dict) and "__ansible_unsafe" in v else v for k, v in hv.items()}
        for name, hv in listing["_meta"]["hostvars"].items()
    }
    groups = {
        group: {"hosts": {h: (hostvars[h] if group == "engines" else None) for h in body.get("hosts", [])},
                "children": {c: None for c in body.get("children", []) if c != "ungrouped"}}
        for group, body in listing.items() if group not in ("_meta", "all", "ungrouped")
    }
    for body in groups.values():
        if not body["children"]:
            del body["children"]
    return {"all": {"children": groups}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--per-host", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds each /containers/json takes (default 0.05)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", default=os.path.join(ROOT, "tests", "output", "bench", "inventory_scale.json"))
    args = parser.parse_args()
    engines = args.hosts * args.per_host

    from ansible.plugins.loader import init_plugin_loader

    init_plugin_loader([tests._TREE])
    stubs = [StubDockerHost(stub_containers(h, args.per_host), args.latency) for h in range(args.hosts)]
    work = tempfile.mkdtemp(prefix="inventory-scale-")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=tests._TREE, ANSIBLE_INVENTORY_UNPARSED_FAILED="1",
               ANSIBLE_DEPRECATION_WARNINGS="0", ANSIBLE_LOCAL_TEMP=os.path.join(work, "tmp"))
    config = {
        "plugin": "engineops.fleet.engines",
        "docker_hosts": [{"name": f"docker-{h:02d}", "docker_host": s.url, "ansible_host": f"docker-{h:02d}.example.com",
                          "ansible_user": "engineops"} for h, s in enumerate(stubs)],
        "labels": [FLEET_LABEL],
        "key_template": "{{ lookup('ansible.builtin.env', 'ENGINE_KEY') }}",
        "keyed_groups": [{"key": "engine_labels['io.example.fleet']", "prefix": "fleet"}],
    }
    source = os.path.join(work, "fleet.engines.yml")
    cached_source = os.path.join(work, "cached.engines.yml")
    with open(source, "w") as handle:
        yaml.safe_dump(config, handle)
    with open(cached_source, "w") as handle:
        yaml.safe_dump({**config, "cache": True, "cache_plugin": "ansible.builtin.jsonfile",
                        "cache_connection": os.path.join(work, "cache")}, handle)
    listing = json.loads(subprocess.run([os.path.join(BIN, "ansible-inventory"), "-i", source, "--list"], env=env,
                                        capture_output=True, text=True, check=True, timeout=600).stdout)
    static = os.path.join(work, "static.yml")
    with open(static, "w") as handle:
        yaml.safe_dump(static_inventory(listing), handle)
    cli_list(cached_source, env)  # warm the cache

    cases = {
        "sdk_sequential": lambda: sdk_sequential([s.url for s in stubs]),
        "plugin_in_process": lambda: plugin_in_process(source),
        "cli_static_yaml": lambda: cli_list(static, env),
        "cli_plugin": lambda: cli_list(source, env),
        "cli_plugin_cached": lambda: cli_list(cached_source, env),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_no in range(args.rounds):
        for name, action in cases.items():
            before = sum(len(s.requests) for s in stubs)
            seconds, found = timed(action)
            calls = sum(len(s.requests) for s in stubs) - before
            if found != engines:
                raise RuntimeError(f"{name} found {found} Engines, not {engines}")
            if name == "cli_plugin_cached" and calls:
                raise RuntimeError(f"the cached inventory asked the stub daemons {calls} times")
            times[name].append(seconds)
        print(f"round {round_no + 1}/{args.rounds}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()), flush=True)
    for stub in stubs:
        stub.close()

    medians = {name: statistics.median(values) for name, values in times.items()}
    ratios = {
        "plugin_in_process / sdk_sequential": medians["plugin_in_process"] / medians["sdk_sequential"],
        "cli_plugin / cli_static_yaml": medians["cli_plugin"] / medians["cli_static_yaml"],
        "cli_plugin_cached / cli_static_yaml": medians["cli_plugin_cached"] / medians["cli_static_yaml"],
    }
    print(f"\n{engines} Engines on {args.hosts} stub Docker hosts, {args.latency * 1000:.0f} ms per list call, "
          f"{args.rounds} rounds (medians)")
    for name, value in medians.items():
        print(f"  {name:<20} {value:7.3f} s")
    for name, value in ratios.items():
        print(f"  {name:<38} {value:5.2f}x")
    result = {"engines": engines, "hosts": args.hosts, "latency": args.latency, "rounds": args.rounds,
              "times": times, "medians": medians, "ratios": ratios,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as handle:
        json.dump(result, handle, indent=2)
    print(f"figures: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
