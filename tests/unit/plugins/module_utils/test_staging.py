# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import copy

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._docker import (
    PREVIOUS_IMAGE_LABEL,
    EngineFacts,
    brain_mount,
    facts_from_inspect,
)
from ansible_collections.engineops.fleet.plugins.module_utils._staging import (
    STAGING_LABEL,
    STAGING_SNAPSHOT_LABEL,
    StagingError,
    brain_destination,
    default_staging_name,
    plan_absent,
    plan_present,
    staging_labels,
    staging_of,
    staging_spec,
    staging_view,
    staging_volume_name,
)

PROD_ID = "9c1b7d4e3f2a" + "0" * 52
BASE = "registry.example.com/september-engine:2.3.0"
MAJOR = "registry.example.com/september-engine:3.0.0"
SNAP = "engine-042_20250310T120000Z_pre-upgrade_2.3.0"

IMAGE = {"Config": {"Env": ["PATH=/usr/bin:/bin", "ENGINE_SIM_EXIT_CODE=0"], "Cmd": ["python3", "/app/engine.py"],
                    "ExposedPorts": {"8000/tcp": {}}, "Labels": {"org.opencontainers.image.version": "2.3.0"}}}

# A compose-run Engine on a user network, already upgraded once, with a config bind beside its brain volume.
PROD = {
    "Id": PROD_ID,
    "Name": "/engine-042",
    "Image": "sha256:" + "b" * 64,
    "Config": {
        "Hostname": "engine",
        "Env": ["PATH=/usr/bin:/bin", "ENGINE_SIM_EXIT_CODE=0", "SQLITE_DB_PATH=/srv/state/brain.sqlite",
                "LLM_API_KEY=sk-secret", "ENGINE_KEY_HASH=abc"],
        "Cmd": ["python3", "/app/engine.py", "--verbose"],
        "Image": BASE,
        "Labels": {"org.opencontainers.image.version": "2.3.0", "team": "fleet",
                   "com.docker.compose.project": "prod", "com.docker.compose.service": "engine",
                   PREVIOUS_IMAGE_LABEL: "registry.example.com/september-engine:2.2.9"},
    },
    "HostConfig": {
        "Binds": ["/etc/engine:/etc/engine:ro", "engine-data-042:/srv/state"],
        "NetworkMode": "prod_default",
        "PortBindings": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9042"}],
                         "9100/tcp": [{"HostIp": "", "HostPort": "9100"}]},
        "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
        "AutoRemove": True,
        "Memory": 536870912,
    },
    "Mounts": [
        {"Type": "bind", "Source": "/etc/engine", "Destination": "/etc/engine", "RW": False},
        {"Type": "volume", "Name": "engine-data-042", "Source": "/var/lib/docker/volumes/engine-data-042/_data",
         "Destination": "/srv/state", "RW": True},
    ],
    "NetworkSettings": {"Networks": {
        "prod_default": {"Aliases": ["engine", PROD_ID[:12]], "IPAMConfig": {"IPv4Address": "172.20.0.42"}},
        "monitoring": {"Aliases": ["engine-042"], "IPAMConfig": None, "DriverOpts": {"x": "y"}},
    }},
    "State": {"Status": "running", "Running": True},
}


def spec(prod=None, **kwargs):
    kwargs.setdefault("env", {"LLM_EMBEDDING_MODEL": "small"})
    return staging_spec(PROD if prod is None else prod, IMAGE, MAJOR, staging_name="engine-042-staging",
                        volume="engine-042-staging-data", snapshot=SNAP, **kwargs)


def staging_container(**changes):
    """The inspect of a staging Engine of engine-042 as ``spec()`` creates it, running."""
    body = spec().config
    attrs = {"Id": "s" * 64, "Name": "/engine-042-staging", "Config": {**body, "Env": list(body["Env"])},
             "State": {"Status": "running", "Running": True, "Restarting": False}}
    for section, values in changes.items():
        attrs[section] = {**attrs.get(section, {}), **values}
    return attrs


# --------------------------------------------------------------------------
# Names, labels, the brain's mount
# --------------------------------------------------------------------------


def test_names_and_labels():
    assert default_staging_name("engine-042") == "engine-042-staging"
    assert staging_volume_name("engine-042-staging") == "engine-042-staging-data"
    assert staging_labels("engine-042", SNAP) == {STAGING_LABEL: "engine-042", STAGING_SNAPSHOT_LABEL: SNAP}


@pytest.mark.parametrize("labels, expected", [
    (None, None),
    ({}, None),
    ({STAGING_LABEL: ""}, None),
    ({"team": "fleet"}, None),
    ({STAGING_LABEL: "engine-042"}, "engine-042"),
])
def test_staging_of(labels, expected):
    assert staging_of(labels) == expected


@pytest.mark.parametrize("env, mounts, expected", [
    (["SQLITE_DB_PATH=/srv/state/brain.sqlite"], [{"Destination": "/srv/state"}], "/srv/state"),
    ([], [{"Destination": "/data"}], "/data"),
    # The innermost mount holds the brain, whatever the order.
    ([], [{"Destination": "/data/"}, {"Destination": "/"}], "/data/"),
    ([], [{"Destination": "/"}, {"Destination": "/data"}], "/data"),
    # On no mount: the brain's folder gets the new volume.
    (["SQLITE_DB_PATH=/var/engine/brain.db"], [{"Destination": "/data"}], "/var/engine"),
    ([], [{"Destination": "/database"}], "/data"),
])
def test_brain_destination(env, mounts, expected):
    attrs = {"Config": {"Env": env}, "Mounts": mounts}
    assert brain_destination(attrs) == expected


def test_brain_mount_is_the_one_facts_report():
    assert brain_mount(PROD)["Name"] == "engine-data-042"
    facts = facts_from_inspect(PROD)
    assert (facts.volume, facts.brain_path) == ("engine-data-042", "/srv/state/brain.sqlite")


# --------------------------------------------------------------------------
# The staging container's spec
# --------------------------------------------------------------------------


def test_spec_carries_env_command_and_own_labels_and_adds_the_staging_ones():
    body = spec().config
    assert body["Image"] == MAJOR
    env = dict(e.split("=", 1) for e in body["Env"])
    assert env == {"SQLITE_DB_PATH": "/srv/state/brain.sqlite", "LLM_API_KEY": "sk-secret", "ENGINE_KEY_HASH": "abc",
                   "LLM_EMBEDDING_MODEL": "small"}
    assert body["Cmd"] == ["python3", "/app/engine.py", "--verbose"]
    assert body["Labels"] == {"team": "fleet", STAGING_LABEL: "engine-042", STAGING_SNAPSHOT_LABEL: SNAP}
    assert "Hostname" not in body


def test_spec_puts_the_brain_on_the_new_volume_and_keeps_other_mounts():
    host = spec().config["HostConfig"]
    assert host["Binds"] == ["/etc/engine:/etc/engine:ro", "engine-042-staging-data:/srv/state"]
    assert "Mounts" not in host
    mounted = copy.deepcopy(PROD)
    mounted["HostConfig"]["Binds"] = None
    mounted["HostConfig"]["Mounts"] = [{"Type": "volume", "Source": "engine-data-042", "Target": "/srv/state"},
                                       {"Type": "tmpfs", "Target": "/tmp"}]
    host = spec(mounted).config["HostConfig"]
    assert host["Binds"] == ["engine-042-staging-data:/srv/state"]
    assert host["Mounts"] == [{"Type": "tmpfs", "Target": "/tmp"}]


def test_spec_publishes_only_an_ephemeral_localhost_port_without_restart():
    body = spec().config
    host = body["HostConfig"]
    assert host["PortBindings"] == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert host["RestartPolicy"] == {"Name": "no", "MaximumRetryCount": 0}
    assert host["AutoRemove"] is False and host["PublishAllPorts"] is False
    assert host["Memory"] == 536870912  # the rest of the host config is the production Engine's
    assert "8000/tcp" in body["ExposedPorts"]


def test_spec_keeps_networks_without_production_aliases_or_addresses():
    result = spec()
    assert result.config["HostConfig"]["NetworkMode"] == "prod_default"
    assert "NetworkingConfig" not in result.config  # the primary endpoint had only an alias and an address
    assert result.extra_networks == {"monitoring": {"DriverOpts": {"x": "y"}}}
    assert result.kept["staging"]["network_mode"] == "prod_default"


@pytest.mark.parametrize("mode", ["host", "none", "container:sidecar"])
def test_spec_moves_special_network_modes_to_the_default_bridge(mode):
    prod = copy.deepcopy(PROD)
    prod["HostConfig"]["NetworkMode"] = mode
    result = spec(prod)
    assert result.config["HostConfig"]["NetworkMode"] == "default"
    assert "NetworkingConfig" not in result.config and result.extra_networks == {}


def test_spec_does_not_change_the_production_attrs():
    before = copy.deepcopy(PROD)
    spec()
    assert PROD == before


# --------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------


def plan(container=None, volume_labels=None, volume_exists=False, image=MAJOR, snapshot=SNAP, env=None):
    return plan_present("engine-042", "engine-042-staging", image, snapshot,
                        {"LLM_EMBEDDING_MODEL": "small"} if env is None else env, container, volume_labels,
                        volume_exists)


def test_present_creates_when_nothing_is_there():
    result = plan()
    assert (result.create, result.remove_container, result.remove_volume, result.changed) == (True, False, False, True)


def test_present_keeps_a_matching_running_staging_engine():
    assert not plan(staging_container(), {STAGING_LABEL: "engine-042"}, True).changed


@pytest.mark.parametrize("kwargs, container, reason", [
    ({"image": "registry.example.com/september-engine:3.0.1"}, {}, "not registry.example.com/september-engine:3.0.1"),
    ({"snapshot": "other"}, {}, "not other"),
    ({"env": {"LLM_EMBEDDING_MODEL": "large"}}, {}, "env LLM_EMBEDDING_MODEL differs"),
    ({}, {"State": {"Status": "exited", "Running": False}}, "it is exited"),
    ({}, {"State": {"Status": "restarting", "Running": True, "Restarting": True}}, "it is restarting"),
])
def test_present_replaces_a_staging_engine_that_differs(kwargs, container, reason):
    result = plan(staging_container(**container), {STAGING_LABEL: "engine-042"}, True, **kwargs)
    assert (result.create, result.remove_container, result.remove_volume) == (True, True, True)
    assert any(reason in r for r in result.reasons), result.reasons


def test_present_replaces_a_leftover_staging_volume():
    result = plan(None, {STAGING_LABEL: "engine-042"}, True)
    assert (result.create, result.remove_container, result.remove_volume) == (True, False, True)
    assert "left by an earlier staging" in result.reasons[0]


@pytest.mark.parametrize("planner", ["present", "absent"])
@pytest.mark.parametrize("container, volume_labels, message", [
    (PROD, None, "container engine-042-staging exists and is not a staging Engine"),
    (None, {}, "volume engine-042-staging-data exists and is not a staging Engine"),
    (None, {STAGING_LABEL: "engine-007"}, "is the staging Engine of engine-007, not of engine-042"),
])
def test_anything_not_labelled_as_this_engines_staging_is_refused(planner, container, volume_labels, message):
    with pytest.raises(StagingError, match=message):
        if planner == "present":
            plan(container, volume_labels, volume_labels is not None)
        else:
            plan_absent("engine-042", "engine-042-staging", container, volume_labels, volume_labels is not None)


@pytest.mark.parametrize("container, volume, expected", [
    (None, False, (False, False)),
    ("staging", True, (True, True)),
    ("staging", False, (True, False)),
    (None, True, (False, True)),
])
def test_absent_removes_what_is_there(container, volume, expected):
    attrs = staging_container() if container else None
    result = plan_absent("engine-042", "engine-042-staging", attrs, {STAGING_LABEL: "engine-042"}, volume)
    assert (result.remove_container, result.remove_volume) == expected
    assert result.create is False and result.changed == any(expected)


# --------------------------------------------------------------------------
# What is returned
# --------------------------------------------------------------------------


def test_view_of_an_absent_staging_engine():
    view = staging_view(None, name="engine-042-staging", volume="engine-042-staging-data", image=MAJOR, snapshot=SNAP)
    assert view["state"] == "absent" and view["url"] is None and view["image"] == MAJOR and view["snapshot"] == SNAP


def test_view_of_a_running_staging_engine_has_env_names_only():
    attrs = staging_container(NetworkSettings={"Ports": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "32781"}]}})
    attrs["Mounts"] = [{"Type": "volume", "Name": "engine-042-staging-data", "Destination": "/srv/state"}]
    facts = facts_from_inspect(attrs)
    assert isinstance(facts, EngineFacts)
    view = staging_view(facts, name="engine-042-staging", volume="engine-042-staging-data")
    assert view["url"] == "http://127.0.0.1:32781"
    assert (view["engine"], view["snapshot"], view["volume"]) == ("engine-042", SNAP, "engine-042-staging-data")
    assert "LLM_API_KEY" in view["env_names"]
    assert "sk-secret" not in repr(view)
