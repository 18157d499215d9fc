"""Build the reference Engine's images offline and push them to the local registry.

``python -m tests.testbed.images`` builds, in order:

1. a base image: a Debian bookworm root file system made by ``mmdebstrap``
   from the machine's own apt sources and ``docker import``-ed (or, when
   ``ENGINE_SIM_BASE_IMAGE`` names one, that image from a registry);
2. the application image: the base plus ``tests/engine_sim/app``;
3. one image per release and profile (``releases.py``): the application
   image plus the release's knobs, tagged
   ``<registry>/<profile repository>:<version>`` and pushed;
4. the SSH test bed's Docker host image (``dockerhosts.py``).

Every image carries a label with the hash of what it was built from, so a
second run with nothing changed builds and pushes nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import docker
import requests

from tests.engine_sim import releases

REGISTRY = os.environ.get("ENGINE_SIM_REGISTRY", "127.0.0.1:5000")
SIM_DIR = Path(__file__).resolve().parent.parent / "engine_sim"
APP_DIR = SIM_DIR / "app"
HASH_LABEL = "io.engineops.sim.hash"
BASE_REPOSITORY = "engineops/sim-base"
APP_REPOSITORY = "engineops/sim-app"
ENGINE_PACKAGES = ("python3", "sqlite3", "ca-certificates")


def mmdebstrap_command(packages: tuple[str, ...]) -> tuple[str, ...]:
    """The ``mmdebstrap`` call that makes a Debian bookworm root file system with ``packages``."""
    return (
        "mmdebstrap",
        "--quiet",
        "--variant=apt",
        f"--include={','.join(packages)}",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "bookworm",
    )


def image_ref(release_name: str, repository: str = releases.REPOSITORY) -> str:
    """The registry reference of a release, e.g. ``127.0.0.1:5000/september-engine:2.3.0``."""
    return f"{REGISTRY}/{repository}:{releases.tag(release_name)}"


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def current_image(client: docker.DockerClient, ref: str, want: str):
    """The local image ``ref`` if it was built from hash ``want``, else None."""
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None
    return image if (image.labels or {}).get(HASH_LABEL) == want else None


def ensure_rootfs(client: docker.DockerClient, repository: str, packages: tuple[str, ...]) -> str:
    """Build or reuse a Debian root file system image with ``packages`` (mmdebstrap | docker import)."""
    command = mmdebstrap_command(packages)
    want = digest(*command)
    ref = f"{repository}:{want}"
    if current_image(client, ref, want):
        return ref
    _log(f"building {repository} with mmdebstrap (about a minute)")
    with tempfile.TemporaryDirectory(prefix="rootfs-") as tmp:
        tarball = os.path.join(tmp, "rootfs.tar")
        subprocess.run([*command, tarball], check=True, stdout=subprocess.DEVNULL)
        client.api.import_image_from_file(
            tarball, repository=repository, tag=want, changes=[f"LABEL {HASH_LABEL}={want}"]
        )
    return ref


def ensure_base(client: docker.DockerClient) -> str:
    """Build or reuse the Engine's base image; return its reference."""
    override = os.environ.get("ENGINE_SIM_BASE_IMAGE")
    if override:
        try:
            client.images.get(override)
        except docker.errors.ImageNotFound:
            _log(f"pulling base {override}")
            client.images.pull(override)
        return override
    return ensure_rootfs(client, BASE_REPOSITORY, ENGINE_PACKAGES)


def _app_context(dockerfile: str) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = dockerfile.encode()
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for path in sorted(APP_DIR.glob("*.py")):
            tar.add(path, arcname=f"app/{path.name}")
    buf.seek(0)
    return buf


def ensure_app(client: docker.DockerClient, base: str) -> str:
    """Build or reuse the application image on ``base``; return its reference."""
    base_id = client.images.get(base).id
    sources = [p.read_bytes() for p in sorted(APP_DIR.glob("*.py"))]
    want = digest(base_id, *sources)
    ref = f"{APP_REPOSITORY}:{want}"
    if current_image(client, ref, want):
        return ref
    _log(f"building the application image {ref}")
    dockerfile = "\n".join(
        [
            f"FROM {base}",
            # python:*-slim bases lack the sqlite3 CLI the contract's snapshot uses.
            "RUN command -v sqlite3 >/dev/null || "
            "(apt-get update && apt-get install -y --no-install-recommends sqlite3 && rm -rf /var/lib/apt/lists/*)",
            "COPY app/ /app/",
            "WORKDIR /app",
            "EXPOSE 8000",
            "STOPSIGNAL SIGTERM",
            'CMD ["python3", "-u", "/app/engine.py"]',
            f"LABEL {HASH_LABEL}={want}",
        ]
    )
    client.images.build(fileobj=_app_context(dockerfile), custom_context=True, tag=ref, rm=True)
    return ref


def _registry_digest(repository: str, tag: str) -> str | None:
    resp = requests.head(
        f"http://{REGISTRY}/v2/{repository}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    )
    return resp.headers.get("Docker-Content-Digest") if resp.status_code == 200 else None


def _pushed(image, repository: str, tag: str) -> bool:
    remote = _registry_digest(repository, tag)
    return remote is not None and f"{REGISTRY}/{repository}@{remote}" in (image.attrs.get("RepoDigests") or [])


def ensure_release(client: docker.DockerClient, app: str, profile: releases.Profile, rel: releases.Release) -> str:
    """Build and push one release image if it is not current; return its reference."""
    knobs = releases.image_knobs(profile, rel)
    app_id = client.images.get(app).id
    want = digest(app_id, json.dumps(knobs, sort_keys=True))
    ref = f"{REGISTRY}/{profile.repository}:{rel.tag}"
    image = current_image(client, ref, want)
    if image is None:
        env = " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(knobs.items()))
        dockerfile = "\n".join(
            [
                f"FROM {app}",
                f"ENV {env}",
                f"LABEL {HASH_LABEL}={want} io.engineops.sim.release={rel.name}"
                f" org.opencontainers.image.version={rel.tag}",
            ]
        )
        image, _build_log = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=ref, rm=True)
    if not _pushed(image, profile.repository, rel.tag):
        for line in client.api.push(f"{REGISTRY}/{profile.repository}", tag=rel.tag, stream=True, decode=True):
            if "error" in line:
                raise RuntimeError(f"push of {ref} failed: {line['error']}")
        _log(f"pushed {ref}")
    return ref


def build_all(names: list[str] | None = None) -> list[str]:
    """Build and push the matrix (or only the releases in ``names``)."""
    client = docker.from_env(timeout=600)
    app = ensure_app(client, ensure_base(client))
    refs = []
    for profile in releases.PROFILES:
        for rel_name in profile.releases:
            if names and rel_name not in names:
                continue
            refs.append(ensure_release(client, app, profile, releases.release(rel_name)))
    return refs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("releases", nargs="*", help="release names (default: all)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    refs = build_all(args.releases)
    _log(f"{len(refs)} release images current in {REGISTRY} ({time.monotonic() - start:.1f}s)")
    if not args.releases:
        from tests.testbed.dockerhosts import ensure_image  # it builds on this module's helpers

        _log(f"test bed Docker host image {ensure_image(docker.from_env(timeout=600))} current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
