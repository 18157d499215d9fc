# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import copy

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._container import (
    ContainerError,
    ImageUnavailableError,
    Swapper,
    aside_name,
    check_env,
    derive_spec,
    ensure_image,
    env_changes,
    env_to_dict,
    env_value,
    image_config,
    is_aside_name,
    normalize_image,
    same_image_name,
)
from ansible_collections.engineops.fleet.plugins.module_utils._docker import PREVIOUS_IMAGE_LABEL

OLD_ID = "3f2a9c1b7d4e" + "0" * 52
OLD = "registry.example.com/september-engine:2.3.0"
NEW = "registry.example.com/september-engine:2.3.1"

# The old image, as `docker image inspect` shows it: the Engine's knobs are baked in as ENV.
OLD_IMAGE = {
    "Id": "sha256:" + "a" * 64,
    "Config": {
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "ENGINE_SIM_EXIT_CODE=0", "ENGINE_SIM_TURN_WARNING=old knob"],
        "Cmd": ["python3", "-u", "/app/engine.py"],
        "Entrypoint": None,
        "WorkingDir": "/app",
        "User": "",
        "ExposedPorts": {"8000/tcp": {}},
        "Volumes": None,
        "StopSignal": "SIGTERM",
        "Labels": {"io.engineops.sim.release": "baseline", "org.opencontainers.image.version": "2.3.0"},
    },
}

# A per-user Engine created from it (docker inspect): the image's config shows through.
CONTAINER = {
    "Id": OLD_ID,
    "Name": "/engine-042",
    "Image": "sha256:" + "a" * 64,
    "Config": {
        "Hostname": OLD_ID[:12],
        "Domainname": "",
        "User": "",
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "ExposedPorts": {"8000/tcp": {}},
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "Env": [
            "SQLITE_DB_PATH=/data/brain.sqlite",
            "LLM_API_KEY=sk-secret",
            "ENGINE_SIM_EXIT_CODE=143",  # the container overrides an image default: its own
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "ENGINE_SIM_TURN_WARNING=old knob",
        ],
        "Cmd": ["python3", "-u", "/app/engine.py"],
        "Image": OLD,
        "Volumes": None,
        "WorkingDir": "/app",
        "Entrypoint": None,
        "OnBuild": None,
        "Labels": {
            "io.engineops.sim.release": "baseline",
            "org.opencontainers.image.version": "2.3.0",
            "team": "fleet",
        },
        "StopSignal": "SIGTERM",
    },
    "HostConfig": {
        "Binds": None,
        "NetworkMode": "default",
        "PortBindings": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9042"}]},
        "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0},
        "Memory": 536870912,
        "NanoCpus": 500000000,
        "PidsLimit": None,
        "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}},
        "Mounts": [{"Type": "volume", "Source": "engine-data-042", "Target": "/data"}],
        "Links": None,
    },
    "Mounts": [
        {"Type": "volume", "Name": "engine-data-042", "Source": "/var/lib/docker/volumes/engine-data-042/_data",
         "Destination": "/data", "RW": True},
    ],
    "NetworkSettings": {"Networks": {"bridge": {"Aliases": None, "IPAMConfig": None, "Links": None}}},
}


def with_changes(base, **sections):
    out = copy.deepcopy(base)
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(out.get(section), dict):
            out[section].update(values)
        else:
            out[section] = values
    return out


def spec_of(container=None, image_attrs="old", image=NEW, **kwargs):
    return derive_spec(CONTAINER if container is None else container,
                       OLD_IMAGE if image_attrs == "old" else image_attrs, image, **kwargs)


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image, expected",
    [
        ("september-engine:2.3.0", "september-engine:2.3.0"),
        ("library/september-engine:2.3.0", "september-engine:2.3.0"),
        ("docker.io/library/september-engine:2.3.0", "september-engine:2.3.0"),
        ("docker.io/acme/september-engine:2.3.0", "acme/september-engine:2.3.0"),
        ("127.0.0.1:5000/september-engine:2.3.0", "127.0.0.1:5000/september-engine:2.3.0"),
    ],
)
def test_normalize_image(image, expected):
    assert normalize_image(image) == expected


def test_same_image_name():
    assert same_image_name("engine:2.3.0", "docker.io/library/engine:2.3.0")
    assert not same_image_name("engine:2.3.0", "engine:2.3.1")
    assert not same_image_name(None, "engine:2.3.1")


@pytest.mark.parametrize(
    "candidate, expected",
    [
        ("engine-042-previous-3f2a9c1b7d4e", True),
        ("/engine-042-previous-3f2a9c1b7d4e", True),
        ("engine-042-previous-3f2a9c1b7d4", False),
        ("engine-0420-previous-3f2a9c1b7d4e", False),
        ("engine-042", False),
        ("xengine-042-previous-3f2a9c1b7d4e", False),
    ],
)
def test_aside_names(candidate, expected):
    assert aside_name("engine-042", OLD_ID) == "engine-042-previous-3f2a9c1b7d4e"
    assert is_aside_name(candidate, "engine-042") is expected


def test_env_helpers():
    assert env_to_dict(["A=1", "B=x=y", "C=", "D"]) == {"A": "1", "B": "x=y", "C": "", "D": None}
    assert env_value(3, "N") == "3" and env_value("true", "B") == "true"
    for bad in (True, None, {"a": 1}, [1]):
        with pytest.raises(ContainerError, match="env X"):
            env_value(bad, "X")
    assert env_changes(CONTAINER, {"SQLITE_DB_PATH": "/data/brain.sqlite"}) == []
    assert env_changes(CONTAINER, {"SQLITE_DB_PATH": "/x", "LLM_EMBEDDING_MODEL": "e5"}) == [
        "LLM_EMBEDDING_MODEL", "SQLITE_DB_PATH"]
    assert env_changes(CONTAINER, None) == []


def test_image_config_of_older_daemons():
    assert image_config({"ContainerConfig": {"Env": ["A=1"]}}) == {"Env": ["A=1"]}
    assert image_config(None) == {}


# --------------------------------------------------------------------------
# derive_spec: what is kept, what is left to the new image
# --------------------------------------------------------------------------


def test_env_keeps_the_containers_own_and_drops_the_old_images_knobs():
    spec = spec_of()
    assert spec.config["Env"] == [
        "SQLITE_DB_PATH=/data/brain.sqlite",
        "LLM_API_KEY=sk-secret",
        "ENGINE_SIM_EXIT_CODE=143",
    ]
    assert spec.kept["env"] == ["ENGINE_SIM_EXIT_CODE", "LLM_API_KEY", "SQLITE_DB_PATH"]
    assert spec.from_image["env"] == ["ENGINE_SIM_TURN_WARNING", "PATH"]


def test_env_option_is_merged_over_the_kept_env():
    spec = spec_of(env={"LLM_EMBEDDING_MODEL": "e5-small", "SQLITE_DB_PATH": "/data/other.sqlite", "WORKERS": 4})
    env = env_to_dict(spec.config["Env"])
    assert env["LLM_EMBEDDING_MODEL"] == "e5-small"
    assert env["SQLITE_DB_PATH"] == "/data/other.sqlite"
    assert env["WORKERS"] == "4"
    assert "ENGINE_SIM_TURN_WARNING" not in env
    assert spec.kept["env_option"] == ["LLM_EMBEDDING_MODEL", "SQLITE_DB_PATH", "WORKERS"]


def test_labels_keep_the_containers_own_and_record_the_previous_image():
    spec = spec_of()
    assert spec.config["Labels"] == {"team": "fleet", PREVIOUS_IMAGE_LABEL: OLD}
    assert spec.from_image["labels"] == ["io.engineops.sim.release", "org.opencontainers.image.version"]


def test_previous_image_is_not_overwritten_when_only_env_changes():
    container = with_changes(CONTAINER, Config={
        "Labels": {**CONTAINER["Config"]["Labels"], PREVIOUS_IMAGE_LABEL: "registry.example.com/september-engine:2.2.9"}
    })
    spec = spec_of(container, image=OLD, env={"X": "1"})
    assert spec.config["Labels"][PREVIOUS_IMAGE_LABEL] == "registry.example.com/september-engine:2.2.9"
    assert spec_of(container, image=OLD, record_previous=True).config["Labels"][PREVIOUS_IMAGE_LABEL] == OLD


def test_a_label_the_container_overrode_is_kept():
    container = with_changes(CONTAINER, Config={"Labels": {"io.engineops.sim.release": "pinned-by-ops"}})
    assert spec_of(container).config["Labels"]["io.engineops.sim.release"] == "pinned-by-ops"


@pytest.mark.parametrize(
    "config, image_config_, expected",
    [
        pytest.param({"Cmd": ["python3", "-u", "/app/engine.py"]}, {}, {}, id="image-cmd-left-to-the-new-image"),
        pytest.param({"Cmd": ["python3", "/app/engine.py", "--debug"]}, {},
                     {"Cmd": ["python3", "/app/engine.py", "--debug"]}, id="own-cmd-kept"),
        pytest.param({"Entrypoint": ["/bin/tini", "--"], "Cmd": ["python3", "-u", "/app/engine.py"]}, {},
                     {"Entrypoint": ["/bin/tini", "--"], "Cmd": ["python3", "-u", "/app/engine.py"]},
                     id="own-entrypoint-keeps-cmd-as-is"),
        pytest.param({"Entrypoint": ["/bin/tini", "--"], "Cmd": None}, {},
                     {"Entrypoint": ["/bin/tini", "--"], "Cmd": None}, id="own-entrypoint-without-cmd"),
        pytest.param({"Entrypoint": ["/entry.sh"], "Cmd": ["run"]}, {"Entrypoint": ["/entry.sh"], "Cmd": ["run"]},
                     {}, id="image-entrypoint-left"),
        pytest.param({"WorkingDir": "/srv"}, {}, {"WorkingDir": "/srv"}, id="own-workdir"),
        pytest.param({"User": "1000:1000"}, {}, {"User": "1000:1000"}, id="own-user"),
        pytest.param({"StopSignal": "SIGINT"}, {}, {"StopSignal": "SIGINT"}, id="own-stop-signal"),
        pytest.param({"Healthcheck": {"Test": ["CMD", "true"]}}, {}, {"Healthcheck": {"Test": ["CMD", "true"]}},
                     id="own-healthcheck"),
        pytest.param({"Healthcheck": {"Test": ["CMD", "true"]}}, {"Healthcheck": {"Test": ["CMD", "true"]}}, {},
                     id="image-healthcheck-left"),
        pytest.param({"Hostname": "engine-042.local"}, {}, {"Hostname": "engine-042.local"}, id="chosen-hostname"),
        pytest.param({"Tty": True, "StopTimeout": 45}, {}, {"Tty": True, "StopTimeout": 45}, id="container-only"),
    ],
)
def test_container_config_is_kept_only_where_it_differs_from_the_old_image(config, image_config_, expected):
    container = with_changes(CONTAINER, Config=config)
    image = with_changes(OLD_IMAGE, Config=image_config_)
    body = spec_of(container, image).config
    keys = ("Cmd", "Entrypoint", "WorkingDir", "User", "StopSignal", "Healthcheck", "Hostname", "Tty", "StopTimeout")
    assert {k: body[k] for k in keys if k in body} == expected


def test_exposed_ports_and_volumes():
    bindings = {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9042"}], "9200/tcp": [{"HostPort": "9200"}]}
    container = with_changes(
        CONTAINER,
        Config={"ExposedPorts": {"8000/tcp": {}, "9100/tcp": {}}, "Volumes": {"/cache": {}, "/declared": {}}},
        HostConfig={"PortBindings": bindings},
    )
    image = with_changes(OLD_IMAGE, Config={"Volumes": {"/declared": {}}})
    body = spec_of(container, image).config
    assert body["ExposedPorts"] == {"9100/tcp": {}, "8000/tcp": {}, "9200/tcp": {}}
    assert body["Volumes"] == {"/cache": {}}


def test_host_config_is_carried_whole():
    host = spec_of().config["HostConfig"]
    assert host["PortBindings"] == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9042"}]}
    assert host["RestartPolicy"] == {"Name": "unless-stopped", "MaximumRetryCount": 0}
    assert host["Memory"] == 536870912 and host["NanoCpus"] == 500000000
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m"}}
    assert host["Mounts"] == [{"Type": "volume", "Source": "engine-data-042", "Target": "/data"}]
    assert "Binds" not in host and "PidsLimit" not in host  # None values are left to the daemon


def test_binds_links_and_anonymous_volumes():
    container = with_changes(CONTAINER, HostConfig={
        "Binds": ["engine-data-042:/data:rw", "/etc/engine:/etc/engine:ro"],
        "Mounts": None,
        "Links": ["/redis:/engine-042/cache"],
    }, Mounts=[
        {"Type": "volume", "Name": "engine-data-042", "Destination": "/data", "RW": True},
        {"Type": "bind", "Source": "/etc/engine", "Destination": "/etc/engine", "RW": False},
        {"Type": "volume", "Name": "9c1e" * 16, "Destination": "/app/tmp", "RW": True},
        {"Type": "volume", "Name": "b7" * 32, "Destination": "/ro-cache", "RW": False},
    ])
    spec = spec_of(container)
    host = spec.config["HostConfig"]
    assert host["Binds"] == [
        "engine-data-042:/data:rw",
        "/etc/engine:/etc/engine:ro",
        "9c1e" * 16 + ":/app/tmp",
        "b7" * 32 + ":/ro-cache:ro",
    ]
    assert host["Links"] == ["redis:cache"]
    assert spec.kept["anonymous_volumes"] == ["/app/tmp", "/ro-cache"]


def test_default_bridge_gets_no_endpoint_settings():
    spec = spec_of()
    assert "NetworkingConfig" not in spec.config and spec.extra_networks == {}
    assert spec.kept["networks"] == ["bridge"]


def test_user_networks_keep_aliases_and_addresses_without_the_old_short_id():
    container = with_changes(CONTAINER, HostConfig={"NetworkMode": "engines"}, NetworkSettings={"Networks": {
        "engines": {"Aliases": [OLD_ID[:12], "engine-042", "chat"], "IPAMConfig": {"IPv4Address": "10.9.0.42"},
                    "Links": None, "DriverOpts": None, "MacAddress": "02:42:0a:09:00:2a"},
        "monitoring": {"Aliases": [OLD_ID[:12], "engine-042-metrics"], "IPAMConfig": None},
        "bridge": {"Aliases": None},
    }})
    spec = spec_of(container)
    assert spec.config["NetworkingConfig"] == {"EndpointsConfig": {"engines": {
        "Aliases": ["engine-042", "chat"], "IPAMConfig": {"IPv4Address": "10.9.0.42"}}}}
    assert spec.extra_networks == {"monitoring": {"Aliases": ["engine-042-metrics"]}, "bridge": {}}
    assert spec.kept["networks"] == ["bridge", "engines", "monitoring"]


@pytest.mark.parametrize("mode", ["host", "none", "container:sidecar"])
def test_special_network_modes_take_no_endpoints(mode):
    container = with_changes(CONTAINER, HostConfig={"NetworkMode": mode},
                             NetworkSettings={"Networks": {mode: {"Aliases": ["x"]}}})
    spec = spec_of(container)
    assert "NetworkingConfig" not in spec.config and spec.extra_networks == {}
    assert spec.config["HostConfig"]["NetworkMode"] == mode


def test_the_new_image_and_name():
    spec = spec_of(name="engine-042")
    assert spec.config["Image"] == NEW and spec.name == "engine-042" and spec.image == NEW
    assert spec_of().name == "engine-042"  # from the inspect's /name


def test_without_the_old_images_config_everything_is_the_containers():
    spec = spec_of(image_attrs=None)
    assert "ENGINE_SIM_TURN_WARNING=old knob" in spec.config["Env"]
    assert spec.config["Labels"]["io.engineops.sim.release"] == "baseline"


def test_bad_env_values_are_refused():
    with pytest.raises(ContainerError, match="env DEBUG"):
        spec_of(env={"DEBUG": True})


# --------------------------------------------------------------------------
# The swap and its undo, on fakes
# --------------------------------------------------------------------------


class FakeOld:
    """The old container: its calls go to the shared log; ``running`` follows the drain and the undo's start."""

    def __init__(self, log, name="engine-042", running=True):
        self.id = OLD_ID
        self.name = name
        self.attrs = {**CONTAINER, "State": {"Running": running}}
        self.log = log

    def rename(self, name):
        self.log.append(("rename", self.name, name))
        self.name = name

    def reload(self):
        pass

    def start(self):
        self.log.append(("start-old",))
        self.attrs = {**self.attrs, "State": {"Running": True}}

    def remove(self, v=False):
        self.log.append(("remove-old", v))


class FakeAPI:
    def __init__(self, log, fail=None, stale=None):
        self.log = log
        self.fail = fail or {}
        self.stale = stale  # the inspect of a container an interrupted swap left under the temporary name

    def _maybe(self, step):
        if step in self.fail:
            import docker.errors

            raise docker.errors.APIError(self.fail[step])

    def inspect_container(self, name):
        if self.stale is None:
            import docker.errors

            raise docker.errors.NotFound(f"No such container: {name}")
        return self.stale

    def create_container_from_config(self, config, name=None):
        self._maybe("create")
        self.log.append(("create", name, config["Image"]))
        return {"Id": "n" * 64}

    def connect_container_to_network(self, container, net, **kwargs):
        self._maybe("connect")
        self.log.append(("connect", net, kwargs["aliases"], kwargs["links"]))

    def rename(self, container, name):
        self._maybe("rename-new")
        self.log.append(("rename-new", container[:4], name))

    def start(self, container):
        self._maybe("start")
        self.log.append(("start-new", container[:4]))

    def remove_container(self, container, force=False):
        self.log.append(("remove-new", container[:4], force))


class FakeClient:
    def __init__(self, log, fail=None, stale=None):
        self.api = FakeAPI(log, fail, stale)


class Ready:
    def __init__(self, ready):
        self.ready = ready


ASIDE = "engine-042-previous-3f2a9c1b7d4e"
TEMP = "engine-042-next-3f2a9c1b7d4e"


def _swap(fail=None, *, start=True, was_running=True, networks=None, old_name="engine-042", healthy=None,
          drain_fails=False, stale=None):
    log: list = []
    spec = spec_of()
    if networks:
        spec.extra_networks = networks
    old = FakeOld(log, old_name, running=was_running)
    ticks = iter(range(100, 200))

    def stop_old(container):
        log.append(("drain", container.name))
        if drain_fails:
            raise RuntimeError("SIGKILL did not stop it")
        container.attrs = {**container.attrs, "State": {"Running": False}}
        return "report"

    def wait_healthy(container_id):
        log.append(("wait-healthy", container_id[:4]))
        return Ready(healthy)

    swapper = Swapper(FakeClient(log, fail, stale), old, spec, start=start, was_running=was_running,
                      stop_old=stop_old, wait_healthy=None if healthy is None else wait_healthy,
                      clock=lambda: float(next(ticks)))
    return swapper, log


def test_the_new_container_is_created_before_the_old_one_is_drained():
    swapper, log = _swap(networks={"monitoring": {"Aliases": ["m"], "Links": ["redis:cache"]}}, healthy=True)
    result = swapper.run()
    assert log == [
        ("create", TEMP, NEW),
        ("connect", "monitoring", ["m"], [("redis", "cache")]),
        ("drain", "engine-042"),
        ("rename", "engine-042", ASIDE),
        ("rename-new", "nnnn", "engine-042"),
        ("start-new", "nnnn"),
        ("wait-healthy", "nnnn"),
        ("remove-old", False),
    ]
    assert result.drain == "report" and result.started and result.old_removed and result.aside == ASIDE
    assert result.healthy is True and result.new_name == "engine-042"
    assert result.actions[:2] == [f"created {TEMP} on {NEW}", "connected engine-042-next-3f2a9c1b7d4e to network monitoring"]
    assert "drained engine-042" in result.actions and "engine-042 is healthy" in result.actions


def test_timings_follow_the_steps_and_give_the_outage():
    swapper = _swap(healthy=True)[0]
    timings = swapper.run().timings.to_dict()
    # The fake clock ticks once per reading: created 100, drain 101, stopped 102, started 103, healthy 104.
    assert (timings["new_created"], timings["drain_started"], timings["old_stopped"], timings["new_started"],
            timings["healthy"]) == (100.0, 101.0, 102.0, 103.0, 104.0)
    assert timings["stop_seconds"] == 1.0 and timings["switch_seconds"] == 1.0
    assert timings["boot_to_healthy_seconds"] == 1.0 and timings["outage_seconds"] == 3.0


def test_a_new_release_that_is_not_healthy_is_not_undone():
    swapper, log = _swap(healthy=False)
    result = swapper.run()
    assert result.healthy is False and result.timings.healthy is None
    assert result.timings.to_dict()["outage_seconds"] is None
    assert ("start-old",) not in log and not [e for e in log if e[0] == "remove-new"]
    assert log[-2:] == [("wait-healthy", "nnnn"), ("remove-old", False)]


def test_without_a_health_wait_nothing_is_waited_for():
    swapper, log = _swap()
    result = swapper.run()
    assert result.health is None and result.healthy is None
    assert [e[0] for e in log] == ["create", "drain", "rename", "rename-new", "start-new", "remove-old"]


def test_swap_of_a_stopped_container_for_present_neither_drains_nor_starts():
    swapper, log = _swap(start=False, was_running=False, healthy=True)
    result = swapper.run()
    assert [step[0] for step in log] == ["create", "rename", "rename-new", "remove-old"]
    assert result.timings.drain_started is None and result.timings.new_started is None


UNDO_ALL = [("remove-new", "nnnn", True), ("rename", ASIDE, "engine-042"), ("start-old",)]


@pytest.mark.parametrize(
    "step, undo",
    [
        # The old Engine was never stopped: only the new container goes.
        ("create", []),
        ("connect", [("remove-new", "nnnn", True)]),
        ("rename-new", UNDO_ALL),
        ("start", UNDO_ALL),
    ],
)
def test_swap_failure_is_undone(step, undo):
    swapper, log = _swap({step: "port is already allocated"},
                         networks={"monitoring": {"Aliases": ["m"]}} if step == "connect" else None)
    with pytest.raises(ContainerError) as err:
        swapper.run()
    failed_at = {"create": 0, "connect": 1}.get(step)
    if failed_at is None:
        failed_at = log.index(("rename", "engine-042", ASIDE)) + 1
    tail = [entry for entry in log[failed_at:] if entry[0] in ("remove-new", "rename", "start-old")]
    assert tail == undo
    if step in ("create", "connect"):
        assert ("drain", "engine-042") not in log
    message = str(err.value)
    assert "engine-042" in message and NEW in message and "port is already allocated" in message
    if undo == UNDO_ALL:
        assert f"renamed {ASIDE} back to engine-042" in message and "started the old container" in message
    assert err.value.partial["timings"]["drain_started"] is not None or step in ("create", "connect")


def test_a_drain_that_fails_removes_the_new_container_and_leaves_a_still_running_old_one_alone():
    swapper, log = _swap(drain_fails=True)
    with pytest.raises(ContainerError) as err:
        swapper.run()
    assert log[-1] == ("remove-new", "nnnn", True) and ("start-old",) not in log
    assert not [e for e in log if e[0] in ("rename", "rename-new")]
    assert "draining engine-042 failed: SIGKILL did not stop it" in str(err.value)
    assert "removed the new container" in str(err.value)


def test_swap_failure_of_a_stopped_container_does_not_start_it():
    swapper, log = _swap({"start": "no such image"}, was_running=False)
    with pytest.raises(ContainerError):
        swapper.run()
    assert ("start-old",) not in log and ("remove-new", "nnnn", True) in log


def test_resumed_swap_skips_the_rename_aside():
    swapper, log = _swap(old_name=ASIDE, was_running=False)
    swapper.run()
    assert [step[0] for step in log] == ["create", "rename-new", "start-new", "remove-old"]
    assert log[0] == ("create", TEMP, NEW)


def test_a_container_left_created_under_the_temporary_name_is_replaced():
    swapper, log = _swap(stale={"Id": "s" * 64, "State": {"Running": False}})
    result = swapper.run()
    assert log[:2] == [("remove-new", "ssss", True), ("create", TEMP, NEW)]
    assert result.actions[0] == f"removed {TEMP}, left created by an interrupted swap"


def test_a_running_container_under_the_temporary_name_stops_the_swap_before_anything_is_touched():
    swapper, log = _swap(stale={"Id": "s" * 64, "State": {"Running": True}})
    with pytest.raises(ContainerError, match=f"a container {TEMP} already runs"):
        swapper.run()
    assert log == []


# --------------------------------------------------------------------------
# The pull policy, on a fake client
# --------------------------------------------------------------------------


class FakeImages:
    def __init__(self, local, registry):
        self.local = dict(local)
        self.registry = registry

    def get(self, ref):
        import docker.errors

        if ref not in self.local:
            raise docker.errors.ImageNotFound(f"No such image: {ref}")
        return type("Image", (), {"attrs": {"Id": self.local[ref]}})()

    def get_registry_data(self, ref):
        import docker.errors

        if ref not in self.registry:
            raise docker.errors.NotFound("manifest unknown")
        return object()


class FakePullAPI:
    def __init__(self, images):
        self.images = images
        self.pulls = []

    def pull(self, repository, tag=None, stream=False, decode=False):
        self.pulls.append(f"{repository}:{tag}")
        ref = f"{repository}:{tag}"
        if ref not in self.images.registry:
            return iter([{"status": "Pulling"}, {"error": f"manifest for {ref} not found: manifest unknown"}])
        self.images.local[ref] = self.images.registry[ref]
        return iter([{"status": "Downloaded newer image"}])


class FakePullClient:
    def __init__(self, local=None, registry=None):
        self.images = FakeImages(local or {}, registry or {})
        self.api = FakePullAPI(self.images)


@pytest.mark.parametrize(
    "policy, local, registry, pulls, pulled, changed",
    [
        ("missing", {NEW: "sha256:1"}, {}, [], False, False),
        ("missing", {}, {NEW: "sha256:1"}, [NEW], True, True),
        ("always", {NEW: "sha256:1"}, {NEW: "sha256:1"}, [NEW], True, False),
        ("always", {NEW: "sha256:1"}, {NEW: "sha256:2"}, [NEW], True, True),
        ("never", {NEW: "sha256:1"}, {}, [], False, False),
    ],
)
def test_pull_policy(policy, local, registry, pulls, pulled, changed):
    client = FakePullClient(local, registry)
    check = ensure_image(client, NEW, policy, owner="engine-042")
    assert client.api.pulls == pulls
    assert (check.pulled, check.changed, check.id) == (pulled, changed, client.images.local[NEW])


@pytest.mark.parametrize(
    "policy, local, registry, fragment",
    [
        ("never", {}, {NEW: "sha256:1"}, "pull is 'never'"),
        ("missing", {}, {}, "manifest unknown"),
        ("always", {NEW: "sha256:1"}, {}, "manifest unknown"),
    ],
)
def test_image_that_cannot_be_had_fails_saying_nothing_was_stopped(policy, local, registry, fragment):
    with pytest.raises(ImageUnavailableError) as err:
        ensure_image(FakePullClient(local, registry), NEW, policy, owner="engine-042")
    assert fragment in str(err.value) and NEW in str(err.value) and "engine-042 was not stopped" in str(err.value)


def test_check_mode_asks_the_registry_and_pulls_nothing():
    client = FakePullClient({}, {NEW: "sha256:1"})
    check = ensure_image(client, NEW, "missing", check_mode=True)
    assert client.api.pulls == [] and check.pulled and NEW not in client.images.local
    with pytest.raises(ImageUnavailableError, match="registry does not give it"):
        ensure_image(FakePullClient({}, {}), NEW, "always", check_mode=True)


def test_unknown_pull_policy():
    with pytest.raises(ContainerError, match="pull 'sometimes'"):
        ensure_image(FakePullClient(), NEW, "sometimes")


@pytest.mark.parametrize("env, message", [
    ({"": "x"}, "env name '' is not a valid variable name"),
    ({"A=B": "x"}, "env name 'A=B' is not a valid variable name"),
    ({"FLAG": True}, "ambiguous"),
    ({"EMPTY": None}, "no value"),
])
def test_check_env_names_the_bad_entry(env, message):
    with pytest.raises(ContainerError, match=message):
        check_env(env)
    check_env({"LLM_EMBEDDING_MODEL": "small", "RETRIES": 3})
    check_env(None)
