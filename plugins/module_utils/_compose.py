# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Keep a compose project's image reference in step with its Engine's container.

A container that ``docker compose`` made carries labels naming its project,
its service, the project's files and its directory. When an Engine of such a
container moves to another image, the project's files still name the old one
and a later ``docker compose up -d`` would put it back. :func:`plan_sync`
(pure, over the files' texts) finds where the service's image is set and
computes the edit that makes the files name the target:

- the ``image:`` value of the last file that sets it (later files override
  earlier ones, as compose merges them), edited in place: comments, quoting
  and layout stay, nothing is re-dumped;
- for ``image: repo:${ENGINE_VERSION}``, the one variable whose new value
  makes the image the target: its line in the project's env file (``.env``)
  when the env file sets it, else the ``${VAR:-default}`` default in the file.

What cannot be kept in step is refused with :class:`ComposeError` before
anything changes: a file that is not on this host, an image built by the
project (``build:``), an image set through ``extends:``, a YAML merge key or
an anchor, a variable only the shell running compose sets.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.engineops.fleet.plugins.module_utils._container import same_image_name

try:
    import yaml
except ImportError:  # pragma: no cover - reported by the module when a compose project is found
    yaml = None

COMPOSE_LABEL_PREFIX = "com.docker.compose."
PROJECT_LABEL = COMPOSE_LABEL_PREFIX + "project"
SERVICE_LABEL = COMPOSE_LABEL_PREFIX + "service"
CONFIG_FILES_LABEL = COMPOSE_LABEL_PREFIX + "project.config_files"
WORKING_DIR_LABEL = COMPOSE_LABEL_PREFIX + "project.working_dir"
ENV_FILE_LABEL = COMPOSE_LABEL_PREFIX + "project.environment_file"
DEFAULT_ENV_FILE = ".env"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ${NAME:+alt}, $NAME, $$
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)
_ENV_LINE = re.compile(r"^(?P<lead>\s*(?:export\s+)?)(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(?P<rest>.*?)\s*$")


class ComposeError(Exception):
    """The compose project cannot be kept in step with the container (nothing was changed)."""


# --------------------------------------------------------------------------
# The project, from the container's labels
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeProject:
    """Where a compose-made container's project lives, as its labels say."""

    project: str
    service: str
    working_dir: str
    config_files: tuple[str, ...]
    env_files: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "service": self.service,
            "working_dir": self.working_dir,
            "config_files": list(self.config_files),
            "env_files": list(self.env_files),
        }


def _label_paths(value: str, working_dir: str) -> tuple[str, ...]:
    paths = []
    for item in value.split(","):
        item = item.strip()
        if item:
            paths.append(item if os.path.isabs(item) or item == "-" else os.path.join(working_dir, item))
    return tuple(paths)


def project_of(labels: Mapping[str, str] | None) -> ComposeProject | None:
    """The compose project of a container with ``labels``; ``None`` when compose did not make it.

    Raises :class:`ComposeError` when the labels name a project but not
    where its files are (a compose too old to record them, or a stack).
    """
    labels = labels or {}
    project = labels.get(PROJECT_LABEL)
    if not project:
        return None
    service = labels.get(SERVICE_LABEL) or ""
    working_dir = labels.get(WORKING_DIR_LABEL) or ""
    files = labels.get(CONFIG_FILES_LABEL) or ""
    missing = [name for name, value in ((SERVICE_LABEL, service), (WORKING_DIR_LABEL, working_dir),
                                        (CONFIG_FILES_LABEL, files)) if not value]
    if missing:
        raise ComposeError(
            f"the container belongs to compose project {project!r} but has no label {', '.join(missing)}, so its "
            "files cannot be found (compose 1.25 and later record them); recreate it once with docker compose up -d"
        )
    config_files = _label_paths(files, working_dir)
    if "-" in config_files:
        raise ComposeError(
            f"compose project {project!r} was read from standard input (-f -): there is no file to keep in step"
        )
    env_label = labels.get(ENV_FILE_LABEL) or ""
    env_files = _label_paths(env_label, working_dir) if env_label else (os.path.join(working_dir, DEFAULT_ENV_FILE),)
    return ComposeProject(project, service, working_dir, config_files, env_files)


def read_project_files(project: ComposeProject) -> dict[str, str | None]:
    """The texts of the project's files on this host; an env file that does not exist maps to ``None``.

    Raises :class:`ComposeError` for a compose file that is missing or unreadable.
    """
    texts: dict[str, str | None] = {}
    for path in project.config_files + project.env_files:
        try:
            with open(path, encoding="utf-8") as handle:
                texts[path] = handle.read()
        except FileNotFoundError:
            if path in project.env_files:
                texts[path] = None
                continue
            raise ComposeError(
                f"compose file {path} of project {project.project!r} is not on this host (the container's labels "
                "name it); run the task on the Docker host where the project lives"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ComposeError(f"cannot read compose file {path} of project {project.project!r}: {exc}") from None
    return texts


# --------------------------------------------------------------------------
# Interpolation: ${VAR} and friends
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    """One ``${NAME...}`` / ``$NAME`` of a value, at ``start:end`` of its text."""

    name: str
    op: str  # "", ":-", "-", ":?", "?"
    arg: str
    start: int
    end: int

    def with_default(self, default: str) -> str:
        """The text of this variable with another default."""
        return "${" + self.name + self.op + default + "}"


def parse_template(text: str) -> list[str | Variable]:
    """``text`` as literal pieces and :class:`Variable` items, as compose interpolates it."""
    parts: list[str | Variable] = []
    literal = []
    pos = 0
    for match in _INTERPOLATION.finditer(text):
        literal.append(text[pos:match.start()])
        pos = match.end()
        if match.group("escaped"):
            literal.append("$")
            continue
        if match.group("invalid") is not None:
            raise ComposeError(f"{text!r} has a '$' that starts no variable (write $$ for a literal $)")
        op, arg = match.group("op") or "", match.group("arg") or ""
        if op.endswith("+"):
            raise ComposeError(f"{text!r} uses ${{{match.group('braced')}{op}...}}, which cannot be kept in step")
        if "$" in arg:
            raise ComposeError(f"{text!r} nests a variable in a default, which cannot be kept in step")
        if "".join(literal):
            parts.append("".join(literal))
        literal = []
        parts.append(Variable(match.group("braced") or match.group("named"), op, arg, match.start(), match.end()))
    literal.append(text[pos:])
    if "".join(literal):
        parts.append("".join(literal))
    return parts


def _variable_value(var: Variable, env: Mapping[str, str]) -> str | None:
    """What compose puts for ``var`` given ``env`` (the env file), ``None`` when only the shell can tell."""
    value = env.get(var.name)
    if var.op in (":-", ":?"):
        if value:
            return value
        return var.arg if var.op == ":-" else None
    if var.op in ("-", "?"):
        if value is not None:
            return value
        return var.arg if var.op == "-" else None
    return value


# --------------------------------------------------------------------------
# The env file
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvEntry:
    """One ``NAME=value`` line of an env file; ``start:end`` is the value's text (quotes included)."""

    path: str
    name: str
    value: str
    line: int
    start: int
    end: int
    quote: str  # "", "'" or '"'


def parse_env_file(path: str, text: str) -> dict[str, EnvEntry]:
    """The entries of an env file (the last line of a name wins); values are unquoted and uncommented."""
    entries: dict[str, EnvEntry] = {}
    offset = 0
    for number, raw in enumerate(text.splitlines(keepends=True), 1):
        line = raw.rstrip("\r\n")
        stripped = line.strip()
        match = _ENV_LINE.match(line)
        if stripped and not stripped.startswith("#") and match:
            rest = match.group("rest")
            start = offset + match.start("rest")
            quote = rest[:1] if rest[:1] in ("'", '"') else ""
            if quote:
                close = rest.find(quote, 1)
                if close < 0:
                    raise ComposeError(f"{path} line {number}: the value of {match.group('name')} has no closing {quote}")
                value, end = rest[1:close], start + close + 1
            else:
                comment = re.search(r"\s#", rest)
                value = rest[:comment.start()].rstrip() if comment else rest
                end = start + len(value)
            entries[match.group("name")] = EnvEntry(path, match.group("name"), value, number, start, end, quote)
        offset += len(raw)
    return entries


def set_env_value(text: str, entry: EnvEntry, value: str) -> str:
    """``text`` with ``entry``'s value replaced by ``value``, in the entry's quoting; the rest of the line kept."""
    if entry.quote == "'" and "'" in value or entry.quote == '"' and ('"' in value or "\\" in value):
        raise ComposeError(f"{entry.path}: {value!r} cannot be written as a {entry.quote}-quoted value of {entry.name}")
    if not entry.quote and (re.search(r"\s", value) or "#" in value or value[:1] in ("'", '"')):
        raise ComposeError(f"{entry.path}: {value!r} cannot be written as an unquoted value of {entry.name}")
    return text[:entry.start] + entry.quote + value + entry.quote + text[entry.end:]


# --------------------------------------------------------------------------
# The compose files
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSite:
    """Where a compose file sets the service's image: the scalar at ``start:end`` of the file's text."""

    path: str
    value: str
    start: int
    end: int
    style: str | None  # None (plain), "'" or '"'
    line: int


@dataclass(frozen=True)
class ServiceEntry:
    """What one compose file says about the service, as far as its image goes."""

    path: str
    image: ImageSite | None
    build: bool
    extends: bool
    merge_key: bool


def _need_yaml() -> None:
    if yaml is None:
        raise ComposeError("the Python library PyYAML is needed on the Docker host to read compose files")


def _mapping_get(node: Any, key: str) -> tuple[Any, Any] | None:
    """The (key node, value node) of ``key`` in a YAML mapping node (the last one, like compose)."""
    found = None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            found = (key_node, value_node)
    return found


def service_entry(path: str, text: str, service: str) -> ServiceEntry | None:
    """What compose file ``path`` (its ``text``) sets for ``service``; ``None`` when it does not name it."""
    _need_yaml()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ComposeError(f"compose file {path} is not valid YAML: {exc}") from None
    if root is None:
        return None
    if not isinstance(root, yaml.MappingNode):
        raise ComposeError(f"compose file {path} is not a mapping of top-level keys")
    services = _mapping_get(root, "services")
    if services is None or not isinstance(services[1], yaml.MappingNode):
        return None
    entry = _mapping_get(services[1], service)
    if entry is None:
        return None
    body = entry[1]
    if not isinstance(body, yaml.MappingNode):
        return ServiceEntry(path, None, False, False, False)
    image = _mapping_get(body, "image")
    site = None
    if image is not None:
        key_node, value_node = image
        start, end = value_node.start_mark.index, value_node.end_mark.index
        between = text[key_node.end_mark.index:start] if start >= key_node.end_mark.index else "*"
        raw = text[start:end]
        # The value's text must be the scalar alone: no alias (its marks are the anchor's), anchor or tag before it.
        alone = isinstance(value_node, yaml.ScalarNode) and between.strip() == ":" and (
            raw == value_node.value if value_node.style is None
            else value_node.style in ("'", '"') and raw[:1] == value_node.style)
        if not alone:
            raise ComposeError(
                f"{path} line {key_node.start_mark.line + 1}: the image of service {service!r} is set through a YAML "
                "anchor, alias or tag, or over several lines, so it cannot be edited in place; write the image "
                "there as a one-line value of its own"
            )
        site = ImageSite(path, value_node.value, value_node.start_mark.index, value_node.end_mark.index,
                         value_node.style, value_node.start_mark.line + 1)
    return ServiceEntry(
        path,
        site,
        build=_mapping_get(body, "build") is not None,
        extends=_mapping_get(body, "extends") is not None,
        merge_key=_mapping_get(body, "<<") is not None,
    )


def _scalar_text(value: str, style: str | None) -> str:
    if style == '"':
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if style == "'":
        return "'" + value.replace("'", "''") + "'"
    return value


def set_image_value(text: str, site: ImageSite, service: str, value: str) -> str:
    """``text`` with the image scalar at ``site`` set to ``value`` in its own quoting; checked by reading it back."""
    new = text[:site.start] + _scalar_text(value, site.style) + text[site.end:]
    try:
        again = service_entry(site.path, new, service)
    except ComposeError:
        again = None
    if again is None or again.image is None or again.image.value != value:
        raise ComposeError(
            f"{site.path} line {site.line}: {value!r} cannot be written in place of {site.value!r} without changing "
            "how the file reads; quote the image value in the file and run again"
        )
    return new


# --------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------


@dataclass
class FileEdit:
    """One file's change: what changes in it, and its text before and after."""

    path: str
    change: str  # "image", "variable NAME", "default of NAME"
    before: str
    after: str
    before_text: str
    after_text: str
    backup: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "change": self.change, "before": self.before, "after": self.after,
                "backup": self.backup}

    def diff(self) -> dict[str, str]:
        return {"before_header": self.path, "after_header": self.path,
                "before": self.before_text, "after": self.after_text}


@dataclass
class ComposePlan:
    """What keeps ``project`` in step with ``target``: no edit when the files name it already."""

    project: ComposeProject
    image_file: str
    image_value: str  # as written in the file, variables and all
    variable: str | None
    image_before: str  # what compose makes of it now
    image_after: str
    edits: list[FileEdit] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.edits)

    def actions(self) -> list[str]:
        return [f"edit {e.path}: {e.change} {e.before} -> {e.after}" for e in self.edits]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.project.to_dict(),
            "image_file": self.image_file,
            "image_value": self.image_value,
            "variable": self.variable,
            "image_before": self.image_before,
            "image_after": self.image_after,
            "changed": self.changed,
            "edits": [e.to_dict() for e in self.edits],
        }


def _image_site(project: ComposeProject, texts: Mapping[str, str | None]) -> ImageSite:
    """The image setting compose uses for the service: the last file's that sets one."""
    entries = []
    for path in project.config_files:
        entry = service_entry(path, texts[path] or "", project.service)
        if entry is not None:
            entries.append(entry)
    where = f"service {project.service!r} of compose project {project.project!r}"
    if not entries:
        raise ComposeError(
            f"none of the project's files ({', '.join(project.config_files)}) defines {where}; it may come from an "
            "include: the labels do not name"
        )
    built = [e.path for e in entries if e.build]
    if built:
        raise ComposeError(
            f"{where} is built by the project (build: in {', '.join(built)}), so a later docker compose up would "
            "build its own image; pin the Engine's image with image: and no build: to let upgrades keep it in step"
        )
    sites = [e.image for e in entries if e.image is not None]
    if not sites:
        via = [e.path for e in entries if e.extends or e.merge_key]
        how = f" (it comes through extends: or a YAML merge key in {', '.join(via)})" if via else ""
        raise ComposeError(f"no file of the project sets the image of {where}{how}; set it with image: in the file")
    return sites[-1]


def _env_entries(project: ComposeProject, texts: Mapping[str, str | None]) -> dict[str, EnvEntry]:
    entries: dict[str, EnvEntry] = {}
    for path in project.env_files:
        text = texts.get(path)
        if text is not None:
            entries.update(parse_env_file(path, text))
    return entries


def plan_sync(project: ComposeProject, target: str, texts: Mapping[str, str | None]) -> ComposePlan:
    """The edits that make ``project``'s files name ``target`` for its service (none if they do already).

    ``texts`` maps each of the project's files to its text (``None`` for an
    env file that does not exist), as :func:`read_project_files` reads them.
    """
    site = _image_site(project, texts)
    parts = parse_template(site.value)
    variables = [p for p in parts if isinstance(p, Variable)]
    if not variables:
        plan = ComposePlan(project, site.path, site.value, None, site.value, target)
        if not same_image_name(site.value, target):
            text = texts[site.path] or ""
            plan.edits.append(FileEdit(site.path, "image", site.value, target, text,
                                       set_image_value(text, site, project.service, target)))
        return plan

    env = _env_entries(project, texts)
    values = {k: e.value for k, e in env.items()}
    resolved: dict[Variable, str] = {}
    for var in variables:
        value = _variable_value(var, values)
        if value is None:
            raise ComposeError(
                f"{site.path} line {site.line}: the image {site.value!r} uses ${var.name}, which neither the project's "
                f"env file ({', '.join(project.env_files)}) sets nor a default gives, so only the shell that runs "
                f"docker compose knows it; set {var.name} in the env file"
            )
        resolved[var] = value
    current = "".join(resolved[p] if isinstance(p, Variable) else p for p in parts)
    plan = ComposePlan(project, site.path, site.value, None, current, target)
    if same_image_name(current, target):
        return plan

    candidates = []
    for var in variables:
        if sum(1 for v in variables if v.name == var.name) > 1:
            continue
        index = parts.index(var)
        prefix = "".join(resolved[p] if isinstance(p, Variable) else p for p in parts[:index])
        suffix = "".join(resolved[p] if isinstance(p, Variable) else p for p in parts[index + 1:])
        if target.startswith(prefix) and target.endswith(suffix) and len(target) > len(prefix) + len(suffix):
            candidates.append((var, target[len(prefix):len(target) - len(suffix)]))
    candidates = [(var, value) for var, value in candidates if "$" not in value]
    if len(candidates) != 1:
        names = ", ".join(f"${v.name}" for v in variables)
        why = "no single variable" if not candidates else "more than one variable"
        raise ComposeError(
            f"{site.path} line {site.line}: the image {site.value!r} (now {current}) cannot be made {target} by "
            f"changing {why} of {names}; write the image so that one variable holds what changes (e.g. the tag)"
        )
    var, value = candidates[0]
    plan.variable = var.name
    entry = env.get(var.name)
    if entry is not None:
        text = texts[entry.path] or ""
        plan.edits.append(FileEdit(entry.path, f"variable {var.name}", entry.value, value, text,
                                   set_env_value(text, entry, value)))
    else:
        text = texts[site.path] or ""
        new_value = site.value[:var.start] + var.with_default(value) + site.value[var.end:]
        plan.edits.append(FileEdit(site.path, f"default of {var.name}", var.arg, value, text,
                                   set_image_value(text, site, project.service, new_value)))
    return plan


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def backup_name(path: str, when: float | None = None, pid: int | None = None) -> str:
    """Where a file's backup goes, Ansible's way: ``<path>.<pid>.<YYYY-mm-dd@HH:MM:SS>~``."""
    stamp = time.strftime("%Y-%m-%d@%H:%M:%S", time.localtime(time.time() if when is None else when))
    return f"{path}.{os.getpid() if pid is None else pid}.{stamp}~"


def write_edit(edit: FileEdit) -> None:
    """Back ``edit.path`` up next to itself, then replace it atomically with ``edit.after_text``.

    The file keeps its mode and owner. ``edit.backup`` names the backup.
    Raises :class:`ComposeError` when the file changed since it was read
    or cannot be written (the file is then as it was).
    """
    try:
        with open(edit.path, encoding="utf-8") as handle:
            if handle.read() != edit.before_text:
                raise ComposeError(f"{edit.path} changed while the Engine was moved; not overwritten, run again")
        backup = backup_name(edit.path)
        shutil.copy2(edit.path, backup)
        edit.backup = backup
        stat = os.stat(edit.path)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(edit.path) or ".", prefix=".engineops-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(edit.after_text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, stat.st_mode & 0o7777)
            if hasattr(os, "chown") and (stat.st_uid, stat.st_gid) != (os.getuid(), os.getgid()):
                os.chown(tmp, stat.st_uid, stat.st_gid)
            os.replace(tmp, edit.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise ComposeError(f"cannot write {edit.path}: {exc}") from None
