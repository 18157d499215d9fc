# Copyright: Contributors to the engineops.fleet project
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.engineops.fleet.plugins.module_utils._version import (
    ImageRef,
    ImageReferenceError,
    Version,
    VersionError,
    VersionTagError,
    coerce_version,
    image_for_version,
    image_with_tag,
    parse_image_ref,
    parse_version,
    split_image_ref,
    upgrade_kind,
    version_from_image,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "image, repository, tag, digest",
    [
        ("september-engine:2.3.0", "september-engine", "2.3.0", None),
        ("engine:2.3.0", "engine", "2.3.0", None),
        ("registry.example.com/september-engine:2.3.0", "registry.example.com/september-engine", "2.3.0", None),
        ("registry.example.com:5000/september-engine:2.3.0", "registry.example.com:5000/september-engine", "2.3.0", None),
        ("registry.example.com:5000/september-engine", "registry.example.com:5000/september-engine", None, None),
        ("127.0.0.1:5000/ns/engine:3.0.0", "127.0.0.1:5000/ns/engine", "3.0.0", None),
        ("localhost/engine:v2.3.0", "localhost/engine", "v2.3.0", None),
        (f"engine:2.3.0@{DIGEST}", "engine", "2.3.0", DIGEST),
        (f"127.0.0.1:5000/ns/engine:3.0.0@{DIGEST}", "127.0.0.1:5000/ns/engine", "3.0.0", DIGEST),
        (f"engine@{DIGEST}", "engine", None, DIGEST),
        ("[::1]:5000/engine:1.0.0", "[::1]:5000/engine", "1.0.0", None),
        ("engine", "engine", None, None),
        ("engine:latest", "engine", "latest", None),
    ],
)
def test_parse_image_ref(image, repository, tag, digest):
    ref = parse_image_ref(image)
    assert (ref.repository, ref.tag, ref.digest) == (repository, tag, digest)
    assert str(ref) == image
    assert split_image_ref(image) == (repository, tag)


@pytest.mark.parametrize(
    "image, fragment",
    [
        ("", "empty"),
        (" engine:2.3.0", "whitespace"),
        ("engine:2.3.0 ", "whitespace"),
        ("engine:", "not a valid Docker tag"),
        ("engine:.hidden", "not a valid Docker tag"),
        ("engine:a/b", "not a valid host"),
        (":2.3.0", "no repository"),
        ("engine@sha256:xyz", "Digest"),
        ("September-Engine:2.3.0", "invalid"),
        ("ns//engine:2.3.0", "invalid"),
        ("bad_host_name.example:5000/engine:1.0.0", "not a valid host"),
        (None, "must be a string"),
    ],
)
def test_parse_image_ref_rejects(image, fragment):
    with pytest.raises(ImageReferenceError) as exc:
        parse_image_ref(image)
    assert fragment in str(exc.value)
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2.3.0", Version(2, 3, 0)),
        ("v2.3.0", Version(2, 3, 0)),
        ("V10.20.30", Version(10, 20, 30)),
        ("2.4.0-rc.1", Version(2, 4, 0, ("rc", "1"))),
        ("1.0.0-alpha+build.5", Version(1, 0, 0, ("alpha",), ("build", "5"))),
        ("0.0.1", Version(0, 0, 1)),
        (" 2.3.0 ", Version(2, 3, 0)),
    ],
)
def test_parse_version(text, expected):
    parsed = parse_version(text)
    assert parsed == expected
    assert (parsed.major, parsed.minor, parsed.patch, parsed.prerelease) == (
        expected.major, expected.minor, expected.patch, expected.prerelease)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("latest", "not pinned"),
        ("LATEST", "not pinned"),
        ("", "empty"),
        ("2.3", "not exact"),
        ("2", "not exact"),
        ("02.3.0", "not a semantic version"),
        ("2.3.0.1", "not a semantic version"),
        ("2.3.0-", "not a semantic version"),
        ("2.3.0-rc.01", "not a semantic version"),
        ("stable", "not a semantic version"),
        (230, "must be a string"),
    ],
)
def test_parse_version_rejects(text, fragment):
    with pytest.raises(VersionTagError) as exc:
        parse_version(text)
    assert fragment in str(exc.value)


@pytest.mark.parametrize(
    "image, expected",
    [
        ("september-engine:2.3.0", "2.3.0"),
        ("registry.example.com:5000/september-engine:2.3.1", "2.3.1"),
        ("127.0.0.1:5000/ns/engine:3.0.0", "3.0.0"),
        (f"engine:2.4.0-rc.1@{DIGEST}", "2.4.0-rc.1"),
        ("engine:v2.3.0", "2.3.0"),
    ],
)
def test_version_from_image(image, expected):
    assert str(version_from_image(image)) == expected


@pytest.mark.parametrize(
    "image, fragments",
    [
        ("september-engine:latest", ["september-engine:latest", "not pinned", "never 'latest'"]),
        ("registry.example.com:5000/september-engine", ["has no tag", "registry.example.com:5000/september-engine:2.3.0"]),
        (f"engine@{DIGEST}", ["has no tag", "pinned by digest only"]),
        ("engine:stable", ["engine:stable", "not a semantic version"]),
        ("engine:2.3", ["not exact"]),
    ],
)
def test_version_from_image_refuses_unpinned(image, fragments):
    with pytest.raises(VersionTagError) as exc:
        version_from_image(image)
    for fragment in fragments:
        assert fragment in str(exc.value)


# Each list is in strictly increasing precedence (semver.org section 11).
ORDERED = [
    "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
    "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "1.10.0", "2.0.0", "10.0.0",
]


@pytest.mark.parametrize("lower, higher", list(zip(ORDERED, ORDERED[1:])))
def test_precedence(lower, higher):
    low, high = parse_version(lower), parse_version(higher)
    assert low < high
    assert high > low
    assert low != high
    assert (high <= low) is False


def test_sorting_and_equality_ignore_build():
    shuffled = list(reversed(ORDERED))
    assert [str(v) for v in sorted(parse_version(t) for t in shuffled)] == ORDERED
    assert parse_version("1.0.0+a") == parse_version("1.0.0+b")
    assert hash(parse_version("1.0.0+a")) == hash(parse_version("1.0.0"))
    assert parse_version("v2.3.0") == Version.parse("2.3.0")
    assert parse_version("2.3.0").release == (2, 3, 0)
    assert parse_version("2.4.0-rc.1").is_prerelease
    assert not parse_version("2.4.0").is_prerelease
    assert str(parse_version("1.0.0-alpha.1+build.7")) == "1.0.0-alpha.1+build.7"


@pytest.mark.parametrize(
    "current, target, kind",
    [
        ("2.3.0", "2.3.0", "same"),
        ("2.3.0", "v2.3.0", "same"),
        ("2.3.0", "2.3.1", "patch"),
        ("2.3.0", "2.4.0", "minor"),
        ("2.3.9", "2.5.0", "minor"),
        ("2.3.0", "3.0.0", "major"),
        ("2.9.9", "3.0.0-rc.1", "major"),
        ("2.3.0", "2.4.0-rc.1", "minor"),
        ("2.4.0-rc.1", "2.4.0", "minor"),
        ("2.4.0-rc.1", "2.4.0-rc.2", "minor"),
        ("3.0.0-rc.1", "3.0.0", "major"),
        ("2.3.1-rc.1", "2.3.1", "patch"),
        ("2.3.1", "2.3.0", "downgrade"),
        ("3.0.0", "2.9.9", "downgrade"),
        ("2.4.0", "2.4.0-rc.1", "downgrade"),
        ("0.3.0", "0.4.0", "major"),
        ("0.3.0", "0.3.1", "patch"),
        ("september-engine:2.3.0", "127.0.0.1:5000/september-engine:2.4.0", "minor"),
        ("registry.example.com:5000/september-engine:2.3.0", "3.0.0", "major"),
        (Version(2, 3, 0), Version(2, 3, 1), "patch"),
    ],
)
def test_upgrade_kind(current, target, kind):
    assert upgrade_kind(current, target) == kind


@pytest.mark.parametrize(
    "current, target",
    [("engine:latest", "2.4.0"), ("2.3.0", "latest"), ("2.3", "2.4.0"), (None, "2.4.0")],
)
def test_upgrade_kind_refuses_unpinned(current, target):
    with pytest.raises(VersionError):
        upgrade_kind(current, target)


@pytest.mark.parametrize(
    "image, tag, expected",
    [
        ("september-engine:2.3.0", "2.4.0", "september-engine:2.4.0"),
        ("registry.example.com:5000/september-engine:2.3.0", "2.3.1", "registry.example.com:5000/september-engine:2.3.1"),
        (f"127.0.0.1:5000/ns/engine:3.0.0@{DIGEST}", "2.3.0", "127.0.0.1:5000/ns/engine:2.3.0"),
        ("registry.example.com:5000/engine", "2.3.0", "registry.example.com:5000/engine:2.3.0"),
    ],
)
def test_image_with_tag(image, tag, expected):
    assert image_with_tag(image, tag) == expected


def test_image_with_tag_rejects_bad_tag():
    with pytest.raises(ImageReferenceError) as exc:
        image_with_tag("engine:2.3.0", "2.4.0 ")
    assert "'2.4.0 '" in str(exc.value)


@pytest.mark.parametrize(
    "image, version, expected",
    [
        ("engine:2.3.0", "2.4.0", "engine:2.4.0"),
        ("engine:v2.3.0", "2.4.0", "engine:v2.4.0"),
        ("registry.example.com:5000/engine:v2.3.0", Version(3, 0, 0, ("rc", "1"), ("b", "9")),
         "registry.example.com:5000/engine:v3.0.0-rc.1"),
        (f"engine:2.3.0@{DIGEST}", "v2.3.1", "engine:2.3.1"),
    ],
)
def test_image_for_version(image, version, expected):
    assert image_for_version(image, version) == expected


def test_image_ref_with_tag_drops_digest():
    ref = ImageRef("engine", "2.3.0", DIGEST)
    assert ref.with_tag("2.4.0") == ImageRef("engine", "2.4.0", None)


def test_coerce_version():
    v = Version(1, 2, 3)
    assert coerce_version(v) is v
    assert coerce_version("engine:1.2.3") == v
    assert coerce_version("1.2.3") == v
