# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""engine_container against real reference Engines and the local registry, through the ansible CLI."""
from __future__ import annotations

import json
import secrets
import time

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._docker import PREVIOUS_IMAGE_LABEL
from ansible_collections.engineops.fleet.plugins.module_utils._drain import docker_time
from tests.testbed.images import REGISTRY, image_ref
from tests.testbed.loadgen import LoadGenerator

BASELINE = image_ref("baseline")
PATCH = image_ref("patch")
MAJOR = image_ref("major")
BAD_WARNING = image_ref("bad-warning")
# A repository of its own for the pull tests, so removing its local tag disturbs no other test.
PULL_REPOSITORY = f"{REGISTRY}/september-engine-pulltest"


def _env(container) -> dict[str, str]:
    return dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])


def _diff_shows(result, key: str, before: str, after: str) -> bool:
    out = result["_stdout"]
    return f'-    "{key}": "{before}"' in out and f'+    "{key}": "{after}"' in out


def _aside_leftovers(docker_client, name: str) -> list[str]:
    """Containers an Engine's swap left behind: the old one renamed aside, or a new one under its temporary name."""
    return [c.name for infix in ("-previous-", "-next-")
            for c in docker_client.containers.list(all=True, filters={"name": f"{name}{infix}"})]


def _starts(container) -> int:
    return container.logs().decode(errors="replace").count('"Starting execution"')


def _container_events(docker_client, since: float, ids: set[str]) -> list[tuple[str, str, int]]:
    """(action, container id, time in ns) of what the Docker daemon did to ``ids`` since ``since``, in order."""
    events = docker_client.events(since=int(since), until=int(time.time()) + 1, decode=True,
                                  filters={"type": "container"})
    return [(e["Action"], e["id"], e["timeNano"]) for e in events if e.get("id") in ids]


def _wait_healthy(engine, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not engine.client(timeout=2).health().ready:
        if time.monotonic() > deadline:
            raise AssertionError(f"{engine.name} not healthy after {timeout}s")
        time.sleep(0.2)


def test_swap_baseline_to_patch_keeps_every_setting(make_fleet, run_module, docker_client):
    fleet = make_fleet(1, start=False)
    engine = fleet.engines[0]
    fleet.seed(engine)
    # A container-level override of a knob the image sets: the container's own, so it must stay.
    old = fleet.start(engine, ENGINE_SIM_DRAIN_HEALTH="ok")
    old.update(mem_limit="256m", memswap_limit="512m", cpu_shares=512)
    network = docker_client.networks.create(f"engines-{secrets.token_hex(3)}")
    try:
        network.connect(old, aliases=["chat-backend"])
        fleet.wait_healthy(30)
        assert engine.client().execute("What is the capital of France?", "before-swap").ok
        old.reload()
        old_id, old_env = old.id, _env(old)

        args = {"name": engine.name, "image": PATCH}
        check = run_module("engine_container", args, check=True, diff=True)
        assert not check.get("failed"), check.get("msg")
        assert check["changed"] is True and check["recreated"] is True and check["image_changed"] is True
        assert check["actions"] == [f"drain {engine.name}", f"recreate {engine.name} on {PATCH}",
                                    f"start {engine.name}"]
        assert _diff_shows(check, "image", BASELINE, PATCH)
        current = fleet.container(engine)
        assert current.id == old_id and current.status == "running"

        result = run_module("engine_container", args, diff=True)
        assert not result.get("failed"), result.get("msg")
        assert result["changed"] is True and result["pulled"] is False
        assert result["previous_image"] == BASELINE
        assert result["drain"]["exit_code"] == 0 and result["drain"]["not_finished"] == 0
        assert _diff_shows(result, "image", BASELINE, PATCH)
        facts = result["container"]
        assert facts["image"] == PATCH and facts["version"] == "2.3.1" and facts["previous_image"] == BASELINE
        assert facts["running"] is True and facts["restart_count"] == 0

        new = fleet.container(engine)
        assert new.id != old_id and new.id == facts["id"]
        assert _aside_leftovers(docker_client, engine.name) == []
        assert new.attrs["Config"]["Image"] == PATCH
        # Env: the container's own entries all kept, values unchanged.
        env = _env(new)
        for key in ("SQLITE_DB_PATH", "ENGINE_KEY_HASH", "LLM_PROVIDER", "LLM_API_KEY", "LLM_MODEL", "OPENAI_API_KEY"):
            assert env[key] == old_env[key], key
        assert env["ENGINE_SIM_DRAIN_HEALTH"] == "ok"
        # Ports, volume, restart policy, limits, labels, networks with aliases.
        host = new.attrs["HostConfig"]
        assert host["PortBindings"] == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(engine.port)}]}
        assert [(m["Name"], m["Destination"]) for m in new.attrs["Mounts"]] == [(engine.volume, "/data")]
        assert host["RestartPolicy"]["Name"] == "unless-stopped"
        assert (host["Memory"], host["MemorySwap"], host["CpuShares"]) == (256 * 2**20, 512 * 2**20, 512)
        labels = new.attrs["Config"]["Labels"]
        assert labels["io.engineops.testbed"] == fleet.prefix
        assert labels[PREVIOUS_IMAGE_LABEL] == BASELINE
        assert labels["io.engineops.sim.release"] == "patch"  # the new image's label, not the old one's
        assert "chat-backend" in new.attrs["NetworkSettings"]["Networks"][network.name]["Aliases"]
        assert new.attrs["Config"]["Cmd"] == ["python3", "-u", "/app/engine.py"]
        # The same Engine: same key, same brain.
        _wait_healthy(engine)
        assert engine.client().execute("What is the capital of France?", "after-swap").ok

        again = run_module("engine_container", args)
        assert again["changed"] is False and again["recreated"] is False
        assert fleet.container(engine).id == new.id
    finally:
        fleet.down()
        network.remove()


def test_swap_lets_the_new_image_knobs_take_effect(make_fleet, run_module):
    # bad-warning bakes ENGINE_SIM_TURN_WARNING into its image ENV; patch does not set it.
    fleet = make_fleet(1, release="bad-warning")
    engine = fleet.engines[0]
    engine.client().execute("What is the capital of France?", "before")
    assert '"level": "WARNING"' in fleet.container(engine).logs().decode()

    result = run_module("engine_container", {"name": engine.name, "image": PATCH})
    assert result["changed"] is True, result.get("msg")
    assert result["previous_image"] == BAD_WARNING
    assert "ENGINE_SIM_TURN_WARNING" in result["carried"]["left_to_image"]["env"]
    new = fleet.container(engine)
    assert "ENGINE_SIM_TURN_WARNING" not in _env(new)
    _wait_healthy(engine)
    engine.client().execute("What is the capital of France?", "after")
    assert '"level": "WARNING"' not in new.logs().decode()


@pytest.fixture
def pulltest_image(docker_client):
    """The patch release under a repository only this test uses, in the registry and not on the host."""
    ref = f"{PULL_REPOSITORY}:2.3.1"
    docker_client.images.get(PATCH).tag(PULL_REPOSITORY, "2.3.1")
    for line in docker_client.api.push(PULL_REPOSITORY, tag="2.3.1", stream=True, decode=True):
        assert "error" not in line, line
    docker_client.images.remove(ref)
    yield ref
    try:
        docker_client.images.remove(ref)
    except Exception:  # noqa: BLE001 - already gone
        pass


def test_pull_policies_and_an_image_that_cannot_be_had(make_fleet, run_module, docker_client, pulltest_image):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    container = fleet.container(engine)
    first = container.id, container.attrs["State"]["StartedAt"]

    def untouched() -> bool:
        container.reload()
        return container.status == "running" and (container.id, container.attrs["State"]["StartedAt"]) == first

    missing_tag = f"{REGISTRY}/september-engine:9.9.9"
    failed = run_module("engine_container", {"name": engine.name, "image": missing_tag})
    assert failed.get("failed") and missing_tag in failed["msg"] and "was not stopped" in failed["msg"]
    assert untouched()

    never = run_module("engine_container", {"name": engine.name, "image": pulltest_image, "pull": "never"})
    assert never.get("failed") and "'never'" in never["msg"] and "pull: missing" in never["msg"]
    assert untouched()

    check = run_module("engine_container", {"name": engine.name, "image": pulltest_image}, check=True)
    assert check["changed"] is True and check["pulled"] is True
    assert check["actions"][0] == f"pull {pulltest_image}"
    assert not docker_client.images.list(name=PULL_REPOSITORY)
    assert untouched()

    # state=pulled: the image comes to the host, the Engine is left as it is; idempotent; needs an image.
    only_pull = {"name": engine.name, "image": pulltest_image, "state": "pulled"}
    check = run_module("engine_container", only_pull, check=True)
    assert check["changed"] is True and check["pulled"] is True and not docker_client.images.list(name=PULL_REPOSITORY)
    pre = run_module("engine_container", only_pull)
    assert not pre.get("failed"), pre.get("msg")
    assert pre["changed"] is True and pre["actions"] == [f"pull {pulltest_image}"]
    assert docker_client.images.get(pulltest_image).id == docker_client.images.get(PATCH).id
    assert untouched() and fleet.container(engine).attrs["Config"]["Image"] != pulltest_image
    assert run_module("engine_container", only_pull)["changed"] is False
    no_image = run_module("engine_container", {"name": engine.name, "state": "pulled"})
    assert no_image.get("failed") and "image" in no_image["msg"]
    docker_client.images.remove(pulltest_image)

    pulled = run_module("engine_container", {"name": engine.name, "image": pulltest_image, "pull": "missing"})
    assert not pulled.get("failed"), pulled.get("msg")
    assert pulled["changed"] is True and pulled["pulled"] is True
    assert docker_client.images.get(pulltest_image).id == docker_client.images.get(PATCH).id
    assert fleet.container(engine).attrs["Config"]["Image"] == pulltest_image

    always = run_module("engine_container", {"name": engine.name, "image": pulltest_image, "pull": "always"})
    assert not always.get("failed"), always.get("msg")
    assert always["pulled"] is True and always["changed"] is False

    never_now = run_module("engine_container", {"name": engine.name, "image": pulltest_image, "pull": "never"})
    assert never_now["changed"] is False and never_now["pulled"] is False


def test_major_with_extra_env(make_fleet, run_module):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    secret = "embed-" + secrets.token_hex(8)
    args = {"name": engine.name, "image": MAJOR, "env": {"LLM_EMBEDDING_MODEL": secret}}

    result = run_module("engine_container", args, diff=True)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["env_changed"] == ["LLM_EMBEDDING_MODEL"]
    assert "LLM_EMBEDDING_MODEL" in result["container"]["env_names"]
    assert secret not in json.dumps(result)  # the value is never returned nor shown
    assert _env(fleet.container(engine))["LLM_EMBEDDING_MODEL"] == secret
    _wait_healthy(engine, 60)  # the major requires the variable: without it, it would not boot
    assert engine.client().execute("What is the capital of France?", "on-major", field="prompt").ok

    again = run_module("engine_container", args)
    assert again["changed"] is False and again["env_changed"] == []


def test_states_stopped_present_started(make_fleet, run_module, docker_client):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    name = engine.name

    stopped = run_module("engine_container", {"name": name, "state": "stopped"}, diff=True)
    assert stopped["changed"] is True and stopped["drain"]["exit_code"] == 0 and stopped["recreated"] is False
    assert _diff_shows(stopped, "state", "running", "exited")
    assert fleet.container(engine).status == "exited"
    assert run_module("engine_container", {"name": name, "state": "stopped"})["changed"] is False

    started = run_module("engine_container", {"name": name, "state": "started"})
    assert started["changed"] is True and started["container"]["running"] is True
    assert fleet.container(engine).status == "running"
    assert run_module("engine_container", {"name": name})["changed"] is False

    present = run_module("engine_container", {"name": name, "image": PATCH, "state": "present"})
    assert present["changed"] is True and present["recreated"] is True, present.get("msg")
    assert present["container"]["state"] == "created" and present["container"]["previous_image"] == BASELINE
    assert fleet.container(engine).status == "created"
    assert run_module("engine_container", {"name": name, "image": PATCH, "state": "present"})["changed"] is False

    started = run_module("engine_container", {"name": name, "image": PATCH})
    assert started["changed"] is True and started["recreated"] is False
    assert started["container"]["running"] is True and started["container"]["image"] == PATCH
    assert _aside_leftovers(docker_client, name) == []


@pytest.mark.parametrize(
    "args, fragments",
    [
        ({"image": f"{REGISTRY}/september-engine:latest"}, ["'latest'", "exact version"]),
        ({"image": f"{REGISTRY}/September-Engine:2.3.1"}, ["September-Engine", "lowercase"]),
        ({"image": f"{REGISTRY}/september-engine:2.3"}, ["'2.3'", "MAJOR.MINOR.PATCH"]),
        ({"image": PATCH, "env": {"DEBUG": True}}, ["env DEBUG", "quote"]),
        ({"image": PATCH, "grace_period": -5}, ["grace_period -5", "0 or more"]),
        ({"image": PATCH, "docker_host": "unix:///nonexistent/docker.sock"}, ["unix:///nonexistent/docker.sock"]),
    ],
)
def test_bad_input_fails_before_anything_is_touched(run_module, args, fragments):
    result = run_module("engine_container", {"name": "engine-does-not-exist-42", **args})
    assert result.get("failed")
    for fragment in fragments:
        assert fragment in result["msg"], result["msg"]


def test_unknown_container(docker_client, run_module):
    result = run_module("engine_container", {"name": "engine-does-not-exist-42", "image": PATCH})
    assert result.get("failed") and "engine-does-not-exist-42" in result["msg"] and "docker ps" in result["msg"]


def test_rollback_from_a_crash_loop_to_the_recorded_previous_image(make_fleet, run_module, docker_client):
    """A new release that never gets healthy fails the call with healthy false and is left for the rollback."""
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    crash = image_ref("bad-crash")

    bad = run_module("engine_container", {"name": engine.name, "image": crash, "wait_healthy": True,
                                          "health_timeout": 120})
    assert bad.get("failed") and bad["healthy"] is False, bad.get("msg")
    # The crash is caught by the watch at once, with the Engine's own reason, not after the time-out.
    event = bad["health"]["container_event"]
    assert event["reason"] in ("exited", "restarted")
    assert "plugin manifest unreadable" in (event["error"] or ""), event
    assert "plugin manifest unreadable" in bad["msg"] and "nothing was undone" in bad["msg"]
    # Not undone: the container is on the new release (it may have migrated the brain), the old one is gone.
    assert bad["changed"] is True and bad["container"]["image"] == crash
    assert bad["container"]["previous_image"] == BASELINE and bad["previous_image"] == BASELINE
    assert bad["timings"]["new_started"] is not None and bad["timings"]["healthy"] is None
    assert bad["timings"]["outage_seconds"] is None
    assert fleet.container(engine).attrs["Config"]["Image"] == crash
    assert _aside_leftovers(docker_client, engine.name) == []

    back = run_module("engine_container", {"name": engine.name, "image": bad["previous_image"], "pull": "never",
                                           "wait_healthy": True})
    assert not back.get("failed"), back.get("msg")
    assert back["changed"] is True and back["healthy"] is True
    assert back["drain"]["signal"] in ("docker stop", "SIGTERM")  # stopped out of its restart loop
    assert back["container"]["image"] == BASELINE and back["container"]["previous_image"] == crash
    assert engine.client(timeout=5).health().ready


def test_a_swap_interrupted_after_the_rename_is_resumed(make_fleet, run_module, docker_client):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    old = fleet.container(engine)
    old.stop(timeout=30)
    aside = f"{engine.name}-previous-{old.id[:12]}"
    old.rename(aside)  # what an interrupted run leaves behind

    result = run_module("engine_container", {"name": engine.name, "image": PATCH})
    assert result["changed"] is True, result.get("msg")
    assert result["swap"]["aside"] == aside and result["swap"]["old_removed"] is True
    assert result["container"]["previous_image"] == BASELINE and result["container"]["running"] is True
    assert _aside_leftovers(docker_client, engine.name) == []
    _wait_healthy(engine)


def test_a_new_container_that_cannot_start_is_undone(make_fleet, docker_client):
    """The swap's undo on a real daemon: the new container cannot bind its port, the old Engine comes back."""
    import socket

    from ansible_collections.engineops.fleet.plugins.module_utils._container import (
        ContainerError,
        Swapper,
        derive_spec,
    )
    from ansible_collections.engineops.fleet.plugins.module_utils._drain import DrainOptions, drain_container

    fleet = make_fleet(1)
    engine = fleet.engines[0]
    old = fleet.container(engine)
    old_id = old.id
    spec = derive_spec(old.attrs, docker_client.images.get(old.attrs["Image"]).attrs, PATCH)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec.config["HostConfig"]["PortBindings"]["8000/tcp"] = [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
        swapper = Swapper(docker_client, old, spec, start=True, was_running=True,
                          stop_old=lambda c: drain_container(c, DrainOptions(grace_period=10)))
        with pytest.raises(ContainerError) as err:
            swapper.run()
    message = str(err.value)
    assert "starting the new container failed" in message
    assert [a.split(" ")[0] for a in err.value.partial["actions"][:2]] == ["created", "drained"]
    assert "removed the new container" in message and f"back to {engine.name}" in message
    assert "started the old container" in message
    back = fleet.container(engine)
    assert back.id == old_id and back.status == "running"
    assert _aside_leftovers(docker_client, engine.name) == []
    assert len(docker_client.containers.list(all=True, filters={"label": f"io.engineops.testbed={fleet.prefix}"})) == 1
    _wait_healthy(engine)


def test_a_swap_with_a_turn_in_flight_creates_first_drains_and_waits_healthy(make_fleet, run_module, docker_client):
    """One call: the new container exists before the old one stops, the turn in flight finishes, healthy on return."""
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    old = fleet.container(engine)
    old_id = old.id
    args = {"name": engine.name, "image": PATCH, "wait_healthy": True, "grace_period": 60}

    check = run_module("engine_container", args, check=True)
    assert not check.get("failed"), check.get("msg")
    assert check["changed"] is True and "health" not in check and "healthy" not in check
    assert set(check["timings"].values()) == {None}
    assert fleet.container(engine).id == old_id and fleet.container(engine).status == "running"

    since = time.time() - 1
    # Turns long enough that the SIGTERM (after the ansible CLI starts up) comes while one runs.
    load = LoadGenerator([engine], workers_per_engine=1, seconds=120, pause=0.2,
                         messages=("Hold this turn open [sim:sleep=12000]",)).start()
    deadline = time.monotonic() + 15
    while _starts(old) < 1:
        assert time.monotonic() < deadline, "no turn started"
        time.sleep(0.05)
    result = run_module("engine_container", args)
    healthy_on_return = engine.client(timeout=5).health().ready
    report = load.stop()

    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is True and result["healthy"] is True and result["health"]["ready"] is True
    assert healthy_on_return, "the call returned before the Engine was healthy"
    drain = result["drain"]
    assert drain["in_flight"] == 1 and drain["not_finished"] == 0 and drain["killed"] is False
    assert report.lost == [], report.summary()
    assert report.counts()["completed"] >= 1
    completed = {t.task_id for t in report.turns if t.outcome == "completed"}
    assert [t["outcome"] for t in drain["turns"]] == ["completed"] and drain["turns"][0]["task_id"] in completed

    new = fleet.container(engine)
    assert new.id == result["container"]["id"] != old_id and new.attrs["Config"]["Image"] == PATCH
    assert _aside_leftovers(docker_client, engine.name) == []
    steps = [a.split(" ")[0] for a in result["actions"]]
    assert steps == ["created", "drained", "renamed", "renamed", "started", f"{engine.name}", "removed"], steps
    assert result["actions"][0] == f"created {engine.name}-next-{old_id[:12]} on {PATCH}"

    # The Docker daemon's own record: the new container was created before the old one died.
    events = _container_events(docker_client, since, {old_id, new.id})
    created = next(t for action, cid, t in events if action == "create" and cid == new.id)
    died = next(t for action, cid, t in events if action == "die" and cid == old_id)
    started = next(t for action, cid, t in events if action == "start" and cid == new.id)
    assert created < died < started, events
    assert docker_time(new.attrs["Created"]) < died / 1e9

    # The timings are in the order the steps happened, and their spans add up to the outage.
    timings = result["timings"]
    order = ["new_created", "drain_started", "old_stopped", "new_started", "healthy"]
    assert [timings[k] for k in order] == sorted(timings[k] for k in order), timings
    assert timings["outage_seconds"] == pytest.approx(
        timings["stop_seconds"] + timings["switch_seconds"] + timings["boot_to_healthy_seconds"], abs=0.01)

    # Already on the image: no drain, no restart, and still waited for healthy.
    started_at = new.attrs["State"]["StartedAt"]
    again = run_module("engine_container", args)
    assert not again.get("failed"), again.get("msg")
    assert again["changed"] is False and again["healthy"] is True and "drain" not in again
    assert again["timings"]["new_started"] is None and again["timings"]["drain_started"] is None
    assert fleet.container(engine).id == new.id
    assert fleet.container(engine).attrs["State"]["StartedAt"] == started_at


def test_a_new_container_left_by_an_interrupted_swap_is_replaced(make_fleet, run_module, docker_client):
    fleet = make_fleet(1)
    engine = fleet.engines[0]
    old = fleet.container(engine)
    # What a run interrupted between the create and the drain leaves: a container never started, under the temporary name.
    stale = docker_client.containers.create(BASELINE, name=f"{engine.name}-next-{old.id[:12]}",
                                            labels={"io.engineops.testbed": fleet.prefix})

    result = run_module("engine_container", {"name": engine.name, "image": PATCH, "wait_healthy": True})
    assert not result.get("failed"), result.get("msg")
    assert result["healthy"] is True
    assert result["actions"][0] == f"removed {stale.name}, left created by an interrupted swap"
    assert stale.id not in {c.id for c in docker_client.containers.list(all=True)}
    assert fleet.container(engine).attrs["Config"]["Image"] == PATCH
    assert _aside_leftovers(docker_client, engine.name) == []


def test_wait_healthy_needs_state_started(run_module):
    result = run_module("engine_container", {"name": "engine-does-not-exist-42", "image": PATCH, "state": "present",
                                             "wait_healthy": True})
    assert result.get("failed") and "wait_healthy" in result["msg"] and "state: started" in result["msg"]
