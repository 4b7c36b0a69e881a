"""Spec details (issue 17): references that are neither tag nor digest, and pushes by a
``sha512:`` digest with OCI 1.1's ``?tag=`` parameters. Compared with the reference registry
where it defines the behaviour."""

from __future__ import annotations

import pytest
import requests

from .helpers import (
    OCI_MANIFEST,
    assert_error,
    get_manifest,
    image_manifest,
    put_manifest,
    repo,
    sha512,
    tags_of,
)

INVALID = ".INVALID_MANIFEST_NAME"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_reference_neither_tag_nor_digest_is_manifest_unknown(
    registry, reference_registry, method: str
) -> None:
    name = repo()
    for server in (registry, reference_registry):
        image = image_manifest(server.url, name)
        assert put_manifest(server.url, name, "t", image.data).status_code == 201
        r = get_manifest(server.url, name, INVALID, method=method)
        assert r.status_code == 404, (server.name, method, r.status_code, r.text)
    # registry:2's router answers a plain "404 page not found"; cargohold the spec's body
    assert_error(get_manifest(registry.url, name, INVALID), 404, "MANIFEST_UNKNOWN")


def test_a_put_with_it_stays_tag_invalid(registry) -> None:
    name = repo()
    image = image_manifest(registry.url, name)
    r = put_manifest(registry.url, name, INVALID, image.data)
    assert_error(r, 400, "TAG_INVALID")


def _push_by_sha512(registry, name: str, tags: str) -> tuple[requests.Response, bytes, str]:
    """An image manifest pushed by its sha512 digest with ``?tags``."""
    image = image_manifest(registry.url, name)
    digest = sha512(image.data)
    r = requests.put(
        f"{registry.url}/v2/{name}/manifests/{digest}?{tags}",
        data=image.data,
        headers={"Content-Type": OCI_MANIFEST},
        timeout=30,
    )
    return r, image.data, digest


def test_a_push_by_sha512_with_tags_is_served_by_those_tags(registry) -> None:
    name = repo()
    r, data, digest = _push_by_sha512(registry, name, "tag=one&tag=two")
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["OCI-Tag"] == "one, two"
    for reference in ("one", "two", digest):
        for method in ("GET", "HEAD"):
            got = get_manifest(registry.url, name, reference, method=method)
            assert got.status_code == 200, (reference, method, got.text)
            assert got.headers["Docker-Content-Digest"] == digest
            if method == "GET":
                assert got.content == data
    assert tags_of(registry.url, name) == ["one", "two"]


def test_a_bad_tag_parameter_refuses_the_whole_push(registry) -> None:
    name = repo()
    r, _data, digest = _push_by_sha512(registry, name, "tag=good&tag=-bad")
    assert_error(r, 400, "TAG_INVALID")
    assert get_manifest(registry.url, name, digest).status_code == 404
    assert get_manifest(registry.url, name, "good").status_code == 404
