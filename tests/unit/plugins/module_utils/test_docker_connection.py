# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The Docker connection options -> the SDK client's settings, without a Docker daemon."""
from __future__ import annotations

from unittest import mock

import docker
import pytest
import requests

from ansible_collections.engineops.fleet.plugins.module_utils._common import (
    COMMON_ARGUMENT_SPEC,
    DOCKER_ARGUMENT_SPEC,
    docker_options,
    engine_tls_verify,
)
from ansible_collections.engineops.fleet.plugins.module_utils._docker import (
    DEFAULT_DOCKER_HOST,
    DOCKER_OPTION_ENV,
    DockerConnection,
    EngineDockerError,
    docker_sdk_problem,
)


@pytest.fixture
def pems(tmp_path):
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("not parsed here\n")
    return tmp_path


@pytest.mark.parametrize(
    "options, environ, expected",
    [
        ({}, {}, {"base_url": DEFAULT_DOCKER_HOST, "tls": False, "verify": False, "api_version": "auto"}),
        ({"docker_host": None, "api_version": None}, {}, {"base_url": DEFAULT_DOCKER_HOST, "api_version": "auto"}),
        ({}, {"DOCKER_HOST": "tcp://10.0.0.5:2375"}, {"base_url": "tcp://10.0.0.5:2375", "tls": False}),
        # TLS turns tcp:// into https://; validate_certs implies TLS.
        ({"docker_host": "tcp://h:2376", "tls": True}, {}, {"base_url": "https://h:2376", "tls": True, "verify": False}),
        ({"docker_host": "tcp://h:2376", "validate_certs": True}, {}, {"base_url": "https://h:2376", "verify": True}),
        ({"docker_host": "tcp://h:2376"}, {"DOCKER_TLS_VERIFY": "1"}, {"base_url": "https://h:2376", "verify": True}),
        ({"docker_host": "tcp://h:2376"}, {"DOCKER_TLS": "yes"}, {"tls": True, "verify": False}),
        # A value given beats the environment.
        ({"docker_host": "tcp://h:2376", "validate_certs": False}, {"DOCKER_TLS_VERIFY": "1"}, {"verify": False}),
        ({"docker_host": "unix:///run/d.sock"}, {"DOCKER_HOST": "tcp://x:1"}, {"base_url": "unix:///run/d.sock"}),
        ({}, {"DOCKER_API_VERSION": "1.41", "DOCKER_TLS_HOSTNAME": "d.example"},
         {"api_version": "1.41", "tls_hostname": "d.example"}),
        ({"docker_host": "ssh://ops@h", "use_ssh_client": True}, {}, {"base_url": "ssh://ops@h", "use_ssh_client": True}),
        # ca_path only counts when the certificate is checked.
        ({"docker_host": "tcp://h:2376", "tls": True, "ca_path": "/c/ca.pem"}, {}, {"ca_path": None}),
        ({"docker_host": "tcp://h:2376", "validate_certs": True, "ca_path": "/c/ca.pem"}, {}, {"ca_path": "/c/ca.pem"}),
    ],
)
def test_options_resolve_like_community_docker(options, environ, expected):
    conn = DockerConnection.from_options(options, environ)
    for key, value in expected.items():
        assert getattr(conn, key) == value, key


def test_docker_cert_path_is_the_fallback_of_the_three_files():
    conn = DockerConnection.from_options({"docker_host": "tcp://h:2376", "validate_certs": True},
                                         {"DOCKER_CERT_PATH": "/certs"})
    assert (conn.ca_path, conn.client_cert, conn.client_key) == ("/certs/ca.pem", "/certs/cert.pem", "/certs/key.pem")
    given = DockerConnection.from_options({"docker_host": "tcp://h:2376", "validate_certs": True,
                                           "client_cert": "/mine/c.pem", "client_key": "/mine/k.pem"},
                                          {"DOCKER_CERT_PATH": "/certs"})
    assert (given.ca_path, given.client_cert, given.client_key) == ("/certs/ca.pem", "/mine/c.pem", "/mine/k.pem")


@pytest.mark.parametrize(
    "options, environ, fragment",
    [
        ({"client_cert": "/c.pem"}, {}, "client_cert is set but client_key is not"),
        ({"client_key": "/k.pem"}, {}, "client_key is set but client_cert is not"),
        ({"docker_host": "h:2376"}, {}, "docker_host='h:2376' is not a URL"),
        ({"tls": "maybe"}, {}, "tls='maybe' is not a boolean"),
        ({}, {"DOCKER_TLS_VERIFY": "sometimes"}, "validate_certs='sometimes' is not a boolean"),
        ({"timeout": 5}, {}, "Unknown Docker connection option(s) timeout"),
    ],
)
def test_bad_options_say_what_is_wrong(options, environ, fragment):
    with pytest.raises(EngineDockerError) as caught:
        DockerConnection.from_options(options, environ)
    assert fragment in str(caught.value)


def test_client_kwargs_plain_and_ssh():
    plain = DockerConnection.from_options({}, {}).client_kwargs(timeout=70.5)
    assert plain == {"base_url": DEFAULT_DOCKER_HOST, "version": "auto", "timeout": 70}
    ssh = DockerConnection.from_options({"docker_host": "ssh://ops@h", "use_ssh_client": True}, {}).client_kwargs()
    assert ssh["use_ssh_client"] is True and "tls" not in ssh
    # TLS options on a unix socket or over SSH have no TLS to configure.
    unix_tls = DockerConnection.from_options({"validate_certs": True}, {}).client_kwargs()
    assert "tls" not in unix_tls


def test_tls_settings_reach_every_request_of_a_real_sdk_client(pems):
    conn = DockerConnection.from_options({"docker_host": "tcp://127.0.0.1:1", "validate_certs": True,
                                          "ca_path": str(pems / "ca.pem"), "client_cert": str(pems / "cert.pem"),
                                          "client_key": str(pems / "key.pem"), "tls_hostname": "d.example"}, {})
    kwargs = conn.client_kwargs()
    kwargs["version"] = "1.41"  # no daemon to ask
    api = docker.APIClient(**kwargs)
    adapter = api.get_adapter("https://127.0.0.1:1/v1.41/version")
    assert adapter.pinned_verify == str(pems / "ca.pem")
    assert adapter.pinned_cert == (str(pems / "cert.pem"), str(pems / "key.pem"))
    assert adapter.tls_hostname == "d.example"
    assert adapter.poolmanager.connection_pool_kw["assert_hostname"] == "d.example"
    # REQUESTS_CA_BUNDLE and friends cannot override what the adapter sends.
    seen = {}

    def fake_send(self, request, **send_kwargs):
        seen.update(send_kwargs)
        raise requests.exceptions.ConnectionError("stop here")

    with mock.patch.object(requests.adapters.HTTPAdapter, "send", fake_send), \
            pytest.raises(requests.exceptions.ConnectionError):
        adapter.send(requests.Request("GET", "https://127.0.0.1:1/x").prepare(), verify="/etc/other.pem", cert=None)
    assert seen["verify"] == str(pems / "ca.pem") and seen["cert"] == (str(pems / "cert.pem"), str(pems / "key.pem"))


def test_unverified_tls_pins_verify_off(pems):
    conn = DockerConnection.from_options({"docker_host": "tcp://127.0.0.1:1", "tls": True}, {})
    kwargs = conn.client_kwargs()
    kwargs["version"] = "1.41"
    adapter = docker.APIClient(**kwargs).get_adapter("https://127.0.0.1:1/")
    assert adapter.pinned_verify is False and adapter.pinned_cert is None


def test_missing_certificate_files_are_named(pems):
    conn = DockerConnection.from_options({"docker_host": "tcp://h:2376", "validate_certs": True,
                                          "client_cert": str(pems / "gone.pem"), "client_key": str(pems / "key.pem")}, {})
    with pytest.raises(EngineDockerError) as caught:
        conn.client_kwargs()
    assert "client_cert" in str(caught.value) and "gone.pem" in str(caught.value)


@pytest.mark.parametrize(
    "error, fragments",
    [
        ("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate",
         ["Cannot verify the TLS certificate", "ca_path"]),
        ("hostname '127.0.0.1' doesn't match 'other'", ["Cannot verify the TLS certificate", "tls_hostname"]),
        ("[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required",
         ["refused the TLS connection (no client certificate)", "client_key"]),
        ("[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate", ["refused the TLS connection"]),
        ('400 Client Error: Bad Request ("Client sent an HTTP request to an HTTPS server.")', ["speaks TLS"]),
        ("[SSL: WRONG_VERSION_NUMBER] wrong version number", ["does not speak TLS"]),
        ("No module named 'paramiko'", ["Install paramiko", "use_ssh_client=true"]),
        ("Connection refused", ["Cannot reach the Docker daemon at https://h:2376", "Start dockerd"]),
    ],
)
def test_daemon_errors_are_explained(error, fragments):
    conn = DockerConnection.from_options({"docker_host": "tcp://h:2376", "validate_certs": True}, {})
    text = conn.describe_error(Exception(error))
    for fragment in fragments:
        assert fragment in text, text


@pytest.mark.parametrize(
    "version, ok",
    [("5.0.3", True), ("6.1.3", True), ("7.1.0", True), ("7.2.0.dev0", True), ("10.0", True),
     ("5.0.2", False), ("4.1.0", False), ("3.4.1", False), (None, False), ("unknown", False)],
)
def test_docker_sdk_minimum(version, ok):
    problem = docker_sdk_problem(version, "/usr/bin/python3")
    assert (problem is None) is ok
    if not ok:
        assert "/usr/bin/python3" in problem and "5.0.3 or newer" in problem and "python3-docker" in problem
        assert "ansible_python_interpreter" in problem


@pytest.mark.parametrize(
    "docker_version, requests_version, ok",
    [("5.0.3", "2.28.1", True), ("6.1.3", "2.31.0", True), ("5.0.3", "2.32.3", False), ("7.0.0", "2.32.0", False),
     ("7.1.0", "2.32.3", True), ("7.1.0", None, True)],
)
def test_old_docker_sdks_refuse_new_requests(docker_version, requests_version, ok):
    problem = docker_sdk_problem(docker_version, "/opt/venv/bin/python", requests_version)
    assert (problem is None) is ok
    if not ok:
        assert f"requests {requests_version}" in problem and "docker 7.1" in problem


def test_argument_spec_declares_each_docker_option_with_its_env_fallback():
    assert set(DOCKER_ARGUMENT_SPEC) == set(DOCKER_OPTION_ENV)
    for name, (env_name, default) in DOCKER_OPTION_ENV.items():
        spec = COMMON_ARGUMENT_SPEC[name]
        if env_name:
            assert spec["fallback"][1] == [env_name], name
        else:
            assert "fallback" not in spec, name
        assert spec.get("default") == (default if default is not False else False), name
    assert COMMON_ARGUMENT_SPEC["validate_certs"]["aliases"] == ["tls_verify"]
    assert COMMON_ARGUMENT_SPEC["engine_validate_certs"]["default"] is True


def test_docker_options_and_engine_verify_from_params():
    params = {name: None for name in COMMON_ARGUMENT_SPEC}
    params.update(docker_host="tcp://h:2376", validate_certs=True, engine_validate_certs=True, engine_url="x")
    assert docker_options(params) == {**{name: None for name in DOCKER_OPTION_ENV},
                                      "docker_host": "tcp://h:2376", "validate_certs": True}
    assert engine_tls_verify(params) is True
    assert engine_tls_verify({**params, "engine_ca_path": "/etc/engine-ca.pem"}) == "/etc/engine-ca.pem"
    assert engine_tls_verify({**params, "engine_validate_certs": False, "engine_ca_path": "/x"}) is False
    assert engine_tls_verify({**params, "engine_validate_certs": None}) is True
