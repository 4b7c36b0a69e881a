"""Blob reads, ranges, repository isolation, cross-repository mounts and deletes."""

from __future__ import annotations

import json

import pytest
import requests

from .helpers import (
    absolute,
    assert_error,
    blob_url,
    fetch_blob,
    push_blob,
    push_image,
    rand_bytes,
    repo,
    sha256,
    start_upload,
    with_query,
)


@pytest.fixture
def blob(registry):
    name = repo()
    data = rand_bytes(1000, seed=7) + rand_bytes(24)
    return name, data, push_blob(registry.url, name, data)


def test_head_blob(registry, blob):
    name, data, digest = blob
    r = requests.head(blob_url(registry.url, name, digest))
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Accept-Ranges"] == "bytes"
    assert r.content == b""


def test_get_blob(registry, blob):
    name, data, digest = blob
    r = fetch_blob(registry.url, name, digest)
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize(("start", "end"), [(0, 0), (0, 9), (10, 19), (500, 1023), (1023, 1023)])
def test_range_request(registry, blob, start, end):
    name, data, digest = blob
    r = requests.get(
        blob_url(registry.url, name, digest), headers={"Range": f"bytes={start}-{end}"}
    )
    assert r.status_code == 206
    assert r.content == data[start : end + 1]
    assert r.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    assert r.headers["Content-Length"] == str(end - start + 1)


def test_open_ended_range(registry, blob):
    name, data, digest = blob
    r = requests.get(blob_url(registry.url, name, digest), headers={"Range": "bytes=1000-"})
    assert r.status_code == 206
    assert r.content == data[1000:]
    assert r.headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"


def test_suffix_range(registry, blob):
    name, data, digest = blob
    r = requests.get(blob_url(registry.url, name, digest), headers={"Range": "bytes=-24"})
    assert r.status_code == 206
    assert r.content == data[-24:]


@pytest.mark.parametrize("value", ["items=0-1", "bytes=0-1,3-4"], ids=["unit", "multi"])
def test_range_the_server_must_ignore_or_serve(registry, blob, value):
    name, data, digest = blob
    r = requests.get(blob_url(registry.url, name, digest), headers={"Range": value})
    assert r.status_code in (200, 206), r.status_code
    if r.status_code == 200:
        assert r.content == data


def test_unsatisfiable_range(registry, blob):
    name, data, digest = blob
    r = requests.get(
        blob_url(registry.url, name, digest), headers={"Range": f"bytes={len(data) + 5}-"}
    )
    assert r.status_code == 416
    assert r.headers.get("Content-Range") == f"bytes */{len(data)}"


def test_head_and_get_agree_on_etag(registry, blob):
    name, _data, digest = blob
    head = requests.head(blob_url(registry.url, name, digest))
    get = fetch_blob(registry.url, name, digest)
    assert head.headers.get("ETag") == get.headers.get("ETag") == f'"{digest}"'


def test_blob_if_none_match_with_advertised_etag(registry, blob):
    name, _data, digest = blob
    etag = fetch_blob(registry.url, name, digest).headers["ETag"]
    r = requests.get(blob_url(registry.url, name, digest), headers={"If-None-Match": etag})
    assert r.status_code == 304
    assert r.content == b""


CONDITIONALS = {
    "if-match-digest": (lambda d: {"If-Match": f'"{d}"'}, 200),
    "if-match-any": (lambda d: {"If-Match": "*"}, 200),
    "if-modified-since-later": (
        lambda d: {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"},
        200,
    ),
    "if-unmodified-since-earlier": (
        lambda d: {"If-Unmodified-Since": "Thu, 01 Jan 1981 00:00:00 GMT"},
        200,
    ),
}


@pytest.mark.parametrize("case", sorted(CONDITIONALS))
def test_blob_conditionals_as_registry2(registry, reference_registry, case):
    """Against the digest ETag, never the file's times (registry:2 serves blobs with no
    modification time); they were aiohttp's mtime-based ones: 412 for If-Match with the
    digest, 304 for a later If-Modified-Since."""
    make, status = CONDITIONALS[case]
    for server in (registry, reference_registry):
        name = repo()
        data = rand_bytes(5000, seed=31)
        digest = push_blob(server.url, name, data)
        r = requests.get(blob_url(server.url, name, digest), headers=make(digest), timeout=30)
        assert (server.name, r.status_code) == (server.name, status)
        assert r.content == data


def test_blob_if_match_another_etag_fails(registry, blob):
    """412 (registry:2 also answers 412, with a Content-Length and no body)."""
    name, _data, digest = blob
    for tag in ('"sha256:other"', f'W/"{digest}"'):  # If-Match compares strongly
        r = requests.get(blob_url(registry.url, name, digest), headers={"If-Match": tag})
        assert r.status_code == 412 and r.content == b""


def test_unknown_blob(registry):
    name = repo()
    push_blob(registry.url, name, b"something so that the repository exists")
    digest = sha256(b"never pushed")
    assert_error(fetch_blob(registry.url, name, digest), 404, "BLOB_UNKNOWN")
    h = requests.head(blob_url(registry.url, name, digest))
    assert h.status_code == 404
    assert h.content == b""


def test_blob_in_unknown_repository(registry):
    r = fetch_blob(registry.url, repo(), sha256(b"x"))
    assert_error(r, 404, "BLOB_UNKNOWN")


@pytest.mark.parametrize(
    "digest",
    ["sha256:xyz", "md5:" + "0" * 32, "sha256:" + "AB" * 32, "sha256:" + "0" * 63, "latest"],
)
def test_malformed_digest_on_blob_read(registry, digest):
    r = fetch_blob(registry.url, repo(), digest)
    assert_error(r, 400, "DIGEST_INVALID")
    h = requests.head(blob_url(registry.url, repo(), digest))
    assert h.status_code == 400


def test_repository_isolation(registry, blob):
    """A blob pushed to A is not readable through B, however well B guesses the digest."""
    _name, _data, digest = blob
    other = repo()
    push_blob(registry.url, other, b"B has something else")
    assert_error(fetch_blob(registry.url, other, digest), 404, "BLOB_UNKNOWN")
    assert requests.head(blob_url(registry.url, other, digest)).status_code == 404
    r = requests.get(blob_url(registry.url, other, digest), headers={"Range": "bytes=0-3"})
    assert_error(r, 404, "BLOB_UNKNOWN")


def test_manifest_cannot_reference_another_repositorys_blob(registry, blob):
    _name, data, digest = blob
    other = repo()
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest,
            "size": len(data),
        },
        "layers": [],
    }
    r = requests.put(
        f"{registry.url}/v2/{other}/manifests/latest",
        data=json.dumps(doc),
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


def test_cross_repository_mount(registry, blob):
    source, data, digest = blob
    target = repo()
    r = requests.post(f"{registry.url}/v2/{target}/blobs/uploads/?mount={digest}&from={source}")
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert absolute(registry.url, r.headers["Location"]) == blob_url(registry.url, target, digest)
    got = fetch_blob(registry.url, target, digest)
    assert got.status_code == 200
    assert got.content == data


def test_mount_of_unknown_blob_falls_back_to_upload(registry, blob):
    source, _data, _digest = blob
    target = repo()
    unknown = sha256(b"nobody pushed this")
    r = requests.post(f"{registry.url}/v2/{target}/blobs/uploads/?mount={unknown}&from={source}")
    assert r.status_code == 202, r.text
    url = absolute(registry.url, r.headers["Location"])
    assert r.headers["Docker-Upload-UUID"]
    # the session is a real upload session
    st = requests.get(url)
    assert st.status_code == 204
    data = b"nobody pushed this"
    assert requests.put(with_query(url, f"digest={unknown}"), data=data).status_code == 201
    assert fetch_blob(registry.url, target, unknown).content == data


def test_mount_from_repository_lacking_the_blob(registry, blob):
    _source, _data, digest = blob
    lacking = repo()
    push_blob(registry.url, lacking, b"lacking has another blob")
    target = repo()
    r = requests.post(f"{registry.url}/v2/{target}/blobs/uploads/?mount={digest}&from={lacking}")
    assert r.status_code == 202, r.text
    assert requests.get(absolute(registry.url, r.headers["Location"])).status_code == 204
    assert fetch_blob(registry.url, target, digest).status_code == 404


def test_mount_from_unknown_or_invalid_repository(registry, blob):
    _source, _data, digest = blob
    for source in (repo(), "Invalid/Name", "..%2f..", "a//b"):
        target = repo()
        r = requests.post(f"{registry.url}/v2/{target}/blobs/uploads/?mount={digest}&from={source}")
        assert r.status_code == 202, (source, r.status_code, r.text)
        assert fetch_blob(registry.url, target, digest).status_code == 404


def test_mount_with_malformed_digest_falls_back_or_rejects(registry, blob):
    source, _data, _digest = blob
    target = repo()
    r = requests.post(f"{registry.url}/v2/{target}/blobs/uploads/?mount=sha256:zz&from={source}")
    assert r.status_code in (202, 400), r.text
    if r.status_code == 400:
        assert_error(r, 400, "DIGEST_INVALID")


def test_mount_from_the_same_repository(registry, blob):
    name, _data, digest = blob
    r = requests.post(f"{registry.url}/v2/{name}/blobs/uploads/?mount={digest}&from={name}")
    assert r.status_code in (201, 202)
    assert r.headers["Location"]
    if r.status_code == 201:
        assert r.headers["Docker-Content-Digest"] == digest


def test_mount_without_from(registry, blob):
    _source, _data, digest = blob
    target = repo()
    r = requests.post(f"{registry.url}/v2/{target}/blobs/uploads/?mount={digest}")
    assert r.status_code == 202
    assert fetch_blob(registry.url, target, digest).status_code == 404


def test_delete_blob(registry, blob):
    name, _data, digest = blob
    r = requests.delete(blob_url(registry.url, name, digest))
    assert r.status_code == 202
    assert_error(fetch_blob(registry.url, name, digest), 404, "BLOB_UNKNOWN")
    assert requests.head(blob_url(registry.url, name, digest)).status_code == 404
    assert_error(requests.delete(blob_url(registry.url, name, digest)), 404, "BLOB_UNKNOWN")


def test_delete_blob_only_affects_that_repository(registry, blob):
    source, data, digest = blob
    target = repo()
    r = requests.post(f"{registry.url}/v2/{target}/blobs/uploads/?mount={digest}&from={source}")
    assert r.status_code == 201
    assert requests.delete(blob_url(registry.url, target, digest)).status_code == 202
    assert fetch_blob(registry.url, target, digest).status_code == 404
    assert fetch_blob(registry.url, source, digest).content == data


def test_delete_unknown_blob(registry):
    name = repo()
    push_blob(registry.url, name, b"exists")
    assert_error(
        requests.delete(blob_url(registry.url, name, sha256(b"absent"))), 404, "BLOB_UNKNOWN"
    )


def test_delete_blob_malformed_digest(registry):
    assert_error(
        requests.delete(blob_url(registry.url, repo(), "sha256:xyz")), 400, "DIGEST_INVALID"
    )


def test_deletes_disabled(make_registry):
    reg = make_registry(config={"storage": {"delete": {"enabled": False}}})
    name = repo()
    digest = push_blob(reg.url, name, b"keep me")
    m = push_image(reg.url, name, "v1")
    assert_error(requests.delete(blob_url(reg.url, name, digest)), 405, "UNSUPPORTED")
    assert_error(requests.delete(f"{reg.url}/v2/{name}/manifests/{m.digest}"), 405, "UNSUPPORTED")
    assert_error(requests.delete(f"{reg.url}/v2/{name}/manifests/v1"), 405, "UNSUPPORTED")
    assert fetch_blob(reg.url, name, digest).content == b"keep me"
    # cancelling an upload is not a delete of content: still allowed
    url = start_upload(reg.url, name)
    assert requests.delete(url).status_code == 204
    r = requests.get(f"{reg.url}/v2/{name}/manifests/v1", headers={"Accept": m.media_type})
    assert r.status_code == 200
    assert r.content == m.data


def test_read_only_mode(make_registry):
    writable = make_registry()
    name = repo()
    digest = push_blob(writable.url, name, b"frozen")
    m = push_image(writable.url, name, "v1")
    reg = make_registry(
        config={"storage": {"maintenance": {"readonly": {"enabled": True}}}}, root=writable.root
    )
    assert fetch_blob(reg.url, name, digest).content == b"frozen"
    r = requests.get(f"{reg.url}/v2/{name}/manifests/v1", headers={"Accept": m.media_type})
    assert r.content == m.data
    assert_error(requests.post(f"{reg.url}/v2/{name}/blobs/uploads/"), 405, "UNSUPPORTED")
    r = requests.post(f"{reg.url}/v2/{name}/blobs/uploads/?digest={sha256(b'x')}", data=b"x")
    assert_error(r, 405, "UNSUPPORTED")
    r = requests.put(
        f"{reg.url}/v2/{name}/manifests/v2", data=m.data, headers={"Content-Type": m.media_type}
    )
    assert_error(r, 405, "UNSUPPORTED")
    assert_error(requests.delete(blob_url(reg.url, name, digest)), 405, "UNSUPPORTED")
    assert_error(requests.delete(f"{reg.url}/v2/{name}/manifests/v1"), 405, "UNSUPPORTED")
    assert requests.get(f"{reg.url}/v2/{name}/tags/list").json()["tags"] == ["v1"]
