# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The AWX import file (extensions/awx/engineops-fleet.json) against the rules AWX applies (tests/awx_rules.py),
then: what the templates ask for is what the playbooks read."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.awx_rules import (
    JOB_TEMPLATE_FIELDS,
    NATURAL_KEYS,
    answer_errors,
    choice_list,
    credential_type_errors,
    extravars_file,
    launch_extra_vars,
    survey_spec_errors,
)

ROOT = Path(__file__).resolve().parents[3]
AWX = ROOT / "extensions" / "awx"
ASSETS = json.loads((AWX / "engineops-fleet.json").read_text())

# -- the validators catch what AWX refuses -------------------------------------------------------------

GOOD_QUESTION = {"question_name": "Q", "variable": "engine_x", "type": "text", "required": False, "default": ""}


@pytest.mark.parametrize("survey, match", [
    ({"description": "", "spec": [GOOD_QUESTION]}, "'name' is missing"),
    ({"name": "s", "description": "", "spec": []}, "doesn't contain any items"),
    ({"name": "s", "description": "", "spec": [dict(GOOD_QUESTION, required="no")]}, "expected to be boolean"),
    ({"name": "s", "description": "", "spec": [{"question_name": "Q", "type": "text", "required": True}]},
     "'variable' missing"),
    ({"name": "s", "description": "", "spec": [GOOD_QUESTION, GOOD_QUESTION]}, "duplicated"),
    ({"name": "s", "description": "", "spec": [dict(GOOD_QUESTION, type="boolean")]}, "not one of the allowed"),
    ({"name": "s", "description": "", "spec": [dict(GOOD_QUESTION, type="integer", default="1")]}, "expected to be"),
    ({"name": "s", "description": "", "spec": [dict(GOOD_QUESTION, max="8")]}, "limit in survey question"),
    ({"name": "s", "description": "", "spec": [dict(GOOD_QUESTION, type="multiplechoice", default="a")]},
     "must specify choices"),
    ({"name": "s", "description": "", "spec": [dict(GOOD_QUESTION, type="multiplechoice", choices=["a"], default="b")]},
     "Default choice must be answered"),
    ({"name": "s", "description": "", "spec": [dict(GOOD_QUESTION, type="multiplechoice", choices="a\nb",
                                                    default="a\nb")]}, "only have one default"),
    ({"name": "s", "description": "", "spec": [dict(GOOD_QUESTION, default="$encrypted$")]}, "reserved keyword"),
])
def test_the_survey_rules_refuse_what_awx_refuses(survey, match):
    assert any(match in e for e in survey_spec_errors(survey)), survey_spec_errors(survey)


def test_the_survey_rules_accept_awxs_own_example():
    example = {"name": "Simple", "description": "Description", "spec": [
        {"type": "text", "question_name": "cantbeshort", "question_description": "What is a long answer",
         "variable": "long_answer", "choices": "", "min": 5, "max": "", "required": False, "default": "Leeloo"},
        {"type": "multiselect", "question_name": "mchoice", "question_description": "Can have multiples of these",
         "variable": "multi_choice", "choices": ["one", "two", "three"], "min": "", "max": "", "required": False,
         "default": "one\nthree"},
        {"type": "float", "question_name": "float", "question_description": "I need a float here",
         "variable": "float_answer", "choices": "", "min": 2, "max": 5, "required": False, "default": ""},
    ]}
    # AWX's example gives "" for unset limits, which its own spec check lets through only for
    # the key-absent or None case: only the limits that are set are checked here.
    for item in example["spec"]:
        for key in ("min", "max"):
            if item[key] == "":
                del item[key]
    assert survey_spec_errors(example) == []


@pytest.mark.parametrize("change, match", [
    ({"kind": "ssh"}, "Must be 'cloud' or 'net'"),
    ({"inputs": {"fields": [{"id": "tower", "label": "T"}]}}, "reserved field name"),
    ({"inputs": {"fields": [{"id": "k", "label": "K"}, {"id": "k", "label": "K"}]}}, "must be unique"),
    ({"inputs": {"fields": [{"id": "k", "label": "K", "type": "boolean", "secret": True}]}}, "secret not allowed"),
    ({"inputs": {"fields": [{"id": "k", "label": "K", "type": "number"}]}}, "inputs:"),
    ({"inputs": {"fields": [{"id": "1k", "label": "K"}]}}, "inputs:"),
    ({"inputs": {"fields": [{"id": "k"}]}}, "'label' is a required property"),
    ({"injectors": {"env": {"ANSIBLE_CONFIG": "{{ k }}"}}}, "not allowed to be used in credentials"),
    ({"injectors": {"env": {"PATH": "{{ k }}"}}}, "not allowed to be used in credentials"),
    ({"injectors": {"env": {"ENGINE_KEY": "{{ engine_token }}"}}}, "undefined field"),
    ({"injectors": {"environment": {}}}, "injectors:"),
])
def test_the_credential_type_rules_refuse_what_awx_refuses(change, match):
    ctype = {"name": "x", "kind": "cloud", "inputs": {"fields": [{"id": "k", "label": "K", "secret": True}]},
             "injectors": {"env": {"ENGINE_KEY": "{{ k }}"}}}
    ctype.update(change)
    errors = credential_type_errors(ctype)
    assert any(match in e for e in errors), errors


# -- the import file ---------------------------------------------------------------------------------------

def test_the_import_file_has_awx_import_shape_and_natural_keys():
    assert set(ASSETS) == set(NATURAL_KEYS)
    names = {}
    for resource, (kind, fields) in NATURAL_KEYS.items():
        for asset in ASSETS[resource]:
            key = asset["natural_key"]
            assert key["type"] == kind and set(key) == {"type", *fields}, key
            # A job template's organization is its project's (read-only in AWX, so not an exported field).
            own = {f: asset["project"]["organization"] if f == "organization" and kind == "job_template" else asset[f]
                   for f in fields}
            assert all(key[f] == own[f] for f in fields), (key, asset)
            names.setdefault(resource, set()).add(asset["name"])
    # Every reference to one of these resources names one that the file defines (or AWX's Default organization).
    for template in ASSETS["job_templates"]:
        assert template["project"]["name"] in names["projects"]
        assert template["execution_environment"]["name"] in names["execution_environments"]
        assert template["natural_key"]["organization"] == {"name": "Default", "type": "organization"}
    for project in ASSETS["projects"]:
        assert project["default_environment"]["name"] in names["execution_environments"]


def test_the_credential_type_passes_awxs_checks_and_injects_the_engine_key():
    [ctype] = ASSETS["credential_types"]
    assert credential_type_errors(ctype) == []
    fields = {f["id"]: f for f in ctype["inputs"]["fields"]}
    assert fields["engine_key"]["secret"] is True
    assert ctype["injectors"] == {"env": {"ENGINE_KEY": "{{ engine_key }}"}}


@pytest.mark.parametrize("template", ASSETS["job_templates"], ids=lambda t: t["name"])
def test_each_job_template_passes_awxs_checks(template):
    assert set(template) - {"related", "natural_key"} <= JOB_TEMPLATE_FIELDS, set(template) - JOB_TEMPLATE_FIELDS
    assert template["job_type"] in ("run", "check")
    assert template["survey_enabled"] is True
    assert survey_spec_errors(template["related"]["survey_spec"]) == []
    # Defaults are answers AWX accepts (it applies only those).
    for item in template["related"]["survey_spec"]["spec"]:
        if "default" in item and item["default"] != "":
            assert answer_errors(item, {item["variable"]: item["default"]}) == [], item
    assert isinstance(yaml.safe_load(template["extra_vars"]), dict)
    # The playbook is the project's, and it is the collection's playbook of the same name.
    playbook = yaml.safe_load((AWX / "project" / template["playbook"]).read_text())
    name = Path(template["playbook"]).stem
    assert playbook == [{"name": playbook[0]["name"], "ansible.builtin.import_playbook": f"engineops.fleet.{name}"}]
    assert (ROOT / "playbooks" / f"{name}.yml").is_file()


def test_there_is_an_upgrade_a_plan_and_a_rollback_template():
    kinds = {(t["playbook"], t["job_type"]) for t in ASSETS["job_templates"]}
    assert kinds == {("upgrade.yml", "run"), ("upgrade.yml", "check"), ("rollback.yml", "run")}
    upgrade = {t["job_type"]: t for t in ASSETS["job_templates"] if t["playbook"] == "upgrade.yml"}
    asked = {i["variable"] for i in upgrade["run"]["related"]["survey_spec"]["spec"]}
    assert {"engine_target_version", "engine_rollout", "engine_failure_policy", "engine_ack_major"} <= asked
    assert upgrade["check"]["related"]["survey_spec"] == upgrade["run"]["related"]["survey_spec"]
    # Two upgrade jobs at once would race each other over the same Engines.
    assert upgrade["run"]["allow_simultaneous"] is False


# -- what the templates ask for is what the playbooks read -----------------------------------------------------

def _code_lines() -> str:
    """The playbooks' and roles' text without comments."""
    files = [p for p in (ROOT / "playbooks").rglob("*") if p.suffix in (".yml", ".j2")]
    files += [p for p in (ROOT / "roles").rglob("*") if p.suffix in (".yml", ".j2") and "meta" not in p.parts]
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for p in files for line in p.read_text().splitlines())


def test_every_variable_the_templates_set_is_one_the_playbooks_read():
    code = _code_lines()
    for template in ASSETS["job_templates"]:
        variables = [i["variable"] for i in template["related"]["survey_spec"]["spec"]]
        variables += list(yaml.safe_load(template["extra_vars"]))
        for var in variables:
            assert re.search(rf"\b{var}\b", code), f"{template['name']}: {var} is read by no playbook or role"
    [ctype] = ASSETS["credential_types"]
    for var in ctype["injectors"]["env"]:
        assert f"lookup('ansible.builtin.env', '{var}')" in code, f"{var} is read by no playbook or role"


def _accepted(variable: str, default: str) -> list[str]:
    """The values the rollout-options assert of playbooks/upgrade.yml accepts for ``variable`` (default checked too)."""
    text = (ROOT / "playbooks" / "upgrade.yml").read_text()
    match = re.search(rf"- {variable} in (\[[^\]]*\])", text)
    assert match, f"upgrade.yml no longer checks {variable}"
    defaults = yaml.safe_load((ROOT / "roles" / "rollout" / "defaults" / "main.yml").read_text())
    assert defaults[variable] == default, f"the rollout role's default of {variable} is {defaults[variable]!r}"
    return yaml.safe_load(match.group(1))


@pytest.mark.parametrize("variable, default", [("engine_rollout", "batched"), ("engine_failure_policy", "stop")])
def test_the_choices_are_what_the_upgrade_playbook_accepts(variable, default):
    accepted = _accepted(variable, default)
    for template in ASSETS["job_templates"]:
        if template["playbook"] != "upgrade.yml":
            continue
        [item] = [i for i in template["related"]["survey_spec"]["spec"] if i["variable"] == variable]
        assert item["type"] == "multiplechoice"
        assert sorted(choice_list(item["choices"])) == sorted(accepted)
        assert item["default"] == default  # the playbook's own default


def test_the_rollback_survey_gives_what_the_rollback_role_reads():
    [template] = [t for t in ASSETS["job_templates"] if t["playbook"] == "rollback.yml"]
    defaults = yaml.safe_load((ROOT / "roles" / "rollback" / "defaults" / "main.yml").read_text())
    spec = {i["variable"]: i for i in template["related"]["survey_spec"]["spec"]}
    assert set(spec) <= set(defaults)
    # A survey answers strings: "false" / "true" must read as the role's booleans.
    assert sorted(choice_list(spec["engine_rollback_restore_brain"]["choices"])) == ["false", "true"]
    assert "engine_rollback_restore_brain | bool" in _code_lines()


def test_a_launch_gives_the_playbook_the_defaults_and_answers():
    [template] = [t for t in ASSETS["job_templates"] if t["job_type"] == "run" and t["playbook"] == "upgrade.yml"]
    # AWX wants an answer to every required question (its form fills in their defaults).
    answers = {"engine_target_version": "2.4.0", "engine_rollout": "canary", "engine_failure_policy": "stop"}
    extra = launch_extra_vars(template, answers)
    assert extra["engine_target_version"] == "2.4.0" and extra["engine_rollout"] == "canary"
    assert extra["engine_quarantine_cap"] == 1 and extra["engine_ack_major"] == ""  # defaults of the others
    assert extra["engine_state_dir"] == "/var/lib/engineops"
    with pytest.raises(ValueError, match="expected to be one of"):
        launch_extra_vars(template, dict(answers, engine_rollout="rolling"))
    with pytest.raises(ValueError, match="value missing"):
        launch_extra_vars(template, {"engine_rollout": "batched", "engine_failure_policy": "stop"})


def test_the_extra_vars_file_marks_what_a_user_typed_unsafe():
    [template] = [t for t in ASSETS["job_templates"] if t["job_type"] == "run" and t["playbook"] == "upgrade.yml"]
    text = extravars_file(template, {"engine_target_version": "{{ lookup('pipe', 'id') }}", "engine_rollout": "batched",
                                     "engine_failure_policy": "stop"})
    assert "!unsafe 'engine_target_version': !unsafe" in text and "!unsafe 'engine_rollout': !unsafe 'batched'" in text
    assert "!unsafe 'engine_ack_major': !unsafe ''" in text  # the default of a question left empty
    assert "engine_state_dir: /var/lib/engineops" in text and "!unsafe 'engine_quarantine_cap': 1" in text
