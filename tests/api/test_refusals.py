"""Every refusal is the spec's error (issue 17, point 9): what aiohttp's parser rejects, chunk
ranges that are malformed or disagree with their body, and manifests of no known type."""

from __future__ import annotations

import json

import pytest
import requests

from .helpers import (
    absolute,
    assert_error,
    fetch_blob,
    image_manifest,
    jbytes,
    rand_bytes,
    repo,
    sha256,
    start_upload,
    with_query,
)
from .rawhttp import connect, exchange, read_response


def _json_error(resp) -> str:
    assert resp.headers["content-type"].startswith("application/json"), resp
    errors = resp.json()["errors"]
    assert errors and errors[0]["code"]
    return str(errors[0]["code"])


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v2/ HTTP/1.1\r\nHost: h\r\nX-Bad: a\x01b\r\n\r\n",  # a control character
        b"GET /v2/ HTTP/1.1\r\nHost: h\r\nN\xc3\xa4me: x\r\n\r\n",  # a non-ASCII field name
        b"GET /v2/ HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n",  # a space in a field name
        b"GET /v2/a/blobs/sha256:" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",  # huge
        b"GET /v2/ HTTP/1.1\r\nHost: h\r\nContent-Length: -5\r\n\r\n",
        b"GET /v2/ HTTP/9.9.9\r\nHost: h\r\n\r\n",
    ],
    ids=[
        "control-char",
        "non-ascii-name",
        "space-in-name",
        "oversized-digest",
        "negative-length",
        "bad-version",
    ],
)
def test_what_the_http_parser_refuses_gets_the_json_error(registry, request_bytes: bytes) -> None:
    resp = exchange(registry.port, request_bytes)
    assert 400 <= resp.status < 500, resp
    _json_error(resp)


def test_a_content_length_shorter_than_the_body(registry) -> None:
    """The bytes past the declared length are read as another request, which is refused with
    the JSON error; the declared five bytes are all that can ever be stored."""
    data = b"0123456789"
    name = repo()
    digest = sha256(data[:5])
    with connect(registry.port) as sock:
        sock.sendall(
            f"POST /v2/{name}/blobs/uploads/?digest={digest} HTTP/1.1\r\n"
            f"Host: h\r\nContent-Length: 5\r\n\r\n".encode()
            + data
        )
        statuses = []
        while True:  # until the server closes: aiohttp may drop the first request with it
            try:
                resp = read_response(sock)
            except AssertionError:
                break
            statuses.append(resp.status)
            if resp.status >= 400:
                _json_error(resp)
                break
    assert statuses and statuses[-1] == 400 and set(statuses[:-1]) <= {201}, statuses
    stored = requests.get(f"{registry.url}/v2/{name}/blobs/{digest}", timeout=30)
    assert stored.status_code in (200, 404)
    if stored.status_code == 200:
        assert stored.content == data[:5]


def test_a_malformed_content_range_on_a_patch_is_refused(registry) -> None:
    url = start_upload(registry.url, repo())
    for value in ("bytes=0-9", "0-9/10", "bytes 0-9/10", "-9", "9-0", "0-"):
        r = requests.patch(url, data=b"0123456789", headers={"Content-Range": value}, timeout=30)
        assert_error(r, 416, "RANGE_INVALID")
    status = requests.get(url, timeout=30)
    assert status.headers["Range"] == "0-0"  # nothing was appended


def test_a_final_put_whose_content_range_disagrees_with_its_body_is_refused(registry) -> None:
    name = repo()
    data = rand_bytes(1000)
    digest = sha256(data)
    url = start_upload(registry.url, name)
    r = requests.patch(url, data=data[:600], headers={"Content-Range": "0-599"}, timeout=30)
    assert r.status_code == 202
    url = absolute(registry.url, r.headers["Location"])
    final = with_query(url, f"digest={digest}")
    for bad in ("600-899", "600-1099", "600-999"):  # short, long, and with no body at all
        body = data[600:] if bad != "600-999" else b""
        r = requests.put(final, data=body, headers={"Content-Range": bad}, timeout=30)
        assert_error(r, 416, "RANGE_INVALID")
        assert requests.head(f"{registry.url}/v2/{name}/blobs/{digest}").status_code == 404

    def chunked():
        yield data[600:800]
        yield data[800:]

    r = requests.put(final, data=chunked(), headers={"Content-Range": "600-899"}, timeout=30)
    assert r.status_code in (400, 416), r.text  # a chunked body longer than its range
    assert requests.head(f"{registry.url}/v2/{name}/blobs/{digest}").status_code == 404
    status = requests.get(url, timeout=30)
    assert status.headers["Range"] == "0-599"  # the upload is as it was: it can still finish
    r = requests.put(final, data=data[600:], headers={"Content-Range": "600-999"}, timeout=30)
    assert r.status_code == 201, r.text
    assert fetch_blob(registry.url, name, digest).content == data


@pytest.mark.parametrize("content_type", ["application/octet-stream", "text/plain", None])
def test_a_manifest_of_no_known_type_is_manifest_invalid(registry, content_type) -> None:
    name = repo()
    image = image_manifest(registry.url, name)
    doc = json.loads(image.data)
    del doc["mediaType"]
    headers = {"Content-Type": content_type} if content_type else {}
    r = requests.put(
        f"{registry.url}/v2/{name}/manifests/t", data=jbytes(doc), headers=headers, timeout=30
    )
    assert_error(r, 400, "MANIFEST_INVALID")


def test_an_encoded_slash_in_a_name_is_name_invalid_never_a_nested_repository(registry) -> None:
    parent = repo()
    image = image_manifest(registry.url, f"{parent}/child")
    r = requests.put(
        f"{registry.url}/v2/{parent}/child/manifests/t",
        data=image.data,
        headers={"Content-Type": image.media_type},
        timeout=30,
    )
    assert r.status_code == 201
    for method, path in [
        ("GET", f"{parent}%2Fchild/tags/list"),
        ("GET", f"{parent}%2fchild/manifests/t"),
        ("HEAD", f"{parent}%2Fchild/manifests/t"),
        ("PUT", f"{parent}%2Fchild/manifests/u"),
        ("POST", f"{parent}%2Fchild/blobs/uploads/"),
        ("GET", f"{parent}%2Fchild/blobs/{sha256(b'x')}"),
    ]:
        resp = exchange(
            registry.port,
            f"{method} /v2/{path} HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n".encode(),
        )
        assert resp.status == 400, (method, path, resp)
        if method != "HEAD":
            assert resp.code == "NAME_INVALID", (method, path, resp)
    # the query string may carry one: a mount names its source repository there
    r = requests.post(
        f"{registry.url}/v2/{repo()}/blobs/uploads/?mount={sha256(b'x')}&from={parent}%2Fchild",
        timeout=30,
    )
    assert r.status_code == 202, r.text


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("PUT", "{name}/manifests/a/b", 400, "TAG_INVALID"),
        ("DELETE", "{name}/manifests/sha256:ab/cd", 400, "DIGEST_INVALID"),
        ("GET", "{name}/manifests/a/b", 404, "MANIFEST_UNKNOWN"),
        ("GET", "{name}/manifests/", 404, "MANIFEST_UNKNOWN"),
        ("PUT", "{name}/manifests/", 400, "TAG_INVALID"),
        ("GET", "{name}/blobs/sha256:zz/extra", 400, "DIGEST_INVALID"),
        ("GET", "{name}/blobs/", 400, "DIGEST_INVALID"),
        ("GET", "{name}/blobs/sha256:zz", 400, "DIGEST_INVALID"),
        ("GET", "{name}/referrers/not-a-digest", 400, "DIGEST_INVALID"),
        ("GET", "{name}/referrers/a/b", 400, "DIGEST_INVALID"),
        ("PATCH", "{name}/blobs/uploads/a/b", 404, "BLOB_UPLOAD_UNKNOWN"),
        ("GET", "UPPER/Case/tags/list", 400, "NAME_INVALID"),
        ("GET", "a//b/manifests/t", 400, "NAME_INVALID"),
        ("GET", "-a/blobs/sha256:zz/x", 400, "NAME_INVALID"),
        ("GET", "no/such/endpoint", 404, "NAME_UNKNOWN"),
    ],
)
def test_a_malformed_path_names_what_is_wrong(registry, method, path, status, code) -> None:
    url = f"{registry.url}/v2/{path.format(name=repo())}"
    r = requests.request(method, url, data=b"" if method in ("PUT", "PATCH") else None, timeout=30)
    assert_error(r, status, code)
