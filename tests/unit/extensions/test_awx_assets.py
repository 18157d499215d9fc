# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The AWX import file (extensions/awx/engineops-fleet.json) against the rules AWX applies.

The rules are AWX's own, read from its source: the survey spec checks of
``awx/api/views/__init__.py`` (``JobTemplateSurveySpec._validate_spec_data``)
and the answer checks of ``awx/main/models/mixins.py``
(``SurveyJobTemplateMixin._survey_element_validation``); the credential type
JSON schemas and checks of ``awx/main/fields.py`` (``CredentialTypeInputField``,
``CredentialTypeInjectorField``), ``awx/main/constants.py`` (``ENV_BLOCKLIST``)
and ``awx/api/serializers.py`` (``CredentialTypeSerializer``: kind ``cloud`` or
``net``, no ``ask_at_runtime``); the job template fields of
``JobTemplateSerializer``; the asset format of ``awx import``
(``awxkit/api/pages/api.py``: one list per resource, each object with its
``natural_key``, a survey under ``related.survey_spec``).
Then: what the templates ask for is what the playbooks read.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from jinja2 import StrictUndefined
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = Path(__file__).resolve().parents[3]
AWX = ROOT / "extensions" / "awx"
ASSETS = json.loads((AWX / "engineops-fleet.json").read_text())

# -- AWX's rules -----------------------------------------------------------------------------------

SURVEY_TYPE_MAPPING = {"text": str, "textarea": str, "password": str, "multiplechoice": str, "multiselect": str,
                       "integer": int, "float": (float, int)}
ENV_BLOCKLIST = frozenset((
    "VIRTUAL_ENV", "PATH", "PYTHONPATH", "JOB_ID", "INVENTORY_ID", "INVENTORY_SOURCE_ID", "INVENTORY_UPDATE_ID",
    "AD_HOC_COMMAND_ID", "REST_API_URL", "REST_API_TOKEN", "MAX_EVENT_RES", "CALLBACK_QUEUE", "CALLBACK_CONNECTION",
    "CACHE", "JOB_CALLBACK_DEBUG", "INVENTORY_HOSTVARS", "AWX_HOST", "PROJECT_REVISION", "SUPERVISOR_CONFIG_PATH",
))
CREDENTIAL_INPUTS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "required": {"type": "array", "items": {"type": "string"}},
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"enum": ["string", "boolean"]},
                    "format": {"enum": ["ssh_private_key", "url"]},
                    "choices": {"type": "array", "minItems": 1, "items": {"type": "string"}, "uniqueItems": True},
                    "id": {"type": "string", "pattern": "^[a-zA-Z_]+[a-zA-Z0-9_]*$"},
                    "label": {"type": "string"},
                    "help_text": {"type": "string"},
                    "multiline": {"type": "boolean"},
                    "secret": {"type": "boolean"},
                    "ask_at_runtime": {"type": "boolean"},
                    "default": {},
                },
                "additionalProperties": False,
                "required": ["id", "label"],
            },
        },
    },
}
CREDENTIAL_INJECTORS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "file": {
            "type": "object",
            "patternProperties": {r"^template(\.[a-zA-Z_]+[a-zA-Z0-9_]*)?$": {"type": "string"}},
            "additionalProperties": False,
        },
        "env": {
            "type": "object",
            "patternProperties": {"^[a-zA-Z_]+[a-zA-Z0-9_]*$": {"type": "string", "pattern": "^[\x00-\x7F]*$"}},
            "additionalProperties": False,
        },
        "extra_vars": {
            "type": "object",
            "patternProperties": {
                r"^[a-zA-Z_\{\}]+[a-zA-Z0-9_\{\}]*$": {
                    "anyOf": [{"type": "string"}, {"type": "array"}, {"$ref": "#/properties/extra_vars"}]},
            },
            "additionalProperties": False,
        },
    },
}
JOB_TEMPLATE_FIELDS = {
    # BaseSerializer ('*'), UnifiedJobTemplateSerializer, JobOptionsSerializer, JobTemplateSerializer
    "name", "description", "execution_environment", "job_type", "inventory", "project", "playbook", "scm_branch",
    "forks", "limit", "verbosity", "extra_vars", "job_tags", "force_handlers", "skip_tags", "start_at_task",
    "timeout", "use_fact_cache", "host_config_key", "ask_scm_branch_on_launch", "ask_diff_mode_on_launch",
    "ask_variables_on_launch", "ask_limit_on_launch", "ask_tags_on_launch", "ask_skip_tags_on_launch",
    "ask_job_type_on_launch", "ask_verbosity_on_launch", "ask_inventory_on_launch", "ask_credential_on_launch",
    "ask_execution_environment_on_launch", "ask_labels_on_launch", "ask_forks_on_launch",
    "ask_job_slice_count_on_launch", "ask_timeout_on_launch", "ask_instance_groups_on_launch", "survey_enabled",
    "become_enabled", "diff_mode", "allow_simultaneous", "job_slice_count", "webhook_service", "webhook_credential",
    "prevent_instance_group_fallback",
}
NATURAL_KEYS = {  # awxkit's NATURAL_KEY of each exported resource
    "credential_types": ("credential_type", ("name", "kind")),
    "execution_environments": ("execution_environment", ("name",)),
    "projects": ("project", ("organization", "name")),
    "job_templates": ("job_template", ("organization", "name")),
}


def survey_spec_errors(survey: dict) -> list[str]:
    """What AWX's survey_spec endpoint refuses in ``survey`` (JobTemplateSurveySpec._validate_spec_data)."""
    for field, kind in (("name", str), ("description", str), ("spec", list)):
        if field not in survey:
            return [f"Field '{field}' is missing from survey spec."]
        if not isinstance(survey[field], kind):
            return [f"Expected {kind.__name__} for field '{field}'"]
    if not survey["spec"]:
        return ["'spec' doesn't contain any items."]
    errors, variables = [], set()
    for idx, item in enumerate(survey["spec"]):
        if not isinstance(item, dict):
            errors.append(f"Survey question {idx} is not a json object.")
            continue
        missing = [f for f in ("type", "question_name", "variable", "required") if f not in item]
        if missing:
            errors.append(f"'{missing[0]}' missing from survey question {idx}")
            continue
        for field in ("type", "question_name", "variable"):
            if not isinstance(item[field], str):
                errors.append(f"'{field}' in survey question {idx} expected to be string.")
        if not isinstance(item["required"], bool):
            errors.append(f"'required' in survey question {idx} expected to be boolean.")
        if item["variable"] in variables:
            errors.append(f"'variable' '{item['variable']}' duplicated in survey question {idx}.")
        variables.add(item["variable"])
        qtype = item["type"]
        if qtype not in SURVEY_TYPE_MAPPING:
            errors.append(f"'{qtype}' in survey question {idx} is not one of the allowed question types.")
            continue
        default = item.get("default", "")
        if default != "" and not isinstance(default, SURVEY_TYPE_MAPPING[qtype]):
            errors.append(f"Default value {default} in survey question {idx} expected to be {qtype}.")
        for key in ("min", "max"):
            if key in item and item[key] is not None and not isinstance(item[key], int):
                errors.append(f"The {key} limit in survey question {idx} expected to be integer.")
        if qtype in ("multiplechoice", "multiselect"):
            if "choices" not in item:
                errors.append(f"Survey question {idx} of type {qtype} must specify choices.")
                continue
            choices = choice_list(item["choices"])
            defaults = [d for d in default.splitlines() if d.strip()] if isinstance(default, str) else default
            if qtype == "multiplechoice" and len(defaults) > 1:
                errors.append("Multiple Choice (Single Select) can only have one default value.")
            if any(d not in choices for d in defaults):
                errors.append("Default choice must be answered from the choices listed.")
        if isinstance(default, str) and default.startswith("$encrypted$") and qtype != "password":
            errors.append(f"$encrypted$ is a reserved keyword for password question defaults, survey question {idx}")
    return errors


def choice_list(choices: list | str) -> list[str]:
    return [c for c in choices.splitlines() if c.strip()] if isinstance(choices, str) else list(choices)


def answer_errors(item: dict, data: dict) -> list[str]:
    """What AWX refuses in an answer to one question at launch (_survey_element_validation)."""
    var = item["variable"]
    if var not in data:
        return [f"'{var}' value missing"] if item["required"] else []
    value, qtype = data[var], item["type"]
    limits = [item.get(k) for k in ("min", "max")]
    low, high = (None if v in ("", None) else v for v in limits)
    if qtype in ("text", "textarea", "password"):
        if not isinstance(value, str):
            return [f"Value {value} for '{var}' expected to be a string."]
        if (low is not None and len(value) < int(low)) or (high is not None and len(value) > int(high)):
            return [f"'{var}' value {value} has a length out of [{low}, {high}]"]
    elif qtype in ("integer", "float"):
        kinds = (int,) if qtype == "integer" else (float, int)
        if type(value) not in kinds:  # noqa: E721 - AWX compares exact types (a bool is no integer)
            return [f"Value {value} for '{var}' expected to be {qtype}."]
        if (low is not None and value < low) or (high is not None and value > high):
            return [f"'{var}' value {value} is out of [{low}, {high}]"]
    elif qtype == "multiplechoice" and value not in choice_list(item["choices"]):
        return [f"Value {value} for '{var}' expected to be one of {choice_list(item['choices'])}."]
    elif qtype == "multiselect" and (not isinstance(value, list)
                                     or any(v not in choice_list(item["choices"]) for v in value)):
        return [f"'{var}' value is expected to be a list of {choice_list(item['choices'])}."]
    return []


def launch_extra_vars(template: dict, answers: dict) -> dict:
    """The extra vars of a job AWX launches from ``template`` with survey ``answers``.

    JT extra_vars, then every survey default that passes validation, then the
    answers (_update_unified_job_kwargs); a refused answer fails the launch.
    """
    spec = template["related"]["survey_spec"]["spec"]
    extra = yaml.safe_load(template.get("extra_vars") or "") or {}
    for item in spec:
        if item.get("default") is not None and not answer_errors(item, {item["variable"]: item["default"]}):
            extra[item["variable"]] = item["default"]
    errors = [e for item in spec for e in answer_errors(item, answers)]
    if errors:
        raise ValueError(errors)
    extra.update(answers)
    return extra


def credential_type_errors(ctype: dict) -> list[str]:
    """What AWX refuses in a custom credential type (fields.py, CredentialTypeSerializer.validate)."""
    errors = []
    if ctype.get("kind") not in ("cloud", "net"):
        errors.append(f"kind: Must be 'cloud' or 'net', not {ctype.get('kind')}")
    inputs, injectors = ctype.get("inputs", {}), ctype.get("injectors", {})
    for what, schema, value in (("inputs", CREDENTIAL_INPUTS_SCHEMA, inputs),
                                ("injectors", CREDENTIAL_INJECTORS_SCHEMA, injectors)):
        errors += [f"{what}: {e.message}" for e in jsonschema.Draft4Validator(schema).iter_errors(value)]
    if "dependencies" in inputs:
        errors.append("'dependencies' is not supported for custom credentials.")
    ids = set()
    for field in inputs.get("fields", []):
        fid, ftype = field.get("id"), field.get("type", "string")
        if fid == "tower":
            errors.append('"tower" is a reserved field name')
        if fid in ids:
            errors.append(f"field IDs must be unique ({fid})")
        ids.add(fid)
        if "default" in field and type(field["default"]) is not {"string": str, "boolean": bool}.get(ftype):
            errors.append(f"{field['default']} is not a {ftype}")
        errors += [f"{key} not allowed for {ftype} type ({fid})" for key in ("choices", "multiline", "format", "secret")
                   if key in field and ftype != "string"]
        if field.get("ask_at_runtime"):
            errors.append("'ask_at_runtime' is not supported for custom credentials.")
    errors += [f"required names an undefined field: {r}" for r in inputs.get("required", []) if r not in ids]
    for var in injectors.get("env", {}):
        if var.startswith("ANSIBLE_") or var in ENV_BLOCKLIST:
            errors.append(f"Environment variable {var} is not allowed to be used in credentials.")
    namespace = {fid: "EXAMPLE" for fid in ids}
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    for kind, injector in injectors.items():
        for key, template in _injector_templates(injector):
            try:
                env.from_string(template).render(namespace)
            except (UndefinedError, SecurityError, TemplateSyntaxError) as exc:
                errors.append(f"{kind} {key} uses an undefined field or bad template ({exc})")
    return errors


def _injector_templates(node, key=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield key or "a key", k
            yield from _injector_templates(v, f"{key}.{k}" if key else k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _injector_templates(v, f"{key}[{i}]")
    else:
        yield key, node


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
    """The values the rollout-options assert of playbooks/upgrade.yml accepts for ``variable``."""
    text = (ROOT / "playbooks" / "upgrade.yml").read_text()
    match = re.search(rf"- {variable} \| default\('{default}'\) in (\[[^\]]*\])", text)
    assert match, f"upgrade.yml no longer checks {variable}"
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
