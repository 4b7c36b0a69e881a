"""``tags/list`` and ``_catalog``: sorting, ``n``/``last`` pagination with ``Link``, errors."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from .helpers import (
    absolute,
    assert_error,
    image_manifest,
    push_blob,
    push_image,
    put_manifest,
    repo,
    start_upload,
)

LINK_RE = re.compile(r'^<([^>]+)>;\s*rel="next"$')
TAGS = ["v1.0", "latest", "A", "1", "_under", "v1.10", "v1.2", "Z-last", "a", "b.c", "0-x"]


def _next(r: requests.Response) -> str | None:
    link = r.headers.get("Link")
    if link is None:
        return None
    m = LINK_RE.match(link.strip())
    assert m, link
    return m.group(1)


@pytest.fixture(scope="module")
def tagged(registry):
    name = repo("tags")
    m = image_manifest(registry.url, name)
    for tag in TAGS:
        assert put_manifest(registry.url, name, tag, m.data, m.media_type).status_code == 201
    return name


def test_tags_sorted_lexically(registry, tagged):
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"name": tagged, "tags": sorted(TAGS)}
    assert "Link" not in r.headers


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10])
def test_tags_pagination_follows_link(registry, tagged, n):
    url = f"{registry.url}/v2/{tagged}/tags/list?n={n}"
    pages = []
    while url is not None:
        r = requests.get(url)
        assert r.status_code == 200
        tags = r.json()["tags"]
        assert len(tags) <= n
        pages.append(tags)
        nxt = _next(r)
        if nxt is not None:
            assert len(tags) == n
            q = parse_qs(urlsplit(nxt).query)
            assert q["n"] == [str(n)]
            assert q["last"] == [tags[-1]]
            assert urlsplit(nxt).path == f"/v2/{tagged}/tags/list"
            url = absolute(registry.url, nxt)
        else:
            url = None
        assert len(pages) <= len(TAGS) + 1
    flat = [t for p in pages for t in p]
    assert flat == sorted(TAGS)
    assert len(pages) == -(-len(TAGS) // n)


def test_tags_n_larger_than_count(registry, tagged):
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list?n=1000")
    assert r.json()["tags"] == sorted(TAGS)
    assert "Link" not in r.headers


def test_tags_exactly_n(registry, tagged):
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list?n={len(TAGS)}")
    assert r.json()["tags"] == sorted(TAGS)
    assert "Link" not in r.headers


def test_tags_last_without_n(registry, tagged):
    last = sorted(TAGS)[3]
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list", params={"last": last})
    assert r.status_code == 200
    assert r.json()["tags"] == sorted(TAGS)[4:]


def test_tags_last_that_is_not_a_tag(registry, tagged):
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list", params={"last": "m", "n": 2})
    expected = [t for t in sorted(TAGS) if t > "m"][:2]
    assert r.json()["tags"] == expected


def test_tags_last_after_everything(registry, tagged):
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list", params={"last": "zzz", "n": 5})
    assert r.status_code == 200
    assert r.json()["tags"] == []
    assert "Link" not in r.headers


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", "0x10", " "])
def test_tags_invalid_n(registry, tagged, n):
    r = requests.get(f"{registry.url}/v2/{tagged}/tags/list", params={"n": n})
    assert_error(r, 400, "PAGINATION_NUMBER_INVALID")


def test_tags_unknown_repository(registry):
    assert_error(requests.get(f"{registry.url}/v2/{repo()}/tags/list"), 404, "NAME_UNKNOWN")
    r = requests.get(f"{registry.url}/v2/{repo()}/tags/list?n=3")
    assert_error(r, 404, "NAME_UNKNOWN")


def test_tags_after_untagging(registry):
    name = repo()
    m = push_image(registry.url, name, "one")
    assert put_manifest(registry.url, name, "two", m.data, m.media_type).status_code == 201
    assert requests.delete(f"{registry.url}/v2/{name}/manifests/one").status_code == 202
    r = requests.get(f"{registry.url}/v2/{name}/tags/list")
    assert r.json() == {"name": name, "tags": ["two"]}


# ----------------------------------------------------------------------------- catalog


def _catalog_all(reg, n: int) -> list[str]:
    url: str | None = f"{reg.url}/v2/_catalog?n={n}"
    out: list[str] = []
    pages = 0
    while url is not None:
        r = requests.get(url)
        assert r.status_code == 200, r.text
        page = r.json()["repositories"]
        assert len(page) <= n
        out += page
        nxt = _next(r)
        if nxt is not None:
            assert urlsplit(nxt).path == "/v2/_catalog"
            assert parse_qs(urlsplit(nxt).query)["last"] == [page[-1]]
        url = absolute(reg.url, nxt) if nxt else None
        pages += 1
        assert pages < 100
    return out


def test_catalog(make_registry):
    reg = make_registry()
    assert requests.get(f"{reg.url}/v2/_catalog").json() == {"repositories": []}
    names = ["zeta", "alpha", "beta/one", "beta/two", "beta/two/three", "gamma-x", "delta.y"]
    for name in names:
        push_image(reg.url, name, "t")
    # repositories with only blobs or uploads have no manifests: registry:2 does not list them
    push_blob(reg.url, "blobsonly", b"just a blob")
    start_upload(reg.url, "uploadonly")
    r = requests.get(f"{reg.url}/v2/_catalog")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"repositories": sorted(names)}
    assert "Link" not in r.headers
    for n in (1, 2, 3, 7, 50):
        assert _catalog_all(reg, n) == sorted(names)
    r = requests.get(f"{reg.url}/v2/_catalog", params={"n": 2})
    assert r.json()["repositories"] == sorted(names)[:2]
    assert _next(r) is not None
    r = requests.get(f"{reg.url}/v2/_catalog", params={"n": 2, "last": "beta/two"})
    assert r.json()["repositories"] == ["beta/two/three", "delta.y"]


def test_catalog_pagination_is_consistent_for_separator_names(make_registry):
    """However names with ``-``, ``.`` and ``/`` are ordered, paging must not skip or repeat."""
    reg = make_registry()
    names = ["a", "a-c", "a.b", "a/b", "a/b/c", "a_b", "ab", "a0", "a/a-b", "a/a/b"]
    for name in names:
        push_image(reg.url, name, "t")
    full = requests.get(f"{reg.url}/v2/_catalog").json()["repositories"]
    assert sorted(full) == sorted(names)
    assert len(full) == len(set(full))
    for n in (1, 2, 3, 4):
        assert _catalog_all(reg, n) == full


@pytest.mark.parametrize("n", ["-1", "abc"])
def test_catalog_invalid_n(registry, n):
    r = requests.get(f"{registry.url}/v2/_catalog", params={"n": n})
    assert_error(r, 400, "PAGINATION_NUMBER_INVALID")


def test_catalog_of_shared_registry_includes_new_repository(registry):
    name = repo("catalog")
    push_image(registry.url, name, "t")
    assert name in _catalog_all(registry, 1000)
