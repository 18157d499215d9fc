"""A local fleet of reference Engines, run the way hosted per-user fleets run.

Each Engine is container ``engine-<id>`` with named volume
``engine-data-<id>`` at ``/data``, a host port on 127.0.0.1 from a range,
restart policy ``unless-stopped`` and the env the contract names, on a brain
seeded before first start. Everything the fleet creates carries the label
``io.engineops.testbed=<prefix>`` so it can be torn down whole.

CLI: ``python -m tests.testbed.fleet up|down|status --prefix demo ...``
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import random
import secrets
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import docker

from ansible_collections.engineops.fleet.plugins.module_utils._engine_http import EngineClient
from tests.engine_sim import releases
from tests.testbed.images import image_ref

LABEL = "io.engineops.testbed"
KIND_LABEL = "io.engineops.testbed.kind"
OWNER_LABEL = "io.engineops.testbed.owner"  # pid of the process that made it
DATA_PATH = "/data/brain.sqlite"


@dataclass(frozen=True)
class Engine:
    """One Engine of a fleet: its names, its port and its key."""

    id: str
    port: int  # where this process reaches the Engine (a tunnel's end for an Engine on another Docker host)
    key: str = field(repr=False)
    published_port: int | None = None  # the port its container publishes on its Docker host's 127.0.0.1; default port

    @property
    def name(self) -> str:
        return f"engine-{self.id}"

    @property
    def volume(self) -> str:
        return f"engine-data-{self.id}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, timeout: float = 30.0) -> EngineClient:
        return EngineClient(self.url, key=self.key, timeout=timeout)


def engine_env(key: str, **extra: str) -> dict[str, str]:
    """The environment the contract names for one Engine (fake provider keys)."""
    return {
        "SQLITE_DB_PATH": DATA_PATH,
        "ENGINE_KEY_HASH": hashlib.sha256(key.encode()).hexdigest(),
        "LLM_PROVIDER": "sim",
        "LLM_API_KEY": "sk-sim-" + hashlib.sha256(b"llm" + key.encode()).hexdigest()[:24],
        "LLM_MODEL": "sim-small",
        "OPENAI_API_KEY": "sk-sim-" + hashlib.sha256(b"openai" + key.encode()).hexdigest()[:24],
        **extra,
    }


def free_port_block(count: int, start: int = 19001, stop: int = 29000) -> int:
    """The first port of ``count`` consecutive ports free on 127.0.0.1.

    The search starts at a random place in the range, so that test runs
    side by side seldom pick the same block.
    """
    port = random.randrange(start, stop - count)
    while port + count <= stop:
        for offset in range(count):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port + offset))
                except OSError:
                    port += offset + 1
                    break
        else:
            return port
    raise RuntimeError(f"no {count} consecutive free ports between {start} and {stop}")


class Fleet:
    """``count`` Engines named ``engine-<prefix>-NN`` on ports ``first_port``..."""

    def __init__(
        self,
        prefix: str,
        count: int,
        *,
        release: str = "baseline",
        repository: str = releases.REPOSITORY,
        first_port: int = 9001,
        seed_rows: int = 200,
        key: str | None = None,
        kind: str = "test",
        docker_client: docker.DockerClient | None = None,
    ) -> None:
        self.prefix = prefix
        self.release = release
        self.repository = repository
        self.seed_rows = seed_rows
        self.kind = kind
        self.docker = docker_client or docker.from_env(timeout=120)
        key = key or secrets.token_hex(16)
        self.engines = [Engine(f"{prefix}-{i:02d}", first_port + i - 1, key) for i in range(1, count + 1)]

    @property
    def image(self) -> str:
        return image_ref(self.release, self.repository)

    def labels(self) -> dict[str, str]:
        return {LABEL: self.prefix, KIND_LABEL: self.kind, OWNER_LABEL: str(os.getpid())}

    def seed(self, engine: Engine) -> None:
        """Create the Engine's volume and seed a brain on it with the release's schema."""
        self.docker.volumes.create(engine.volume, labels=self.labels())
        self.docker.containers.run(
            self.image,
            ["python3", "/app/seed.py", "--rows", str(self.seed_rows), "--db", DATA_PATH],
            volumes={engine.volume: {"bind": "/data", "mode": "rw"}},
            labels=self.labels(),
            remove=True,
        )

    def start(self, engine: Engine, image: str | None = None, **extra_env: str):
        """Create and start the Engine's container; return the container."""
        return self.docker.containers.run(
            image or self.image,
            name=engine.name,
            detach=True,
            environment=engine_env(engine.key, **extra_env),
            volumes={engine.volume: {"bind": "/data", "mode": "rw"}},
            ports={"8000/tcp": ("127.0.0.1", engine.published_port or engine.port)},
            restart_policy={"Name": "unless-stopped"},
            labels=self.labels(),
        )

    def container(self, engine: Engine):
        return self.docker.containers.get(engine.name)

    def brain_path(self, engine: Engine) -> str:
        """The brain's path on this host (inside the volume's mount point)."""
        mountpoint = self.docker.volumes.get(engine.volume).attrs["Mountpoint"]
        return os.path.join(mountpoint, os.path.basename(DATA_PATH))

    def swap(self, engine: Engine, release: str, repository: str | None = None, **extra_env: str):
        """Drain and remove the Engine's container, start ``release`` on the same volume."""
        container = self.container(engine)
        container.stop(timeout=30)
        container.remove()
        return self.start(engine, image_ref(release, repository or self.repository), **extra_env)

    def up(self, wait: float = 60.0) -> list[Engine]:
        """Seed and start every Engine, then wait until each is healthy."""
        self.docker.images.get(self.image)  # clear error now if the matrix was not built

        def bring_up(engine: Engine) -> None:
            self.seed(engine)
            self.start(engine)

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(bring_up, self.engines))
        if wait:
            self.wait_healthy(wait)
        return self.engines

    def wait_healthy(self, timeout: float, engines: list[Engine] | None = None) -> None:
        """Wait until every Engine (or every one of ``engines``) is ready."""
        deadline = time.monotonic() + timeout
        pending = list(engines or self.engines)
        while pending:
            pending = [e for e in pending if not e.client(timeout=2).health().ready]
            if pending and time.monotonic() > deadline:
                names = ", ".join(e.name for e in pending)
                raise TimeoutError(f"not healthy after {timeout:.0f}s: {names}")
            if pending:
                time.sleep(0.2)

    def down(self) -> None:
        remove_labelled(self.docker, f"{LABEL}={self.prefix}")


def wait_for_exit(container, timeout: float = 30.0) -> int:
    """The exit code of ``container`` once it has exited (or is waiting to restart)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status in ("exited", "restarting"):
            return container.attrs["State"]["ExitCode"]
        time.sleep(0.1)
    raise TimeoutError(f"{container.name} still {container.status} after {timeout:.0f}s")


def remove_orphans(client: docker.DockerClient, kind: str = "test") -> int:
    """Remove the ``kind`` fleets whose owner process is gone (an interrupted run).

    Test workers start together and each cleans up; a lock file makes them take turns.
    """
    with open(f"/tmp/engineops-testbed-{kind}-orphans.lock", "w", encoding="ascii") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _remove_orphans(client, kind)


def _remove_orphans(client: docker.DockerClient, kind: str) -> int:
    owners = {
        c.labels.get(OWNER_LABEL, "")
        for c in client.containers.list(all=True, filters={"label": f"{KIND_LABEL}={kind}"})
    }
    owners |= {v.attrs["Labels"].get(OWNER_LABEL, "") for v in client.volumes.list(filters={"label": f"{KIND_LABEL}={kind}"})}
    removed = 0
    for owner in owners:
        if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            removed += remove_labelled(client, f"{OWNER_LABEL}={owner}")
    return removed


def remove_labelled(client: docker.DockerClient, label: str) -> int:
    """Remove every container and volume carrying ``label``; return how many containers."""
    containers = client.containers.list(all=True, filters={"label": label})
    for container in containers:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass  # another test worker cleaning the same leftovers got there first
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: its removal is already in progress
                raise
            try:
                container.wait(condition="removed", timeout=60)
            except docker.errors.NotFound:
                pass
    for volume in client.volumes.list(filters={"label": label}):
        try:
            volume.remove(force=True)
        except docker.errors.NotFound:
            pass
    return len(containers)


def status_rows(client: docker.DockerClient, prefix: str) -> list[dict[str, str]]:
    """One row per Engine container of ``prefix``: name, image, version, port, state."""
    rows = []
    for container in sorted(client.containers.list(all=True, filters={"label": f"{LABEL}={prefix}"}), key=lambda c: c.name):
        ports = container.attrs["HostConfig"].get("PortBindings") or {}
        binding = (ports.get("8000/tcp") or [{}])[0]
        image = container.attrs["Config"]["Image"]
        rows.append(
            {
                "name": container.name,
                "image": image,
                "version": image.rsplit(":", 1)[-1],
                "port": binding.get("HostPort", "-"),
                "state": container.status,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local fleet of reference Engines.")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--prefix", default="demo", help="Engine ids are <prefix>-NN (default: demo)")
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--release", default="baseline", help="a release name of tests/engine_sim/releases.py")
    parser.add_argument("--repository", default=releases.REPOSITORY)
    parser.add_argument("--first-port", type=int, default=9001)
    parser.add_argument("--key", help="the Engines' X-Engine-Key (default: random)")
    args = parser.parse_args(argv)
    client = docker.from_env(timeout=120)
    if args.action == "down":
        removed = remove_labelled(client, f"{LABEL}={args.prefix}")
        print(f"removed {removed} Engines of fleet {args.prefix!r}")
        return 0
    if args.action == "up":
        fleet = Fleet(
            args.prefix, args.count, release=args.release, repository=args.repository,
            first_port=args.first_port, key=args.key, kind="cli", docker_client=client,
        )
        fleet.down()
        fleet.up()
    for row in status_rows(client, args.prefix):
        print("{name:<20} {version:<8} 127.0.0.1:{port:<6} {state}".format(**row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
