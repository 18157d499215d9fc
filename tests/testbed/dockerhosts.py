"""Docker hosts reached over SSH: the test bed's stand-in for a real fleet's machines.

Each Docker host is a container of the ``engineops/testbed-dockerhost`` image,
built offline like the Engine's (a Debian 12 root file system from
``mmdebstrap``): an sshd, its own dockerd whose data (images, the Engines'
volumes and brains, the snapshots) stays inside it, and Debian's own
python3-docker (5.0.3), python3-requests, python3-yaml and python3-jmespath,
as a Debian 12 Docker host has them. Its Engines publish their ports on the
host's own 127.0.0.1, as per-user fleets do.

The controller reaches a host only over SSH, on a port published on
127.0.0.1, with a key the test bed generates; the host's key is generated too,
so ``known_hosts`` is exact. Ansible and the collection use nothing else. The
test bed itself keeps one ssh process per host for its own channels:

- ``-R 127.0.0.1:5000``: the host's 127.0.0.1:5000 is the controller's
  registry, so the host pulls the release images as a real one would;
- ``-L``: the host's Docker socket, so the test bed can set fleets up;
- ``-L``: each Engine's port on the host, for the load generator and the
  health checks of the test bed (never for the collection).

CLI: ``python -m tests.testbed.dockerhosts up --prefix NAME --hosts 2 --engines 3``
brings up a test bed and writes an inventory for it;
``python -m tests.testbed.dockerhosts down --prefix NAME`` removes it.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import yaml

from tests.engine_sim import releases
from tests.testbed.fleet import KIND_LABEL, LABEL, OWNER_LABEL, Fleet, free_port_block, remove_labelled
from tests.testbed.images import HASH_LABEL, REGISTRY, current_image, digest, ensure_rootfs, image_ref

HOST_REPOSITORY = "engineops/testbed-dockerhost"
ROOTFS_REPOSITORY = "engineops/testbed-dockerhost-rootfs"
PACKAGES = (
    "openssh-server", "docker.io", "iptables", "ca-certificates", "procps", "iproute2", "sqlite3",
    "python3", "python3-docker", "python3-requests", "python3-yaml", "python3-jmespath",
)
ENTRYPOINT = Path(__file__).resolve().parent / "dockerhost" / "entrypoint.sh"
STATE_DIR = Path(os.environ.get("ENGINEOPS_STATE_DIR", "/var/lib/engineops-testbed")) / "dockerhosts"
# Every capability but CAP_SYS_RESOURCE, which this machine's kernel does not grant to containers
# (--privileged asks for all of them and fails here); enough for a dockerd inside.
CAPABILITIES = (
    "AUDIT_CONTROL", "AUDIT_READ", "AUDIT_WRITE", "BLOCK_SUSPEND", "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH",
    "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE", "LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE",
    "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID",
    "SYSLOG", "SYS_ADMIN", "SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT", "SYS_PTRACE",
    "SYS_RAWIO", "SYS_TIME", "SYS_TTY_CONFIG", "WAKE_ALARM",
)
HOST_PYTHON = "/usr/bin/python3"
FIRST_ENGINE_PORT = 9001


def _log(msg: str) -> None:
    print(f"dockerhosts: {msg}", file=sys.stderr, flush=True)


def ensure_image(client: docker.DockerClient) -> str:
    """Build or reuse the Docker host image; return its reference."""
    rootfs = ensure_rootfs(client, ROOTFS_REPOSITORY, PACKAGES)
    script = ENTRYPOINT.read_bytes()
    want = digest(client.images.get(rootfs).id, script)
    ref = f"{HOST_REPOSITORY}:{want}"
    if current_image(client, ref, want):
        return ref
    _log(f"building {ref}")
    dockerfile = "\n".join([
        f"FROM {rootfs}",
        "COPY entrypoint.sh /usr/local/sbin/engineops-dockerhost",
        "EXPOSE 22",
        'CMD ["/usr/local/sbin/engineops-dockerhost"]',
        f"LABEL {HASH_LABEL}={want}",
    ])
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data, mode in (("Dockerfile", dockerfile.encode(), 0o644), ("entrypoint.sh", script, 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=ref, rm=True)
    return ref


def run_dockerhost(outer: docker.DockerClient, image: str, name: str, labels: dict[str, str], *,
                   ports: dict[str, int], environment: dict[str, str], volumes: dict | None = None):
    """Start a Docker host container ``name`` (its own dockerd on a volume of its own); ``ports`` are published
    on the controller's 127.0.0.1."""
    outer.volumes.create(f"{name}-docker", labels=labels)
    return outer.containers.run(
        image, name=name, hostname=name, detach=True,
        cap_add=list(CAPABILITIES),
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        volumes={f"{name}-docker": {"bind": "/var/lib/docker", "mode": "rw"},
                 "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}, **(volumes or {})},
        ports={inside: ("127.0.0.1", port) for inside, port in ports.items()},
        environment=environment,
        labels=labels,
    )


def _keygen(path: Path) -> str:
    """Make an ed25519 key pair at ``path``; return the public key's line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def _wait_port(port: int, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: ssh exited with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what}: 127.0.0.1:{port} did not answer within {timeout:.0f}s")


class DockerHost:
    """One Docker host container of a :class:`TestBed`."""

    def __init__(self, bed: TestBed, index: int, ssh_port: int) -> None:
        self.bed = bed
        self.name = f"dockerhost-{bed.prefix}-{index}"
        self.ssh_port = ssh_port
        self.host_key = bed.dir / f"{self.name}-hostkey"
        self.tunnels: list[subprocess.Popen] = []
        self.docker_port: int | None = None
        self._next_engine_port = FIRST_ENGINE_PORT
        self._client: docker.DockerClient | None = None

    # -- SSH --------------------------------------------------------------
    def ssh_args(self) -> list[str]:
        return [
            "ssh", "-p", str(self.ssh_port), "-i", str(self.bed.client_key), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.bed.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "root@127.0.0.1",
        ]

    def ssh(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run ``command`` on the host over SSH."""
        return subprocess.run([*self.ssh_args(), command], capture_output=True, text=True, check=check,
                              timeout=timeout)

    def tunnel(self, *forwards: str, wait_port: int | None = None) -> subprocess.Popen:
        """An ``ssh -N`` carrying ``forwards`` (``-L ...``/``-R ...`` arguments), kept until :meth:`down`."""
        proc = subprocess.Popen(
            [*self.ssh_args()[:-1], "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=10",
             *forwards, "root@127.0.0.1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.tunnels.append(proc)
        if wait_port is not None:
            _wait_port(wait_port, 30, f"tunnel to {self.name}", proc)
        return proc

    # -- life cycle -------------------------------------------------------
    def start(self, image: str) -> None:
        public = _keygen(self.host_key)
        key = base64.b64encode(self.host_key.read_bytes()).decode()
        with self.bed.known_hosts.open("a") as known:
            known.write(f"[127.0.0.1]:{self.ssh_port} {public.rsplit(' ', 1)[0]}\n")
        run_dockerhost(self.bed.outer, image, self.name, self.bed.labels(), ports={"22/tcp": self.ssh_port},
                       environment={"AUTHORIZED_KEY": self.bed.client_public, "HOST_KEY": key})

    def wait_ready(self, timeout: float = 90) -> None:
        """Wait until sshd lets the test bed in and the host's dockerd answers; open the test bed's channels."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            proc = self.ssh("docker version --format '{{.Server.Version}}'", check=False, timeout=20)
            if proc.returncode == 0:
                break
            last = proc.stderr.strip()
            time.sleep(0.5)
        else:
            raise TimeoutError(f"{self.name} not ready after {timeout:.0f}s: {last}")
        self.docker_port = free_port_block(1)
        registry_port = REGISTRY.rsplit(":", 1)[-1]
        self.tunnel("-R", f"127.0.0.1:{registry_port}:{REGISTRY}",
                    "-L", f"127.0.0.1:{self.docker_port}:/var/run/docker.sock", wait_port=self.docker_port)

    @property
    def docker(self) -> docker.DockerClient:
        """The host's own Docker daemon, through the test bed's tunnel."""
        if self._client is None:
            self._client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{self.docker_port}", timeout=300)
        return self._client

    def pull(self, *release_names: str, repository: str = releases.REPOSITORY) -> None:
        """Pull release images into the host from the controller's registry (through the tunnel)."""
        for name in release_names:
            ref = image_ref(name, repository)
            repo, tag = ref.rsplit(":", 1)
            self.docker.images.pull(repo, tag=tag)

    def fleet(self, prefix: str, count: int, release: str = "baseline", **kwargs) -> Fleet:
        """``count`` Engines on this host, publishing 9001 and up on its 127.0.0.1 (not started).

        Each Engine's ``port`` is the test bed's end of a tunnel to it, ``published_port`` its port on the host.
        """
        self.pull(release, repository=kwargs.get("repository", releases.REPOSITORY))
        fleet = Fleet(prefix, count, release=release, first_port=self._next_engine_port,
                      docker_client=self.docker, **kwargs)
        self._next_engine_port += count
        local = free_port_block(count)
        forwards = []
        tunneled = []
        for offset, engine in enumerate(fleet.engines):
            forwards += ["-L", f"127.0.0.1:{local + offset}:127.0.0.1:{engine.port}"]
            tunneled.append(dataclasses.replace(engine, port=local + offset, published_port=engine.port))
        fleet.engines = tunneled
        self.tunnel(*forwards, wait_port=local)
        return fleet

    def inventory_vars(self) -> dict[str, str]:
        """How Ansible reaches this host: SSH with the test bed's key, the host's own Python."""
        return {
            "ansible_host": "127.0.0.1",
            "ansible_port": self.ssh_port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.bed.client_key),
            "ansible_ssh_common_args": (f"-o UserKnownHostsFile={self.bed.known_hosts} "
                                        "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"),
            "ansible_python_interpreter": HOST_PYTHON,
        }

    def close(self) -> None:
        for proc in self.tunnels:
            proc.terminate()
        for proc in self.tunnels:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.tunnels.clear()
        if self._client is not None:
            self._client.close()
            self._client = None


class TestBed:
    """``count`` Docker hosts reached over SSH, with the SSH keys and known_hosts the test bed made."""

    __test__ = False  # not a pytest test class

    def __init__(self, prefix: str | None = None, count: int = 2, outer: docker.DockerClient | None = None,
                 kind: str = "test") -> None:
        self.prefix = prefix or "h" + secrets.token_hex(3)
        self.kind = kind
        self.outer = outer or docker.from_env(timeout=300)
        self.dir = STATE_DIR / self.prefix
        self.client_key = self.dir / "id_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        first = free_port_block(count, start=30001, stop=32000)
        self.hosts = [DockerHost(self, i + 1, first + i) for i in range(count)]
        self.client_public = ""

    def labels(self) -> dict[str, str]:
        return {LABEL: f"dockerhosts-{self.prefix}", KIND_LABEL: self.kind, OWNER_LABEL: str(os.getpid())}

    def up(self) -> TestBed:
        image = ensure_image(self.outer)
        self.down()
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.client_public = _keygen(self.client_key)
        for host in self.hosts:
            host.start(image)
        with ThreadPoolExecutor(max_workers=len(self.hosts)) as pool:
            list(pool.map(lambda h: h.wait_ready(), self.hosts))
        return self

    def down(self) -> None:
        for host in self.hosts:
            host.close()
        remove_labelled(self.outer, f"{LABEL}=dockerhosts-{self.prefix}")
        shutil.rmtree(self.dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Docker hosts reached over SSH, each running a few Engines.")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--prefix", default="sshbed")
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--engines", type=int, default=3, help="Engines per host")
    parser.add_argument("--release", default="baseline")
    parser.add_argument("--key", default="sshbed-key-not-a-secret")
    parser.add_argument("--inventory", default="sshbed-inventory.yml", help="where `up` writes the inventory")
    args = parser.parse_args(argv)
    bed = TestBed(args.prefix, args.hosts, kind="cli")
    if args.action == "down":
        bed.down()
        print(f"removed the test bed {args.prefix!r}")
        return 0
    bed.up()
    groups = {}
    for host in bed.hosts:
        fleet = host.fleet(f"{args.prefix}{host.name[-1]}", args.engines, args.release, key=args.key, kind="cli")
        fleet.up()
        groups[host.name.replace("-", "_")] = {
            "vars": host.inventory_vars(),
            "hosts": {e.name: {} for e in fleet.engines},
        }
    inventory = {"all": {"vars": {"engine_key": args.key},
                         "children": {"engines": {"children": groups}}}}
    Path(args.inventory).write_text(yaml.safe_dump(inventory, sort_keys=False))
    print(f"test bed {args.prefix!r} up: {args.hosts} Docker hosts x {args.engines} Engines; inventory {args.inventory}")
    print("keeping the hosts' way to the registry open; Ctrl-C ends it (the hosts stay up until `down`)", flush=True)
    try:
        while all(proc.poll() is None for host in bed.hosts for proc in host.tunnels):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    for host in bed.hosts:
        host.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
