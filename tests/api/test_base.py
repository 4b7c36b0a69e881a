"""``/v2/`` itself, unknown paths, wrong methods and repository-name validation."""

from __future__ import annotations

import pytest
import requests

from .helpers import (
    assert_error,
    assert_raw_error,
    blob_url,
    push_blob,
    push_image,
    raw_request,
    repo,
    sha256,
    tags_of,
    tree,
)

API_HEADER = "Docker-Distribution-API-Version"
DIGEST = sha256(b"x")


def test_base_endpoint(registry):
    r = requests.get(f"{registry.url}/v2/")
    assert r.status_code == 200
    assert r.headers[API_HEADER] == "registry/2.0"
    assert r.json() == {}


def test_base_endpoint_head(registry):
    r = requests.head(f"{registry.url}/v2/")
    assert r.status_code == 200
    assert r.headers[API_HEADER] == "registry/2.0"


def test_error_responses_carry_api_version_header(registry):
    r = requests.get(f"{registry.url}/v2/{repo()}/manifests/latest")
    assert_error(r, 404)
    assert r.headers[API_HEADER] == "registry/2.0"


def test_every_kind_of_response_carries_the_api_version_header(registry):
    name = repo()
    pushed = push_image(registry.url, name, "v1")
    layer = push_blob(registry.url, name, b"a layer of sorts" * 100)
    blob = blob_url(registry.url, name, layer)
    manifest = f"{registry.url}/v2/{name}/manifests/v1"
    responses = {
        "blob file": requests.get(blob),
        "blob range": requests.get(blob, headers={"Range": "bytes=0-9"}),
        "blob head": requests.head(blob),
        "blob not modified": requests.get(blob, headers={"If-None-Match": f'"{layer}"'}),
        "manifest": requests.get(manifest),
        "manifest head": requests.head(manifest),
        "manifest not modified": requests.get(
            manifest, headers={"If-None-Match": f'"{pushed.digest}"'}
        ),
        "upload started": requests.post(f"{registry.url}/v2/{name}/blobs/uploads/"),
        "tags": requests.get(f"{registry.url}/v2/{name}/tags/list"),
        "catalog": requests.get(f"{registry.url}/v2/_catalog"),
        "redirect": requests.get(f"{registry.url}/v2", allow_redirects=False),
        "unknown": requests.get(f"{registry.url}/v2/{name}/manifests/nope"),
    }
    statuses = {k: r.status_code for k, r in responses.items()}
    assert statuses == {
        "blob file": 200, "blob range": 206, "blob head": 200, "blob not modified": 304,
        "manifest": 200, "manifest head": 200, "manifest not modified": 304,
        "upload started": 202, "tags": 200, "catalog": 200, "redirect": 301, "unknown": 404,
    }  # fmt: skip
    missing = [k for k, r in responses.items() if r.headers.get(API_HEADER) != "registry/2.0"]
    assert missing == []
    assert responses["blob file"].headers["ETag"] == f'"{layer}"'


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_base_endpoint_wrong_method(registry, method):
    r = requests.request(method, f"{registry.url}/v2/")
    assert_error(r, 405, "UNSUPPORTED")


@pytest.mark.parametrize(
    "path",
    [
        "/v2/foo/bar/baz",
        "/v2/foo",
        "/v2/foo/manifests",
        "/v2/foo/blobs",
        "/v2/foo/tags",
        "/v2/foo/tags/list/extra",
        "/v3/",
        "/v2/foo/manifests/a/b/c/d/referrers",
    ],
)
def test_unknown_paths_answer_json_404(registry, path):
    r = requests.get(f"{registry.url}{path}")
    assert_error(r, 404)


@pytest.mark.parametrize(
    ("method", "suffix", "allowed"),
    [
        ("POST", "tags/list", {"GET"}),
        ("DELETE", "tags/list", {"GET"}),
        ("POST", "manifests/latest", {"GET", "HEAD", "PUT", "DELETE"}),
        ("PATCH", "manifests/latest", {"GET", "HEAD", "PUT", "DELETE"}),
        ("GET", "blobs/uploads/", {"POST"}),
        ("PUT", "blobs/uploads/", {"POST"}),
        ("POST", f"blobs/uploads/{'0' * 8}-0000-0000-0000-{'0' * 12}", None),
        ("PUT", f"blobs/{DIGEST}", {"GET", "HEAD", "DELETE"}),
        ("POST", f"blobs/{DIGEST}", {"GET", "HEAD", "DELETE"}),
        ("PATCH", f"blobs/{DIGEST}", {"GET", "HEAD", "DELETE"}),
        ("POST", f"referrers/{DIGEST}", {"GET"}),
        ("DELETE", f"referrers/{DIGEST}", {"GET"}),
    ],
)
def test_wrong_method_is_405_unsupported(registry, method, suffix, allowed):
    r = requests.request(method, f"{registry.url}/v2/{repo()}/{suffix}")
    assert_error(r, 405, "UNSUPPORTED")
    if allowed is not None:
        assert r.headers.get("Allow"), r.headers
        assert {m.strip() for m in r.headers["Allow"].split(",")} == allowed


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_catalog_wrong_method(registry, method):
    r = requests.request(method, f"{registry.url}/v2/_catalog")
    assert_error(r, 405, "UNSUPPORTED")


def test_head_error_has_no_body(registry):
    r = requests.head(f"{registry.url}/v2/{repo()}/manifests/nope")
    assert r.status_code == 404
    assert r.content == b""


# ----------------------------------------------------------------------------- names

INVALID_NAMES = [
    "UPPER/case",
    "api/Upper",
    "a//b",
    "a/",
    "-a",
    "a-",
    "a/.b",
    "a..b",
    "a___b",
    "a" * 256,
    "/".join(["abcdefghijklmnop"] * 16),  # 271 characters of valid components
]


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_repository_names(registry, name):
    for method, suffix in [
        ("GET", "tags/list"),
        ("GET", "manifests/latest"),
        ("POST", "blobs/uploads/"),
        ("HEAD", f"blobs/{DIGEST}"),
    ]:
        r = requests.request(method, f"{registry.url}/v2/{name}/{suffix}")
        if method == "HEAD":
            assert r.status_code in (400, 404), r.status_code
            continue
        assert r.status_code in (400, 404), (method, suffix, r.status_code)
        if r.status_code == 400:
            assert_error(r, 400, "NAME_INVALID")
        else:
            assert_error(r, 404)


def test_name_of_255_characters_is_valid(registry):
    name = "api/" + "n" * 251
    assert len(name) == 255
    digest = push_blob(registry.url, name, b"long name")
    assert requests.head(f"{registry.url}/v2/{name}/blobs/{digest}").status_code == 200


def test_name_of_256_characters_is_invalid(registry):
    name = "api/" + "n" * 252
    r = requests.post(f"{registry.url}/v2/{name}/blobs/uploads/")
    assert_error(r, 400, "NAME_INVALID")


def test_uppercase_name_is_name_invalid(registry):
    r = requests.post(f"{registry.url}/v2/Api/Repo/blobs/uploads/")
    assert_error(r, 400, "NAME_INVALID")


def test_nested_names_work(registry):
    name = f"{repo()}/b/c/d"
    m = push_image(registry.url, name, "v1")
    assert tags_of(registry.url, name) == ["v1"]
    r = requests.get(f"{registry.url}/v2/{name}/manifests/v1", headers={"Accept": m.media_type})
    assert r.status_code == 200
    assert r.content == m.data


def test_names_with_separators_work(registry):
    name = f"{repo()}/a.b_c__d-e--f"
    push_image(registry.url, name, "t")
    assert tags_of(registry.url, name) == ["t"]


TRAVERSALS = [
    ("POST", "/v2/../../etc/blobs/uploads/"),
    ("POST", "/v2/%2e%2e/%2e%2e/etc/blobs/uploads/"),
    ("POST", "/v2/%2E%2E/x/blobs/uploads/"),
    ("POST", "/v2/a%2f..%2f..%2f..%2fx/blobs/uploads/"),
    ("POST", "/v2/a/%2e%2e/%2e%2e/%2e%2e/%2e%2e/x/blobs/uploads/"),
    ("POST", "/v2//abs/blobs/uploads/"),
    ("POST", "/v2/%2fabs/blobs/uploads/"),
    ("POST", "/v2/a/./b/blobs/uploads/"),
    ("POST", "/v2/a%00b/blobs/uploads/"),
    ("GET", "/v2/../../../../../../etc/passwd"),
    ("GET", "/v2/%2e%2e/%2e%2e/%2e%2e/etc/tags/list"),
    ("PUT", "/v2/%2e%2e/%2e%2e/x/manifests/latest"),
    ("PUT", "/v2/a/manifests/..%2f..%2f..%2fx"),
    ("PUT", "/v2/a/manifests/%2e%2e"),
    ("GET", "/v2/a/blobs/sha256:..%2f..%2f..%2fdata"),
    ("PATCH", "/v2/a/blobs/uploads/..%2f..%2f..%2fetc"),
    ("PUT", "/v2/a/blobs/uploads/%2e%2e?digest=" + DIGEST),
    ("DELETE", "/v2/a/blobs/uploads/%2e%2e"),
    ("GET", "/v2/a/referrers/sha256:..%2f..%2f"),
]


def test_traversal_attempts_are_rejected_and_write_nothing_outside_root(make_registry):
    reg = make_registry()
    workdir = reg.root.parent
    outside_before = tree(workdir) - {p for p in tree(workdir) if p.startswith("storage")}
    for method, path in TRAVERSALS:
        r = raw_request(reg.host, method, path, body=b"{}" if method in ("PUT", "PATCH") else None)
        assert_raw_error(r, (400, 404))
        assert r.status != 500
    after = tree(workdir)
    outside_after = {p for p in after if not p.startswith("storage")}
    assert outside_after == outside_before
    inside = {p for p in after if p.startswith("storage/")}
    # nothing but the empty layout skeleton may have appeared under the root
    assert all(p.startswith("storage/docker") for p in inside), inside
    assert not any(p.endswith(("/data", "/link", "/startedat")) for p in inside), inside
    assert not (workdir.parent / "etc").exists()
    assert not (workdir / "etc").exists()
    assert not (workdir / "x").exists()


@pytest.mark.parametrize(
    "suffix", ["tags/list", "manifests", "manifests/latest", "blobs", "blobs/uploads", "referrers"]
)
def test_names_containing_endpoint_words(registry, suffix):
    """Routing must take the longest name: ``a/manifests/manifests/t`` is repo ``a/manifests``."""
    name = f"{repo()}/{suffix}"
    digest = push_blob(registry.url, name, b"routing " + suffix.encode())
    assert requests.get(f"{registry.url}/v2/{name}/blobs/{digest}").status_code == 200
    m = push_image(registry.url, name, "t")
    r = requests.get(f"{registry.url}/v2/{name}/manifests/t", headers={"Accept": m.media_type})
    assert r.status_code == 200
    assert r.content == m.data
    assert tags_of(registry.url, name) == ["t"]
    r = requests.get(f"{registry.url}/v2/{name}/referrers/{m.digest}")
    assert r.status_code == 200
    assert r.json()["manifests"] == []
    assert requests.delete(f"{registry.url}/v2/{name}/manifests/t").status_code == 202
    assert tags_of(registry.url, name) == []
