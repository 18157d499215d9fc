"""AWX's rules for what it imports and launches, read from its source, for the tests of extensions/awx.

The survey spec checks of ``awx/api/views/__init__.py``
(``JobTemplateSurveySpec._validate_spec_data``) and the answer checks of
``awx/main/models/mixins.py`` (``SurveyJobTemplateMixin._survey_element_validation``,
``_update_unified_job_kwargs``); the credential type JSON schemas and checks
of ``awx/main/fields.py`` (``CredentialTypeInputField``,
``CredentialTypeInjectorField``), ``awx/main/constants.py``
(``ENV_BLOCKLIST``) and ``awx/api/serializers.py``
(``CredentialTypeSerializer``: kind ``cloud`` or ``net``, no
``ask_at_runtime``); the job template fields of ``JobTemplateSerializer``; the
asset format of ``awx import`` (``awxkit/api/pages/api.py``: one list per
resource, each object with its ``natural_key``, a survey under
``related.survey_spec``); the extra vars file AWX writes
(``awx/main/utils/safe_yaml.py``: what a user typed is ``!unsafe``).
"""
from __future__ import annotations

import jsonschema
import yaml
from jinja2 import StrictUndefined
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

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
        if "default" in field and not isinstance(field["default"], {"string": str, "boolean": bool}.get(ftype, ())):
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


class _UnsafeDumper(yaml.SafeDumper):
    """AWX's SafeStringDumper: every string, key or value, written ``!unsafe``."""

    def represent_data(self, data):
        if isinstance(data, str):
            return self.represent_scalar("!unsafe", data)
        return super().represent_data(data)


def extravars_file(template: dict, answers: dict) -> str:
    """The ``env/extravars`` AWX writes for a launch of ``template`` with ``answers`` (its ``safe_dump``).

    A variable whose value is the job template's own (only its admins set
    those) is written plainly; any other, a survey default or answer a user
    may have typed, is tagged ``!unsafe``, key and value
    (ALLOW_JINJA_IN_EXTRA_VARS ``template``, AWX's default). ansible-core
    reads an empty ``!unsafe ''`` as null.
    """
    own = yaml.safe_load(template.get("extra_vars") or "") or {}
    parts = []
    for key, value in launch_extra_vars(template, answers).items():
        dumper = yaml.SafeDumper if key in own and own[key] == value else _UnsafeDumper
        parts.append(yaml.dump_all([{key: value}], None, Dumper=dumper, default_flow_style=False))
    return "".join(parts)
