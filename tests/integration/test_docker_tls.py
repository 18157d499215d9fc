"""The Docker connection options against a real dockerd that requires TLS client certificates,
and the Engine's own HTTPS verification (engine_validate_certs, engine_ca_path).

A second dockerd, in a test bed Docker host container (tests/testbed/tlsdocker.py), requires
certificates made by openssl for this module; one Engine image is loaded into
it and one Engine runs there.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess

import pytest

from tests.testbed.fleet import DATA_PATH, engine_env
from tests.testbed.images import image_ref
from tests.testbed.tlsdocker import SERVER_NAME, TLSDockerd, TLSFront, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_engine(docker_client, pki, tmp_path_factory):
    """(daemon, Engine container name) of an Engine on a dockerd that requires client certificates."""
    daemon = TLSDockerd(tmp_path_factory.mktemp("dockerd"), pki)
    daemon.start(docker_client)
    try:
        image = image_ref("baseline")
        daemon.load(image)
        name = "engine-tls-" + secrets.token_hex(3)
        volume = name + "-data"
        docker = daemon.cli()
        subprocess.run([*docker, "volume", "create", volume], check=True, capture_output=True, timeout=60)
        subprocess.run([*docker, "run", "--rm", "-v", f"{volume}:/data", image, "python3", "/app/seed.py",
                        "--rows", "40", "--db", DATA_PATH], check=True, capture_output=True, timeout=120)
        env = [arg for key, value in engine_env(secrets.token_hex(16)).items() for arg in ("-e", f"{key}={value}")]
        subprocess.run([*docker, "run", "-d", "--name", name, "-v", f"{volume}:/data", *env, image],
                       check=True, capture_output=True, timeout=120)
        yield daemon, name
    finally:
        daemon.stop()


def test_engine_info_reaches_the_tls_daemon_through_the_options(tls_engine, run_module):
    daemon, name = tls_engine
    result = run_module("engine_info", {"name": name, **daemon.options()})
    assert not result["failed"], result.get("msg")
    assert result["engine"]["name"] == name and result["engine"]["version"] == "2.3.0"
    assert result["engine"]["running"] is True
    # The daemon is another machine's: its volumes are not on this disk, and engine_info says so.
    assert "run the module on the Engine's host" in result["fingerprint_error"], result

    # community.docker's aliases say the same.
    aliased = run_module("engine_info", {
        "name": name, "docker_url": daemon.url, "tls_verify": True, "cacert_path": daemon.pki.ca,
        "cert_path": daemon.pki.path("client.pem"), "key_path": daemon.pki.path("client-key.pem"),
        "docker_api_version": "1.41", "fingerprint": False,
    })
    assert not aliased["failed"], aliased.get("msg")
    assert aliased["engine"]["id"] == result["engine"]["id"]


def test_the_environment_variables_reach_the_tls_daemon(tls_engine, run_module):
    daemon, name = tls_engine
    result = run_module("engine_info", {"name": name, "fingerprint": False},
                        DOCKER_HOST=daemon.url, DOCKER_TLS_VERIFY="1", DOCKER_CERT_PATH=str(daemon.pki.cert_dir))
    assert not result["failed"], result.get("msg")
    assert result["engine"]["name"] == name


def test_a_snapshot_through_the_tls_daemon(tls_engine, run_module, tmp_path):
    daemon, name = tls_engine
    snapdir = tmp_path / "snapshots"
    args = {"name": name, "snapshot_dir": str(snapdir), "snapshot": "over-tls", **daemon.options()}
    taken = run_module("engine_snapshot", args)
    assert not taken["failed"], taken.get("msg")
    assert taken["changed"] is True
    snap = taken["snapshot"]
    assert os.path.getsize(snap["path"]) > 0
    manifest = json.loads(open(snap["manifest_path"]).read())
    assert manifest["engine"] == name and manifest["version"] == "2.3.0"
    again = run_module("engine_snapshot", {**args, "state": "verified"})
    assert not again["failed"] and again["changed"] is False, again.get("msg")


@pytest.mark.parametrize(
    "options, expected",
    [
        # No client certificate: the daemon refuses the handshake.
        ({"client_cert": None, "client_key": None}, ["refused the TLS connection", "no client certificate", "client_cert"]),
        # A client certificate the daemon's CA did not sign.
        ({"client_cert": "stranger.pem", "client_key": "stranger-key.pem"}, ["refused the TLS connection", "stranger.pem"]),
        # No TLS at all.
        ({"validate_certs": False, "ca_path": None, "client_cert": None, "client_key": None}, ["speaks TLS", "tls=true"]),
        # The daemon's certificate does not name the host asked for.
        ({"tls_hostname": "elsewhere.test"}, ["Cannot verify the TLS certificate", "tls_hostname"]),
        # The system CAs do not know the daemon's CA.
        ({"ca_path": None}, ["Cannot verify the TLS certificate", "ca_path"]),
        # Only half a client certificate.
        ({"client_key": None}, ["client_cert is set but client_key is not"]),
        # A certificate file that is not there.
        ({"client_cert": "missing.pem"}, ["missing.pem", "is not a file"]),
    ],
    ids=["no-client-cert", "stranger-cert", "no-tls", "wrong-hostname", "unknown-ca", "half-cert", "missing-file"],
)
def test_a_wrong_or_missing_client_certificate_fails_clearly(tls_engine, run_module, options, expected):
    daemon, name = tls_engine
    args = daemon.options()
    for key, value in options.items():
        if value is None:
            args.pop(key)
        else:
            args[key] = daemon.pki.path(value) if str(value).endswith(".pem") else value
    result = run_module("engine_info", {"name": name, **args})
    assert result["failed"]
    for fragment in expected:
        assert fragment in result["msg"], result["msg"]
    assert "Traceback" not in result["msg"]


def test_tls_hostname_and_unverified_tls(tls_engine, run_module):
    daemon, name = tls_engine
    named = run_module("engine_info", {"name": name, "fingerprint": False,
                                       **daemon.options(tls_hostname=SERVER_NAME)})
    assert not named["failed"], named.get("msg")
    # tls=true without validate_certs: encrypted, the daemon's certificate not checked (no CA given).
    unverified = daemon.options(validate_certs=False, tls=True)
    unverified.pop("ca_path")
    plain_tls = run_module("engine_info", {"name": name, "fingerprint": False, **unverified})
    assert not plain_tls["failed"], plain_tls.get("msg")


def test_the_engines_https_is_verified_by_default(make_fleet, run_module, pki):
    engine = make_fleet(1).engines[0]
    with TLSFront(engine.port, pki.path("server.pem"), pki.path("server-key.pem")) as front:
        args = {"engine_url": front.url, "wait": False}
        refused = run_module("engine_health", args)
        assert refused["ready"] is False
        text = json.dumps(refused)
        assert "certificate verify failed" in text and "engine_ca_path" in text

        trusted = run_module("engine_health", {**args, "engine_ca_path": pki.ca})
        assert trusted["ready"] is True, trusted
        unchecked = run_module("engine_health", {**args, "engine_validate_certs": False})
        assert unchecked["ready"] is True, unchecked
        # The Docker daemon's validate_certs is not the Engine's: it does not turn the Engine's check off.
        docker_side = run_module("engine_health", {**args, "validate_certs": False})
        assert docker_side["ready"] is False
