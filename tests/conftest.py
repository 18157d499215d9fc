"""Fixtures of the Docker test bed.

Importing ``tests`` (this package) makes the collection importable as
``ansible_collections.engineops.fleet``. The fixtures below need the Docker
daemon and the release images; `make test` starts the daemon and builds the
images before pytest runs. They import docker lazily so pure unit tests run
without it.
"""
from __future__ import annotations

import os
import secrets

import pytest


@pytest.fixture(scope="session")
def docker_client():
    import docker

    from tests.testbed.fleet import OWNER_LABEL, remove_labelled, remove_orphans
    from tests.testbed.images import build_all

    client = docker.from_env(timeout=180)
    # Leftovers of an interrupted earlier run (restart policy brings them back).
    remove_orphans(client)
    build_all()
    yield client
    remove_labelled(client, f"{OWNER_LABEL}={os.getpid()}")


@pytest.fixture
def make_fleet(docker_client):
    """``make_fleet(count, release=..., ...)`` starts a fleet; all are removed after the test."""
    from tests.testbed.fleet import Fleet, free_port_block

    fleets = []

    def factory(count: int = 1, start: bool = True, **kwargs):
        kwargs.setdefault("first_port", free_port_block(count))
        fleet = Fleet("t" + secrets.token_hex(3), count, docker_client=docker_client, **kwargs)
        fleets.append(fleet)
        if start:
            fleet.up()
        return fleet

    yield factory
    for fleet in fleets:
        fleet.down()


@pytest.fixture(scope="session")
def ssh_bed(docker_client):
    """Two Docker hosts reached only over SSH (tests/testbed/dockerhosts.py), shared by a worker's tests."""
    from tests.testbed.dockerhosts import TestBed

    bed = TestBed(count=2, outer=docker_client).up()
    yield bed
    bed.down()


@pytest.fixture
def make_ssh_fleet(ssh_bed):
    """``make_ssh_fleet(per_host, release=...)`` -> one fleet per Docker host of the SSH test bed, started;
    the Engines are removed after the test."""
    fleets = []

    def factory(per_host: int = 1, **kwargs):
        made = [host.fleet("s" + secrets.token_hex(3), per_host, **kwargs) for host in ssh_bed.hosts]
        fleets.extend(made)
        for fleet in made:
            fleet.up()
        return made

    yield factory
    for fleet in fleets:
        fleet.down()
