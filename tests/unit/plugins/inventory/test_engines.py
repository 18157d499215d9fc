# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The engines inventory's pure parts: configuration checks, container summaries, and the inventory built from a
listing (the Docker calls themselves run for real in tests/integration/test_inventory_engines.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleError, AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.template import trust_as_template

from ansible_collections.engineops.fleet.plugins.filter.fleet import canary_cohort
from ansible_collections.engineops.fleet.plugins.inventory import engines as plugin
from ansible_collections.engineops.fleet.plugins.module_utils._docker import facts_from_inspect

ROOT = Path(__file__).resolve().parents[4]


def summary(name, image="127.0.0.1:5000/september-engine:2.3.0", port=9001, ip="127.0.0.1", state="running",
            labels=None, volume=None):
    """A ``GET /containers/json`` item as the Docker daemon answers it."""
    return {
        "Id": "c0ffee" + name.encode().hex(),
        "Names": [f"/{name}"],
        "Image": image,
        "ImageID": "sha256:" + "ab" * 32,
        "Command": "python3 /app/engine.py",
        "Created": 1764750000,
        "State": state,
        "Status": "Up 3 minutes",
        "Labels": labels or {},
        "Ports": [{"IP": ip, "PrivatePort": 8000, "PublicPort": port, "Type": "tcp"}] if port else [],
        "Mounts": [{"Type": "volume", "Name": volume or f"engine-data-{name}", "Source": f"/var/lib/docker/volumes/{volume}",
                    "Destination": "/data", "Driver": "local", "Mode": "z", "RW": True, "Propagation": ""}],
        "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.5"}}},
    }


def facts(item):
    return facts_from_inspect(plugin.inspect_shape(plugin.trimmed_summary(item)))


# -- Docker hosts -------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "name", "host_vars"), [
    ({"docker_host": "ssh://engineops@docker-a.example.com:2222"}, "docker-a.example.com",
     {"ansible_host": "docker-a.example.com", "ansible_port": 2222, "ansible_user": "engineops",
      "engine_docker_host": "unix:///var/run/docker.sock"}),
    ({"docker_host": "ssh://docker-b", "ansible_user": "ops", "name": "b"}, "b",
     {"ansible_host": "docker-b", "ansible_user": "ops", "engine_docker_host": "unix:///var/run/docker.sock"}),
    ({"docker_host": "ssh://root@[2001:db8::5]"}, "2001:db8::5",
     {"ansible_host": "2001:db8::5", "ansible_user": "root", "engine_docker_host": "unix:///var/run/docker.sock"}),
    ({"docker_host": "unix:///var/run/docker.sock"}, "localhost",
     {"ansible_connection": "local", "engine_docker_host": "unix:///var/run/docker.sock"}),
    ({"docker_host": "unix:///run/user/1000/docker.sock", "vars": {"ansible_python_interpreter": "/venv/bin/python"}},
     "localhost", {"ansible_connection": "local", "engine_docker_host": "unix:///run/user/1000/docker.sock",
                   "ansible_python_interpreter": "/venv/bin/python"}),
    ({"docker_host": "tcp://docker-c:2376", "tls": True, "ansible_host": "10.0.0.3"}, "docker-c",
     {"ansible_host": "10.0.0.3", "engine_docker_host": "unix:///var/run/docker.sock"}),
    # The modules run here, against the same daemon the plugin lists.
    ({"docker_host": "tcp://docker-c:2376", "ansible_connection": "local", "validate_certs": True, "ca_path": "/ca.pem",
      "client_cert": "/c.pem", "client_key": "/k.pem"}, "docker-c",
     {"ansible_connection": "local", "engine_docker_host": "tcp://docker-c:2376", "engine_docker_validate_certs": True,
      "engine_docker_ca_path": "/ca.pem", "engine_docker_client_cert": "/c.pem", "engine_docker_client_key": "/k.pem"}),
    # ... but not a daemon the modules see otherwise.
    ({"docker_host": "tcp://docker-c:2376", "ansible_connection": "local", "tls": True,
      "engine_docker_host": "unix:///var/run/docker.sock"}, "docker-c",
     {"ansible_connection": "local", "engine_docker_host": "unix:///var/run/docker.sock"}),
    ({"docker_host": "ssh://ops@docker-d", "ansible_connection": "local"}, "docker-d",
     {"ansible_connection": "local", "engine_docker_host": "ssh://ops@docker-d"}),
    ({"docker_host": "ssh://ops@docker-e", "engine_docker_host": "tcp://127.0.0.1:2375"}, "docker-e",
     {"ansible_host": "docker-e", "ansible_user": "ops", "engine_docker_host": "tcp://127.0.0.1:2375"}),
])
def test_docker_host_entry_fills_in_what_the_url_implies(raw, name, host_vars):
    entry = plugin.docker_host_entry(raw, 0)
    assert entry.name == name
    assert entry.host_vars == host_vars
    assert entry.docker_options == {k: v for k, v in raw.items() if k in plugin.DOCKER_OPTIONS}


def test_docker_host_entry_passes_the_connection_options_under_their_names():
    raw = {"docker_host": "tcp://docker-c:2376", "validate_certs": True, "ca_path": "/ca.pem", "client_cert": "/c.pem",
           "client_key": "/k.pem", "tls_hostname": "docker-c", "api_version": "1.41", "ansible_host": "docker-c"}
    entry = plugin.docker_host_entry(raw, 0)
    assert entry.docker_options == {k: v for k, v in raw.items() if k != "ansible_host"}


@pytest.mark.parametrize(("raw", "message"), [
    ("unix:///var/run/docker.sock", "docker_hosts[3] must be a mapping"),
    ({}, "docker_hosts[3].docker_host=None is not a Docker daemon URL"),
    ({"docker_host": "docker-a:2376"}, "'docker-a:2376' is not a Docker daemon URL"),
    ({"docker_host": "ftp://docker-a"}, "is not a Docker daemon URL"),
    ({"docker_host": "ssh://docker-a:port"}, "has a port that is not a number"),
    ({"docker_host": "tcp://docker-a:2376"}, "needs ansible_host"),
    ({"docker_host": "ssh://a", "tlsverify": True}, "unknown key(s) tlsverify"),
    ({"docker_host": "ssh://a", "vars": ["x"]}, "vars must be a mapping"),
    ({"docker_host": "ssh://a", "vars": {"ansible_host": "b"}}, "vars sets ansible_host: set them on docker_hosts[3] itself"),
    ({"docker_host": "ssh://a", "vars": {"engine_key": "s3cr3t-literal"}}, "docker_hosts[3].vars.engine_key must be a template"),
    ({"docker_host": "ssh://a", "name": ""}, None),  # an empty name falls back to the URL's host
])
def test_docker_host_entry_refuses_what_cannot_work(raw, message):
    if message is None:
        assert plugin.docker_host_entry(raw, 3).name == "a"
        return
    with pytest.raises(AnsibleParserError) as caught:
        plugin.docker_host_entry(raw, 3)
    assert message in str(caught.value)
    assert "s3cr3t-literal" not in str(caught.value)


def test_docker_host_defaults_fill_in_what_an_item_does_not_set():
    defaults = {"use_ssh_client": True, "vars": {"ansible_python_interpreter": "/venv/bin/python"}}
    items = [{"docker_host": "ssh://ops@docker-a"},
             {"docker_host": "ssh://ops@docker-b", "use_ssh_client": False, "vars": {"ansible_become": True}}]
    entries = plugin.docker_host_entries(items, defaults)
    assert [e.docker_options["use_ssh_client"] for e in entries] == [True, False]
    assert entries[0].host_vars["ansible_python_interpreter"] == "/venv/bin/python"
    assert "ansible_python_interpreter" not in entries[1].host_vars and entries[1].host_vars["ansible_become"] is True
    with pytest.raises(AnsibleParserError, match="docker_host_defaults must be a mapping"):
        plugin.docker_host_entries([{"docker_host": "ssh://a"}], ["use_ssh_client"])
    with pytest.raises(AnsibleParserError, match=r"docker_hosts\[0\] has unknown key\(s\) tls_verify"):
        plugin.docker_host_entries([{"docker_host": "ssh://a"}], {"tls_verify": True})


def test_docker_host_entries_need_distinct_names():
    with pytest.raises(AnsibleParserError, match="Two Docker hosts are named 'docker-a'"):
        plugin.docker_host_entries([{"docker_host": "ssh://docker-a"},
                                    {"docker_host": "tcp://docker-a:2376", "ansible_host": "docker-a"}])
    with pytest.raises(AnsibleParserError, match="non-empty list"):
        plugin.docker_host_entries([])


# -- keys ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["k3y-literal", "", None, 42, "{ lookup('env', 'K') }"])
def test_a_literal_key_is_refused_without_repeating_it(value):
    with pytest.raises(AnsibleParserError) as caught:
        plugin.require_lazy_key(value, "key_template")
    assert "key_template must be a template" in str(caught.value)
    assert "k3y-literal" not in str(caught.value)


def test_a_template_key_is_accepted():
    plugin.require_lazy_key("{{ lookup('ansible.builtin.env', 'ENGINE_KEY') }}", "key_template")


# -- selection ----------------------------------------------------------------------------

@pytest.mark.parametrize(("repositories", "image", "selected"), [
    (["september-engine"], "127.0.0.1:5000/september-engine:2.3.0", True),
    (["september-engine"], "september-engine:2.3.0", True),
    (["september-engine"], "registry.example.com/september-engine:3.0.0", True),
    (["september-engine"], "127.0.0.1:5000/september-engine-alt:2.3.0", False),
    (["september-engine"], "127.0.0.1:5000/team/september-engine:2.3.0", False),
    (["team/september-engine"], "registry.example.com/team/september-engine:2.3.0", True),
    (["registry.example.com/september-engine"], "registry.example.com/september-engine:2.3.0", True),
    (["registry.example.com/september-engine"], "other.example.com/september-engine:2.3.0", False),
    (["registry.example.com/september-engine"], "september-engine:2.3.0", False),
    (["engine", "september-engine"], "engine:2.4.0", True),
    (["september-engine"], "sha256:" + "ab" * 32, False),
    (["september-engine"], "", False),
    ([], "postgres:16", True),
])
def test_selection_by_image_repository(repositories, image, selected):
    selector = plugin.EngineSelector.from_options([], repositories, False)
    assert selector.matches(summary("engine-1", image=image)) is selected


def test_labels_are_filtered_by_the_daemon():
    selector = plugin.EngineSelector.from_options(["io.example.role=engine", "io.example.tier"], [], True)
    assert selector.docker_filters() == {"label": ["io.example.role=engine", "io.example.tier"]}
    assert plugin.EngineSelector.from_options([], [], False).docker_filters() == {}


@pytest.mark.parametrize(("labels", "repositories", "message"), [
    ([""], [], "'' is not a label"),
    (["=engine"], [], "'=engine' is not a label"),
    ([{"role": "engine"}], [], "is not a label"),
    ([], ["september-engine:2.3.0"], "has a tag or digest; give the repository alone, e.g. 'september-engine'"),
    ([], ["September Engine"], "image_repositories: Image reference 'September Engine'"),
])
def test_bad_selectors_are_refused(labels, repositories, message):
    with pytest.raises(AnsibleParserError) as caught:
        plugin.EngineSelector.from_options(labels, repositories, False)
    assert message in str(caught.value)


# -- container summaries ----------------------------------------------------------------------

@pytest.mark.parametrize(("ip", "url"), [
    ("127.0.0.1", "http://127.0.0.1:9001"),
    ("0.0.0.0", "http://127.0.0.1:9001"),
    ("", "http://127.0.0.1:9001"),
    ("10.0.0.7", "http://10.0.0.7:9001"),
    ("::1", "http://[::1]:9001"),
])
def test_engine_url_from_the_published_port(ip, url):
    assert facts(summary("engine-1", ip=ip)).engine_url() == url


def test_summary_facts():
    got = facts(summary("engine-7", image="registry.example.com/september-engine:2.4.0-rc.1", volume="engine-data-7",
                        labels={"io.engineops.fleet.previous-image": "september-engine:2.3.0"}, state="restarting"))
    assert (got.name, got.version, got.volume, got.state) == ("engine-7", "2.4.0-rc.1", "engine-data-7", "restarting")
    assert got.previous_image == "september-engine:2.3.0"
    assert got.image_id == "sha256:" + "ab" * 32
    assert got.restarting and not got.running


def test_summary_without_port_or_version():
    got = facts(summary("engine-8", image="sha256:" + "cd" * 32, port=None))
    assert got.engine_url() is None
    assert got.version is None and "is not a semantic version" in got.version_error


def test_a_published_port_of_another_container_port_is_not_the_engine():
    item = summary("engine-9")
    item["Ports"] = [{"IP": "127.0.0.1", "PrivatePort": 22, "PublicPort": 2222, "Type": "tcp"},
                     {"PrivatePort": 8000, "Type": "tcp"}]  # exposed, not published
    assert facts(item).engine_url() is None
    assert facts(item).engine_url(22) == "http://127.0.0.1:2222"


def test_the_container_name_wins_over_a_legacy_link_name():
    item = summary("engine-3")
    item["Names"] = ["/web/engine", "/engine-3"]
    assert facts(item).name == "engine-3"


def test_the_cached_summary_keeps_only_what_is_read():
    kept = plugin.trimmed_summary(summary("engine-1"))
    assert set(kept) == set(plugin.SUMMARY_FIELDS)
    assert kept["Mounts"] == [{"Type": "volume", "Name": "engine-data-engine-1",
                               "Source": "/var/lib/docker/volumes/None", "Destination": "/data"}]


# -- the inventory built from a listing ----------------------------------------------------------

# The options of the fragments the plugin extends (constructed, inventory_cache), at their defaults.
FRAGMENT_DEFAULTS = {"strict": False, "compose": {}, "groups": {}, "keyed_groups": [], "use_extra_vars": False,
                     "leading_separator": True, "cache": False}


def plugin_defaults() -> dict:
    options = yaml.safe_load(plugin.DOCUMENTATION)["options"]
    return {**FRAGMENT_DEFAULTS, **{name: spec.get("default") for name, spec in options.items()}}


def trusted(value):
    """Options as Ansible reads them from the configuration file: its strings may be templates."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [trusted(v) for v in value]
    return value


@pytest.fixture
def build(monkeypatch):
    """``build(config, listing)`` -> InventoryData built by the plugin from ``listing``, which stands in for the
    Docker daemons' answers. ``build.cache`` is the plugin's cache (a dict), kept between builds."""
    calls = []
    answer: dict = {}

    def listed(entries, selector, timeout):
        calls.append([e.name for e in entries])
        return {name: [plugin.trimmed_summary(item) for item in items] for name, items in answer.items()}

    monkeypatch.setattr(plugin, "list_engine_containers", listed)

    def run(config: dict, listing: dict, cache: bool = True) -> InventoryData:
        answer.clear()
        answer.update(listing)
        module = plugin.InventoryModule()
        module._options = trusted({**plugin_defaults(), **config})
        module._origins = dict.fromkeys(module._options, "test")
        module.inventory, module.loader, module._vars, module._cache = InventoryData(), DataLoader(), {}, run.cache
        module._build("/inventory/fleet.engines.yml", cache)
        return module.inventory

    run.calls = calls
    run.cache = {}
    return run


TWO_HOSTS = {"docker_hosts": [{"docker_host": "ssh://ops@docker-a", "name": "a"},
                              {"docker_host": "ssh://ops@docker-b:2222", "name": "b"}]}


def fleet_listing(per_host=50):
    versions = ["2.3.0", "2.3.1"]
    return {
        host: [summary(f"engine-{host}{i:03d}", image=f"127.0.0.1:5000/september-engine:{versions[i % 2]}", port=9001 + i)
               for i in range(per_host)]
        for host in ("a", "b")
    }


def members(inventory, group):
    return sorted(h.name for h in inventory.groups[group].get_hosts())


def host_vars(inventory, name):
    return inventory.get_host(name).get_vars()


def test_groups_by_version_docker_host_and_cohort(build):
    inventory = build({**TWO_HOSTS, "canary_percent": 5}, fleet_listing())
    names = members(inventory, "engines")
    assert len(names) == 100
    assert members(inventory, "engine_version_2_3_0") == [n for n in names if int(n[-3:]) % 2 == 0]
    assert members(inventory, "docker_host_b") == [n for n in names if n.startswith("engine-b")]
    # The same draw as the canary_cohort filter over the same Engines.
    assert members(inventory, "engine_canary") == canary_cohort(names, 5)
    assert len(members(inventory, "engine_canary")) == 5
    assert members(inventory, "engine_rest") == sorted(set(names) - set(canary_cohort(names, 5)))
    children = sorted(g.name for g in inventory.groups["engines"].child_groups)
    assert children == ["docker_host_a", "docker_host_b", "engine_canary", "engine_rest",
                        "engine_version_2_3_0", "engine_version_2_3_1"]
    host = host_vars(inventory, "engine-b007")
    assert {k: v for k, v in host.items() if k.startswith(("engine_", "ansible_"))} == {
        "engine_name": "engine-b007",
        "engine_url": "http://127.0.0.1:9008",
        "engine_version": "2.3.1",
        "engine_image": "127.0.0.1:5000/september-engine:2.3.1",
        "engine_docker_host": "unix:///var/run/docker.sock",
        "engine_docker_host_name": "b",
        "ansible_host": "docker-b",
        "ansible_port": 2222,
        "ansible_user": "ops",
    }


def test_only_selected_containers_are_engines(build):
    listing = {"a": [summary("engine-1"), summary("db", image="postgres:16"),
                     summary("engine-alt", image="127.0.0.1:5000/september-engine-alt:2.3.0")], "b": []}
    assert members(build(TWO_HOSTS, listing), "engines") == ["engine-1"]


def test_an_engine_without_version_is_grouped_as_unknown(build):
    listing = {"a": [summary("engine-1"), summary("engine-2", image="september-engine:latest")], "b": []}
    inventory = build(TWO_HOSTS, listing)
    assert members(inventory, "engine_version_unknown") == ["engine-2"]
    assert "engine_version" not in host_vars(inventory, "engine-2")


def test_same_names_on_two_docker_hosts_need_a_hostname_expression(build):
    listing = {"a": [summary("engine-1")], "b": [summary("engine-1")]}
    with pytest.raises(AnsibleError, match="Two Engines get the inventory name 'engine-1' .*set hostname"):
        build(TWO_HOSTS, listing)
    inventory = build({**TWO_HOSTS, "hostname": "engine_docker_host_name ~ '-' ~ engine_name"}, listing)
    assert members(inventory, "engines") == ["a-engine-1", "b-engine-1"]
    assert host_vars(inventory, "b-engine-1")["engine_name"] == "engine-1"


def test_the_key_stays_a_template(build):
    template = "{{ lookup('ansible.builtin.file', '/keys/' ~ engine_name) }}"
    inventory = build({**TWO_HOSTS, "key_template": template}, {"a": [summary("engine-1")], "b": []})
    assert host_vars(inventory, "engine-1")["engine_key"] == template


def test_compose_may_not_set_the_key(build):
    with pytest.raises(AnsibleError, match="compose sets engine_key"):
        build({**TWO_HOSTS, "compose": {"engine_key": "'k'"}, "strict": True}, {"a": [], "b": []})


def test_cache_reuses_the_listing_made_for_the_same_hosts(build):
    first = build({**TWO_HOSTS, "cache": True}, {"a": [summary("engine-1")], "b": []})
    assert members(first, "engines") == ["engine-1"]
    # The daemons now answer otherwise; the cache still holds the first listing, other options apply at once.
    listing = {"a": [summary("engine-1"), summary("engine-2")], "b": []}
    again = build({**TWO_HOSTS, "cache": True, "engines_group": "fleet"}, listing)
    assert members(again, "fleet") == ["engine-1"]
    assert len(build.calls) == 1
    # Refreshing (ansible-inventory --flush-cache, meta: refresh_inventory) lists again and updates the cache.
    assert members(build({**TWO_HOSTS, "cache": True}, listing, cache=False), "engines") == ["engine-1", "engine-2"]
    assert members(build({**TWO_HOSTS, "cache": True}, {"a": [], "b": []}), "engines") == ["engine-1", "engine-2"]
    assert len(build.calls) == 2
    # A listing made for other Docker hosts or labels is not used.
    other = build({**TWO_HOSTS, "cache": True, "labels": ["io.example.role=engine"]}, {"a": [], "b": []})
    assert members(other, "engines") == []
    assert len(build.calls) == 3


def test_without_cache_every_build_lists(build):
    build(TWO_HOSTS, {"a": [summary("engine-1")], "b": []})
    build(TWO_HOSTS, {"a": [summary("engine-1")], "b": []})
    assert len(build.calls) == 2 and build.cache == {}


def test_compose_groups_and_keyed_groups_see_the_engine_facts(build):
    listing = {"a": [summary("engine-1", labels={"io.example.tier": "gold"}), summary("engine-2", state="restarting")],
               "b": [summary("engine-3", image="september-engine:3.0.0")]}
    inventory = build({**TWO_HOSTS, "strict": True,
                       "compose": {"engine_port_published": "engine_host_port", "engine_major": "engine_version.split('.')[0]"},
                       "groups": {"crash_looping": "engine_state == 'restarting'"},
                       "keyed_groups": [{"key": "engine_labels['io.example.tier'] | default('none')", "prefix": "tier"}]},
                      listing)
    assert host_vars(inventory, "engine-1")["engine_port_published"] == 9001
    assert host_vars(inventory, "engine-3")["engine_major"] == "3"
    assert members(inventory, "crash_looping") == ["engine-2"]
    assert members(inventory, "tier_gold") == ["engine-1"]
    assert members(inventory, "tier_none") == ["engine-2", "engine-3"]
    assert "engine_labels" not in host_vars(inventory, "engine-1")


def test_strict_fails_on_an_expression_that_fails(build):
    listing = {"a": [summary("engine-1")], "b": []}
    config = {**TWO_HOSTS, "compose": {"tier": "engine_labels['io.example.tier']"}}
    assert "tier" not in host_vars(build(config, listing), "engine-1")
    with pytest.raises(AnsibleError, match="Could not set tier for host engine-1"):
        build({**config, "strict": True}, listing)


def test_hostname_may_name_another_variable(build):
    inventory = build({**TWO_HOSTS, "hostname": "engine_volume"}, {"a": [summary("engine-1", volume="vol-1")], "b": []})
    assert members(inventory, "engines") == ["vol-1"]


@pytest.mark.parametrize(("config", "message"), [
    ({"hostname": "engine_previous_image"}, "hostname 'engine_previous_image' gives None for the Engine 'engine-1'"),
    ({"canary_percent": 0}, "canary_percent: canary_cohort: percent 0 must be above 0 and at most 100"),
    ({"hostname": "engine_labels['missing']"}, "hostname \"engine_labels['missing']\" fails for the Engine 'engine-1'"),
    ({"hostname": "''"}, "it must give a non-empty string"),
    ({"key_template": "plain-key-value"}, "key_template must be a template"),
    ({"docker_hosts": []}, "docker_hosts must be a non-empty list"),
])
def test_bad_options_are_refused(build, config, message):
    with pytest.raises(AnsibleError) as caught:
        build({**TWO_HOSTS, **config}, {"a": [summary("engine-1")], "b": []})
    assert message in str(caught.value)
    assert "plain-key-value" not in str(caught.value)


def test_the_example_inventory(build):
    config = yaml.safe_load((ROOT / "inventories" / "example" / "example.engines.yml").read_text())
    image = "registry.example.com/september-engine:2.3.0"
    listing = {"engines-a.example.com": [summary("engine-001", image=image)],
               "engines-b.example.com": [summary("engine-005", image=image, port=9005)],
               "engines-c.example.com": [summary("engine-009", image="127.0.0.1:5000/september-engine:2.3.0")]}
    inventory = build({k: v for k, v in config.items() if k != "plugin"}, listing)
    assert members(inventory, "engines") == ["engine-001", "engine-005"]  # engine-009 is from another registry
    assert members(inventory, "docker_host_engines_b_example_com") == ["engine-005"]
    got = host_vars(inventory, "engine-005")
    assert {k: got[k] for k in ("ansible_host", "ansible_user", "engine_docker_host", "engine_url")} == {
        "ansible_host": "engines-b.example.com", "ansible_user": "engineops",
        "engine_docker_host": "unix:///var/run/docker.sock", "engine_url": "http://127.0.0.1:9005"}
    assert got["engine_key"] == config["key_template"] and "{{" in got["engine_key"]
    entry = plugin.docker_host_entries(config["docker_hosts"])[2]
    assert (entry.host_vars["ansible_port"], entry.docker_options["use_ssh_client"]) == (2222, True)
