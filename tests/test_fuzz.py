"""Property tests (Hypothesis): the parsers that read what clients and operators write raise
nothing but their declared errors, and accept what their grammars allow exactly as written.

Examples are bounded (``max_examples``) and derandomized, so the suite stays fast and a run
is reproducible; the Range test goes over real HTTP to the shared registry.
"""

from __future__ import annotations

import contextlib
import json
import string
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cargohold import mediatypes as mt
from cargohold.api.common import parse_content_range
from cargohold.auth import htpasswd
from cargohold.config import ConfigError, apply_env_overrides, load_config
from cargohold.digest import TAG_RE, Digest, check_name, check_tag
from cargohold.errors import ErrorCode, RegistryError
from cargohold.images.names import UsageError, parse_destination, parse_reference
from cargohold.registry.manifests import parse_manifest

MANIFEST_TYPES = [mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST_V2, mt.DOCKER_MANIFEST_LIST]
FAST = settings(max_examples=200, deadline=None, derandomize=True, database=None)
HTTP = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

HEX = "0123456789abcdef"
sha256_hex = st.text(HEX, min_size=64, max_size=64)
digests = st.one_of(
    sha256_hex.map(lambda h: f"sha256:{h}"),
    st.text(HEX, min_size=128, max_size=128).map(lambda h: f"sha512:{h}"),
)
# what a path or header may carry after a valid value: "$" in a regex lets "\n" through
suffixes = st.one_of(st.sampled_from(["\n", " ", "\r\n", "\x00", "/", "%0a"]), st.text(max_size=3))
near_digests = st.one_of(
    digests,
    st.builds(lambda d, junk: d + junk, digests, suffixes),
    st.builds(lambda junk, d: junk + d, st.text(max_size=3), digests),
    st.text(max_size=140),
    st.from_regex(r"[a-z0-9+._-]{1,10}:[A-Za-z0-9=_-]{0,140}", fullmatch=True),
)

# --------------------------------------------------------------------------- digests, names, tags


@FAST
@given(near_digests)
def test_digest_grammar(value: str) -> None:
    parsed = Digest.try_parse(value)
    if parsed is not None:
        assert str(parsed) == value  # accepted exactly as written, nothing trimmed
        assert len(parsed.hex) == {"sha256": 64, "sha512": 128}[parsed.algorithm]
    try:
        assert Digest.parse(value) == parsed
    except RegistryError as e:
        assert parsed is None
        assert e.code is ErrorCode.DIGEST_INVALID


@FAST
@given(digests)
def test_valid_digests_are_accepted(value: str) -> None:
    assert str(Digest.parse(value)) == value


# the spec's grammar, built directly (st.from_regex of NAME_RE is slow to draw from)
alnum = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6)
component = st.builds(
    lambda first, rest: first + "".join(sep + part for sep, part in rest),
    alnum,
    st.lists(st.tuples(st.sampled_from([".", "_", "__", "-", "--"]), alnum), max_size=2),
)
valid_names = st.lists(component, min_size=1, max_size=4).map("/".join)
name_like = st.one_of(
    valid_names,
    st.builds(lambda n, junk: n + junk, valid_names, suffixes),
    st.text(string.ascii_lowercase + string.digits + "._-/", max_size=60),
    st.text(max_size=60),
)


@FAST
@given(name_like)
def test_name_grammar(name: str) -> None:
    try:
        assert check_name(name) == name
    except RegistryError as e:
        assert e.code is ErrorCode.NAME_INVALID
        return
    # accepted: the spec's grammar, whole (no trailing newline slips through), <= 255 bytes
    assert "\n" not in name and len(name) <= 255
    assert all(part and part[0].isalnum() and part[-1].isalnum() for part in name.split("/"))


valid_tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z", fullmatch=True)


@FAST
@given(st.one_of(valid_tags, st.builds(lambda t, j: t + j, valid_tags, suffixes), st.text()))
def test_tag_grammar(tag: str) -> None:
    try:
        assert check_tag(tag) == tag
    except RegistryError as e:
        assert e.code is ErrorCode.TAG_INVALID
        return
    assert TAG_RE.fullmatch(tag) and "\n" not in tag and len(tag) <= 128


@FAST
@given(
    st.one_of(
        st.text(max_size=80),
        st.builds(lambda n, t: f"{n}:{t}", name_like, st.text(max_size=20)),
        st.builds(lambda n, d: f"{n}@{d}", name_like, near_digests),
    )
)
def test_image_reference_grammar(reference: str) -> None:
    """``REPO[:TAG]`` and ``REPO@DIGEST`` as the import and export commands read them."""
    for parse in (parse_reference, parse_destination):
        try:
            repo, rest = parse(reference)
        except UsageError:
            continue
        check_name(repo)
        if rest is not None and "@" in reference and parse is parse_reference:
            assert str(Digest.parse(rest)) == rest
        elif rest is not None:
            check_tag(rest)


# --------------------------------------------------------------------------- manifests and indexes

descriptor = st.fixed_dictionaries(
    {},
    optional={
        "mediaType": st.one_of(st.sampled_from(MANIFEST_TYPES), st.text(max_size=20)),
        "digest": near_digests,
        "size": st.one_of(st.integers(), st.text(max_size=5), st.none(), st.floats()),
        "platform": st.dictionaries(st.sampled_from(["os", "architecture", "variant"]), st.text()),
        "annotations": st.dictionaries(st.text(max_size=10), st.text(max_size=10)),
        "artifactType": st.text(max_size=30),
        "urls": st.lists(st.text(max_size=30), max_size=2),
    },
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
manifest_doc = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": st.one_of(st.just(2), st.integers(), st.text(max_size=3)),
        "mediaType": st.one_of(st.sampled_from(MANIFEST_TYPES), st.text(max_size=20)),
        "config": st.one_of(descriptor, json_value),
        "layers": st.one_of(st.lists(descriptor, max_size=3), json_value),
        "manifests": st.one_of(st.lists(descriptor, max_size=3), json_value),
        "subject": st.one_of(descriptor, json_value),
        "annotations": st.one_of(st.dictionaries(st.text(max_size=8), st.text()), json_value),
        "artifactType": st.one_of(st.text(max_size=30), json_value),
        "fsLayers": json_value,
    },
)
content_types = st.one_of(
    st.none(), st.sampled_from([*MANIFEST_TYPES, *sorted(mt.SCHEMA1)]), st.text(max_size=40)
)


def _parse(data: bytes, content_type: str | None) -> None:
    try:
        parse_manifest(data, content_type)
    except RegistryError as e:
        assert 400 <= e.status < 500, e


@FAST
@given(manifest_doc, content_types)
def test_manifest_and_index_parser_on_documents(doc: dict[str, Any], content_type: str | None):
    _parse(json.dumps(doc).encode(), content_type)


@FAST
@given(st.one_of(st.binary(max_size=300), json_value.map(lambda v: json.dumps(v).encode())))
def test_manifest_parser_on_any_bytes(data: bytes) -> None:
    _parse(data, mt.OCI_MANIFEST)
    _parse(data, None)


# --------------------------------------------------------------------------- ranges

content_range_like = st.one_of(
    st.builds(lambda a, b: f"{a}-{b}", st.integers(0, 2**70), st.integers(0, 2**70)),
    st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(0, 99), st.integers(0, 99)),
    st.from_regex(r"(bytes[= ])?-?[0-9]{0,4}-?[0-9]{0,4}(/[0-9*]+)?\n?", fullmatch=True),
    st.text(max_size=30),
)


@FAST
@given(content_range_like)
def test_content_range_parser(value: str) -> None:
    try:
        parsed = parse_content_range(value)
    except RegistryError as e:
        assert e.code is ErrorCode.RANGE_INVALID
        return
    assert parsed is not None
    start, end = parsed
    assert 0 <= start <= end
    assert value.strip().removeprefix("bytes=") == f"{start}-{end}"


BLOB = bytes(range(256)) * 4


@pytest.fixture(scope="module")
def blob_url(registry) -> str:
    digest = str(Digest.of(BLOB))
    r = requests.post(
        f"{registry.url}/v2/fuzz/ranges/blobs/uploads/?digest={digest}", data=BLOB, timeout=30
    )
    assert r.status_code == 201, r.text
    return f"{registry.url}/v2/fuzz/ranges/blobs/{digest}"


range_like = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", st.integers(0, 1100), st.integers(0, 1100)),
    st.builds(lambda a: f"bytes={a}-", st.integers(0, 1100)),
    st.builds(lambda a: f"bytes=-{a}", st.integers(0, 1100)),
    st.from_regex(
        r"(bytes|items)?=?-?[0-9]{0,5}-?[0-9]{0,5}(,-?[0-9]{0,3}-[0-9]{0,3})?", fullmatch=True
    ),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
)


@HTTP
@given(range_like)
def test_range_requests_on_a_blob(blob_url: str, value: str) -> None:
    """Any Range header gets the whole blob, the part asked for, or 416: never an error."""
    r = requests.get(blob_url, headers={"Range": value}, timeout=30)
    assert r.status_code in (200, 206, 416), (value, r.status_code, r.text[:200])
    if r.status_code == 200:
        assert r.content == BLOB
    elif r.status_code == 206:
        unit, _, rest = r.headers["Content-Range"].partition(" ")
        span, _, total = rest.partition("/")
        first, last = (int(x) for x in span.split("-"))
        assert unit == "bytes" and total == str(len(BLOB))
        assert r.content == BLOB[first : last + 1]


# --------------------------------------------------------------------------- configuration

env_names = st.builds(
    lambda parts: "REGISTRY_" + "_".join(parts),
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "STORAGE",
                    "FILESYSTEM",
                    "ROOTDIRECTORY",
                    "HTTP",
                    "ADDR",
                    "LIMITS",
                    "LOG",
                    "LEVEL",
                    "NOTIFICATIONS",
                    "ENDPOINTS",
                    "0",
                    "1",
                    "URL",
                    "AUTH",
                    "HTPASSWD",
                    "REDIS",
                    "DELETE",
                    "ENABLED",
                    "S3",
                    "HEADERS",
                    "TRUSTEDPROXIES",
                    "FIELDS",
                ]
            ),
            st.text(string.ascii_uppercase + string.digits, min_size=0, max_size=6),
        ),
        min_size=0,
        max_size=5,
    ),
)
env_values = st.one_of(
    st.sampled_from(["true", "0", ":5000", "[a, b]", "{a: 1}", "- x", "null", "", "~", "5s"]),
    st.text(max_size=30),
)


@FAST
@given(st.dictionaries(env_names, env_values, max_size=6))
def test_env_override_parser(environ: dict[str, str]) -> None:
    raw: dict[str, Any] = {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": "/tmp/fuzz"}},
        "http": {"addr": ":5000"},
    }
    with contextlib.suppress(ConfigError):  # a value that is not YAML, as registry:2
        apply_env_overrides(raw, environ)  # warns about what cannot apply
    with contextlib.suppress(ConfigError):
        load_config(None, environ, default_root="/tmp/fuzz")


# --------------------------------------------------------------------------- htpasswd

BCRYPT = "$2y$05$" + "a" * 53
htpasswd_line = st.one_of(
    st.builds(lambda u, h: f"{u}:{h}", st.text(max_size=12), st.sampled_from([BCRYPT, "x", ""])),
    st.text(max_size=40),
    st.just("# comment"),
)


@FAST
@given(st.lists(htpasswd_line, max_size=8).map("\n".join))
def test_htpasswd_parser(text: str) -> None:
    entries = htpasswd.parse(text)
    for user, hashed in entries.items():
        assert user and ":" not in user and "\n" not in user
        assert hashed.startswith(htpasswd.BCRYPT_PREFIXES)
        assert f"{user}:{hashed}" in text
