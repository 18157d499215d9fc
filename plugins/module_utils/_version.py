# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Engine versions, read from image references.

The Engine does not report its version: it is read from the image tag, and
the contract pins exact ``X.Y.Z`` tags, never ``latest``. This file parses
image references (``[registry[:port]/]path[:tag][@digest]``), semantic
versions (with prerelease precedence), and classifies an upgrade.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering


class VersionError(ValueError):
    """Base class of the errors raised by this file."""


class ImageReferenceError(VersionError):
    """An image reference is malformed."""


class VersionTagError(VersionError):
    """An image tag or version string is not an exact semantic version."""


# Docker's reference grammar, restated (distribution/reference).
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DOMAIN_RE = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)"
    r"(?::[0-9]+)?$"
)

# semver.org 2.0.0, with an optional leading "v".
_NUM = r"0|[1-9][0-9]*"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER_RE = re.compile(
    rf"^(?P<prefix>[vV]?)(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>{_PRE_ID}(?:\.{_PRE_ID})*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_LOOSE_VERSION_RE = re.compile(r"^[vV]?[0-9]+(?:\.[0-9]+)*")

UPGRADE_KINDS = ("same", "patch", "minor", "major", "downgrade")


@total_ordering
@dataclass(frozen=True, eq=False)
class Version:
    """A semantic version. Compares by semver precedence (build metadata ignored)."""

    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()
    build: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Version:
        return parse_version(text)

    @property
    def release(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    @property
    def is_prerelease(self) -> bool:
        return bool(self.prerelease)

    def _key(self) -> tuple:
        # A version without prerelease ranks above all its prereleases;
        # numeric identifiers rank below alphanumeric ones and compare as
        # numbers; a longer identifier list ranks higher when the rest is equal.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.major, self.minor, self.patch, 0 if self.prerelease else 1, pre)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            text += "-" + ".".join(self.prerelease)
        if self.build:
            text += "+" + ".".join(self.build)
        return text


@dataclass(frozen=True)
class ImageRef:
    """An image reference split into its parts; ``str()`` rebuilds it."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = self.repository
        if self.tag is not None:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + self.digest
        return text

    def with_tag(self, tag: str) -> ImageRef:
        """The same repository with another tag. The digest is dropped: it pinned the old image."""
        _check_tag(tag, str(self))
        return ImageRef(self.repository, tag, None)


def parse_version(text: str) -> Version:
    """Parse an exact semantic version such as ``2.3.0``, ``v2.3.0`` or ``2.4.0-rc.1``."""
    if not isinstance(text, str):
        raise VersionTagError(f"Version must be a string such as '2.3.0', got {type(text).__name__} {text!r}")
    value = text.strip()
    match = _SEMVER_RE.match(value)
    if match is None:
        raise VersionTagError(_explain_bad_version(value))
    pre = match.group("pre")
    build = match.group("build")
    return Version(
        int(match.group("major")),
        int(match.group("minor")),
        int(match.group("patch")),
        tuple(pre.split(".")) if pre else (),
        tuple(build.split(".")) if build else (),
    )


def _explain_bad_version(value: str) -> str:
    if value == "":
        return "Version is empty; expected an exact version such as '2.3.0'"
    if value.lower() == "latest":
        return (
            "Version 'latest' is not pinned; Engines run exact version tags such as '2.3.0', never 'latest'"
        )
    loose = _LOOSE_VERSION_RE.match(value)
    if loose and loose.group(0).lstrip("vV").count(".") < 2:
        return (
            f"Version {value!r} is not exact: expected MAJOR.MINOR.PATCH such as '2.3.0' "
            "(optionally with a 'v' prefix or a '-rc.1' prerelease)"
        )
    return (
        f"Version {value!r} is not a semantic version: expected MAJOR.MINOR.PATCH such as '2.3.0' "
        "(optionally with a 'v' prefix or a '-rc.1' prerelease), without leading zeros"
    )


def _check_tag(tag: object, image: str) -> None:
    if not isinstance(tag, str) or not _TAG_RE.match(tag):
        raise ImageReferenceError(
            f"Tag {tag!r} for image {image!r} is not a valid Docker tag: "
            "expected 1-128 characters of letters, digits, '_', '.', '-', not starting with '.' or '-'"
        )


def parse_image_ref(image: str) -> ImageRef:
    """Split ``[registry[:port]/]path[:tag][@digest]`` into its parts.

    The tag is what follows the last ``:`` after the last ``/``, so a
    registry port (``registry.example.com:5000/engine``) is never taken
    for a tag.
    """
    if not isinstance(image, str):
        raise ImageReferenceError(
            f"Image reference must be a string such as 'september-engine:2.3.0', got {type(image).__name__} {image!r}"
        )
    if image == "" or image != image.strip() or any(c.isspace() for c in image):
        raise ImageReferenceError(
            f"Image reference {image!r} is empty or contains whitespace; expected e.g. 'september-engine:2.3.0'"
        )
    rest = image
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise ImageReferenceError(
                f"Digest {digest!r} in image {image!r} is malformed; expected 'sha256:' followed by hex digits"
            )
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        _check_tag(tag, image)
    if rest == "":
        raise ImageReferenceError(f"Image reference {image!r} has no repository name; expected e.g. 'september-engine:2.3.0'")
    components = rest.split("/")
    if len(components) > 1 and _looks_like_registry(components[0]):
        if not _DOMAIN_RE.match(components[0]):
            raise ImageReferenceError(f"Registry {components[0]!r} in image {image!r} is not a valid host[:port]")
        components = components[1:]
    for component in components:
        if not _PATH_COMPONENT_RE.match(component):
            raise ImageReferenceError(
                f"Repository component {component!r} in image {image!r} is invalid: "
                "expected lowercase letters and digits separated by '.', '_', '__' or '-'"
            )
    return ImageRef(rest, tag, digest)


def _looks_like_registry(component: str) -> bool:
    # Docker's rule: the first component is a registry when it has a '.' or
    # a ':' or is 'localhost' (or has upper case letters, which a path cannot).
    return "." in component or ":" in component or component == "localhost" or component != component.lower()


def split_image_ref(image: str) -> tuple[str, str | None]:
    """``(repository, tag)`` of an image reference; the tag is ``None`` when absent."""
    ref = parse_image_ref(image)
    return ref.repository, ref.tag


def image_with_tag(image: str, tag: str) -> str:
    """The same repository as ``image`` with ``tag`` (any digest dropped)."""
    return str(parse_image_ref(image).with_tag(tag))


def version_from_image(image: str) -> Version:
    """The version pinned by an image reference's tag.

    Refuses references without a tag (digest only or bare name), ``latest``
    and tags that are not an exact semantic version.
    """
    ref = parse_image_ref(image)
    if ref.tag is None:
        pinned = " (pinned by digest only)" if ref.digest else ""
        raise VersionTagError(
            f"Image {image!r} has no tag{pinned}; the Engine's version is read from the tag, "
            f"so pin an exact version such as '{ref.repository}:2.3.0'"
        )
    try:
        return parse_version(ref.tag)
    except VersionTagError as exc:
        raise VersionTagError(f"Image {image!r}: {exc}") from None


def image_for_version(image: str, version: Version | str) -> str:
    """``image``'s repository tagged with ``version``, keeping a ``v`` prefix the current tag has."""
    target = version if isinstance(version, Version) else parse_version(version)
    ref = parse_image_ref(image)
    prefix = ""
    if ref.tag is not None:
        match = _SEMVER_RE.match(ref.tag)
        if match is not None:
            prefix = match.group("prefix")
    # Docker tags cannot carry '+build' metadata.
    tag = prefix + str(Version(target.major, target.minor, target.patch, target.prerelease))
    return str(ref.with_tag(tag))


def coerce_version(value: Version | str) -> Version:
    """A :class:`Version` from a Version, a version string or an image reference."""
    if isinstance(value, Version):
        return value
    if not isinstance(value, str):
        raise VersionTagError(
            f"Expected a version such as '2.3.0' or an image such as 'september-engine:2.3.0', "
            f"got {type(value).__name__} {value!r}"
        )
    text = value.strip()
    if any(c in text for c in ":/@"):
        return version_from_image(text)
    return parse_version(text)


def upgrade_kind(current: Version | str, target: Version | str) -> str:
    """Classify moving from ``current`` to ``target``.

    Returns ``same``, ``patch``, ``minor``, ``major`` or ``downgrade``.
    Both sides may be versions, version strings or image references.
    The highest component that differs decides. When only the prerelease
    differs (``2.4.0-rc.1`` to ``2.4.0``), the kind is that of the release
    the prerelease leads to (``X.0.0`` major, ``X.Y.0`` minor, else patch),
    because semver promises nothing between prereleases. Under major 0,
    a minor change counts as major (semver: anything may change).
    """
    cur = coerce_version(current)
    tgt = coerce_version(target)
    if tgt == cur:
        return "same"
    if tgt < cur:
        return "downgrade"
    if tgt.major != cur.major:
        return "major"
    if tgt.minor != cur.minor:
        return "major" if tgt.major == 0 else "minor"
    if tgt.patch != cur.patch:
        return "patch"
    # Only the prerelease differs.
    if tgt.minor == 0 and tgt.patch == 0:
        return "major"
    if tgt.patch == 0:
        return "major" if tgt.major == 0 else "minor"
    return "patch"
