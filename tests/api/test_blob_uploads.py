"""Blob uploads: monolithic, POST+PUT, streamed PATCH, chunked PATCH, status, cancel, errors."""

from __future__ import annotations

import gzip
import hashlib
import socket
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from .helpers import (
    absolute,
    assert_error,
    blob_url,
    fetch_blob,
    rand_bytes,
    repo,
    sha256,
    sha512,
    start_upload,
    with_query,
)

UUID_RE = r"^[0-9a-f-]{36}$"


def _status(url: str) -> requests.Response:
    return requests.get(url)


def test_post_returns_202_with_session_headers(registry):
    name = repo()
    r = requests.post(f"{registry.url}/v2/{name}/blobs/uploads/")
    assert r.status_code == 202
    loc = r.headers["Location"]
    upload_id = r.headers["Docker-Upload-UUID"]
    assert upload_id
    assert f"/v2/{name}/blobs/uploads/" in loc
    assert upload_id in loc
    assert r.headers["Range"] == "0-0"
    assert r.headers["Content-Length"] == "0"


def test_post_without_trailing_slash(registry):
    r = requests.post(f"{registry.url}/v2/{repo()}/blobs/uploads")
    assert r.status_code == 202
    assert r.headers["Location"]


def test_monolithic_post_with_digest(registry):
    name = repo()
    data = rand_bytes(3000)
    digest = sha256(data)
    r = requests.post(
        f"{registry.url}/v2/{name}/blobs/uploads/?digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert absolute(registry.url, r.headers["Location"]) == blob_url(registry.url, name, digest)
    got = fetch_blob(registry.url, name, digest)
    assert got.status_code == 200
    assert got.content == data


def test_monolithic_post_with_wrong_digest(registry):
    name = repo()
    data = rand_bytes(100)
    wrong = sha256(b"something else")
    r = requests.post(f"{registry.url}/v2/{name}/blobs/uploads/?digest={wrong}", data=data)
    assert_error(r, 400, "DIGEST_INVALID")
    assert fetch_blob(registry.url, name, wrong).status_code == 404
    assert fetch_blob(registry.url, name, sha256(data)).status_code == 404


def test_post_then_put_with_body(registry):
    """containerd: POST, then a single PUT carrying the whole blob."""
    name = repo()
    data = rand_bytes(10_000)
    digest = sha256(data)
    url = start_upload(registry.url, name)
    r = requests.put(with_query(url, f"digest={digest}"), data=data)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert absolute(registry.url, r.headers["Location"]) == blob_url(registry.url, name, digest)
    assert fetch_blob(registry.url, name, digest).content == data
    # the session is finished
    assert_error(_status(url), 404, "BLOB_UPLOAD_UNKNOWN")


def test_streamed_patch_then_put_without_body(registry):
    """skopeo/podman: one streamed PATCH with no Content-Range, then PUT ?digest= without body."""
    name = repo()
    data = rand_bytes(3 * 1024 * 1024 + 7)
    digest = sha256(data)
    url = start_upload(registry.url, name)

    def gen():
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    r = requests.patch(url, data=gen(), headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    url = absolute(registry.url, r.headers["Location"])
    r = requests.put(with_query(url, f"digest={digest}"))
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    got = fetch_blob(registry.url, name, digest)
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == digest.split(":")[1]


def test_chunked_patches_with_content_range(registry):
    """oras: PATCHes with ``Content-Range: a-b`` (no ``bytes=``), then PUT."""
    name = repo()
    data = rand_bytes(10_000)
    digest = sha256(data)
    url = start_upload(registry.url, name)
    upload_id = url.split("?")[0].rsplit("/", 1)[-1]
    offset = 0
    for size in (1, 999, 4000, 5000):
        chunk = data[offset : offset + size]
        r = requests.patch(
            url,
            data=chunk,
            headers={
                "Content-Range": f"{offset}-{offset + size - 1}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert r.status_code == 202, r.text
        offset += size
        assert r.headers["Range"] == f"0-{offset - 1}"
        assert r.headers["Docker-Upload-UUID"] == upload_id
        assert r.headers["Content-Length"] == "0"
        url = absolute(registry.url, r.headers["Location"])
        st = _status(url)
        assert st.status_code == 204
        assert st.headers["Range"] == f"0-{offset - 1}"
    r = requests.put(with_query(url, f"digest={digest}"))
    assert r.status_code == 201, r.text
    assert fetch_blob(registry.url, name, digest).content == data


def test_content_range_with_bytes_prefix_is_refused(registry):
    """The spec's chunk range is ``<start>-<end>``; ``bytes=0-3`` is refused, not ignored."""
    name = repo()
    url = start_upload(registry.url, name)
    r = requests.patch(url, data=b"abcd", headers={"Content-Range": "bytes=0-3"})
    assert_error(r, 416, "RANGE_INVALID")
    status = requests.get(url, timeout=30)
    assert status.status_code == 204 and status.headers["Range"] == "0-0"  # nothing written


def test_final_chunk_in_put_with_content_range(registry):
    name = repo()
    data = rand_bytes(2000)
    digest = sha256(data)
    url = start_upload(registry.url, name)
    r = requests.patch(url, data=data[:1500], headers={"Content-Range": "0-1499"})
    assert r.status_code == 202
    url = absolute(registry.url, r.headers["Location"])
    r = requests.put(
        with_query(url, f"digest={digest}"),
        data=data[1500:],
        headers={"Content-Range": "1500-1999"},
    )
    assert r.status_code == 201, r.text
    assert fetch_blob(registry.url, name, digest).content == data


@pytest.mark.parametrize("bad_start", [0, 2, 5, 100])
def test_out_of_order_or_stale_chunk_is_416_and_writes_nothing(registry, bad_start):
    name = repo()
    data = rand_bytes(8)
    url = start_upload(registry.url, name)
    r = requests.patch(url, data=data[:4], headers={"Content-Range": "0-3"})
    assert r.status_code == 202
    url = absolute(registry.url, r.headers["Location"])
    r = requests.patch(url, data=b"ZZZZ", headers={"Content-Range": f"{bad_start}-{bad_start + 3}"})
    assert_error(r, 416, "RANGE_INVALID")
    st = _status(url)
    assert st.status_code == 204
    assert st.headers["Range"] == "0-3"
    # the upload continues normally and yields exactly the right bytes
    r = requests.patch(url, data=data[4:], headers={"Content-Range": "4-7"})
    assert r.status_code == 202
    r = requests.put(with_query(url, f"digest={sha256(data)}"))
    assert r.status_code == 201, r.text
    assert fetch_blob(registry.url, name, sha256(data)).content == data


@pytest.mark.parametrize("value", ["abc", "5-2", "-3", "0-", "bytes 0-3/4"])
def test_malformed_content_range_is_416(registry, value):
    url = start_upload(registry.url, repo())
    r = requests.patch(url, data=b"abcd", headers={"Content-Range": value})
    assert_error(r, 416, "RANGE_INVALID")
    st = _status(url)
    assert st.status_code == 204
    assert st.headers["Range"] == "0-0"


def test_content_range_disagreeing_with_length_is_rejected(registry):
    url = start_upload(registry.url, repo())
    r = requests.patch(url, data=b"abcdef", headers={"Content-Range": "0-3"})
    assert r.status_code in (400, 416)
    assert codes_of(r) & {"RANGE_INVALID", "SIZE_INVALID"}
    st = _status(url)
    assert st.status_code == 204
    assert st.headers["Range"] == "0-0"


def codes_of(r: requests.Response) -> set[str]:
    return {e["code"] for e in r.json()["errors"]}


def test_upload_status(registry):
    name = repo()
    url = start_upload(registry.url, name)
    st = _status(url)
    assert st.status_code == 204
    assert st.headers["Range"] == "0-0"
    assert absolute(registry.url, st.headers["Location"]) == url
    assert st.headers["Docker-Upload-UUID"] == url.split("?")[0].rsplit("/", 1)[-1]
    requests.patch(url, data=b"x" * 10)
    st = _status(url)
    assert st.status_code == 204
    assert st.headers["Range"] == "0-9"
    assert st.content == b""


def test_upload_status_in_another_repository_is_unknown(registry):
    url = start_upload(registry.url, repo())
    upload_id = url.split("?")[0].rsplit("/", 1)[-1]
    r = requests.get(f"{registry.url}/v2/{repo()}/blobs/uploads/{upload_id}")
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


def test_cancel_upload(registry):
    name = repo()
    url = start_upload(registry.url, name)
    requests.patch(url, data=b"some bytes")
    r = requests.delete(url)
    assert r.status_code == 204
    assert_error(_status(url), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(requests.patch(url, data=b"more"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(
        requests.put(with_query(url, f"digest={sha256(b'some bytes')}")),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    assert_error(requests.delete(url), 404, "BLOB_UPLOAD_UNKNOWN")
    assert not list((registry.root / "docker/registry/v2/repositories" / name).rglob("data"))


def test_wrong_digest_on_put(registry):
    name = repo()
    data = rand_bytes(500)
    wrong = sha256(b"not the data")
    url = start_upload(registry.url, name)
    r = requests.patch(url, data=data)
    assert r.status_code == 202
    r = requests.put(with_query(url, f"digest={wrong}"))
    assert_error(r, 400, "DIGEST_INVALID")
    assert fetch_blob(registry.url, name, wrong).status_code == 404
    assert requests.head(blob_url(registry.url, name, sha256(data))).status_code == 404
    assert_error(_status(url), 404, "BLOB_UPLOAD_UNKNOWN")
    # the correct digest cannot sneak in afterwards either
    r = requests.put(with_query(url, f"digest={sha256(data)}"))
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    blob_dir = registry.root / "docker/registry/v2/blobs/sha256" / wrong[7:9] / wrong[7:]
    assert not blob_dir.exists()


def test_wrong_digest_on_put_with_body(registry):
    name = repo()
    data = rand_bytes(500)
    wrong = sha256(b"not the data")
    url = start_upload(registry.url, name)
    r = requests.put(with_query(url, f"digest={wrong}"), data=data)
    assert_error(r, 400, "DIGEST_INVALID")
    assert fetch_blob(registry.url, name, wrong).status_code == 404
    assert_error(_status(url), 404, "BLOB_UPLOAD_UNKNOWN")


def test_put_without_digest_parameter(registry):
    url = start_upload(registry.url, repo())
    r = requests.put(url, data=b"abc")
    assert_error(r, 400, "DIGEST_INVALID")


def test_sha512_monolithic(registry):
    name = repo()
    data = rand_bytes(4096)
    digest = sha512(data)
    r = requests.post(f"{registry.url}/v2/{name}/blobs/uploads/?digest={digest}", data=data)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    got = fetch_blob(registry.url, name, digest)
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["Docker-Content-Digest"] == digest
    blob = registry.root / "docker/registry/v2/blobs/sha512" / digest[7:9] / digest[7:] / "data"
    assert blob.read_bytes() == data


def test_sha512_chunked(registry):
    name = repo()
    data = rand_bytes(300_000)
    digest = sha512(data)
    url = start_upload(registry.url, name)
    for start in range(0, len(data), 100_000):
        chunk = data[start : start + 100_000]
        r = requests.patch(
            url, data=chunk, headers={"Content-Range": f"{start}-{start + len(chunk) - 1}"}
        )
        assert r.status_code == 202
        url = absolute(registry.url, r.headers["Location"])
    r = requests.put(with_query(url, f"digest={digest}"))
    assert r.status_code == 201, r.text
    assert fetch_blob(registry.url, name, digest).content == data


def test_sha512_wrong_digest(registry):
    name = repo()
    data = rand_bytes(100)
    wrong = sha512(b"other")
    url = start_upload(registry.url, name)
    assert_error(requests.put(with_query(url, f"digest={wrong}"), data=data), 400, "DIGEST_INVALID")
    assert fetch_blob(registry.url, name, wrong).status_code == 404


def test_empty_blob(registry):
    name = repo()
    digest = sha256(b"")
    url = start_upload(registry.url, name)
    r = requests.put(with_query(url, f"digest={digest}"))
    assert r.status_code == 201, r.text
    h = requests.head(blob_url(registry.url, name, digest))
    assert h.status_code == 200
    assert h.headers["Content-Length"] == "0"
    g = fetch_blob(registry.url, name, digest)
    assert g.status_code == 200
    assert g.content == b""
    assert g.headers["Docker-Content-Digest"] == digest


def test_empty_blob_monolithic_post(registry):
    name = repo()
    digest = sha256(b"")
    r = requests.post(f"{registry.url}/v2/{name}/blobs/uploads/?digest={digest}", data=b"")
    assert r.status_code == 201, r.text
    assert requests.head(blob_url(registry.url, name, digest)).status_code == 200


def test_large_blob_several_patches(registry):
    name = repo()
    size = 20 * 1024 * 1024 + 123
    data = rand_bytes(size, seed=20)
    digest = sha256(data)
    url = start_upload(registry.url, name)
    step = 6 * 1024 * 1024
    with requests.Session() as s:
        for start in range(0, size, step):
            chunk = data[start : start + step]
            r = s.patch(
                url,
                data=chunk,
                headers={"Content-Range": f"{start}-{start + len(chunk) - 1}"},
            )
            assert r.status_code == 202, r.text
            assert r.headers["Range"] == f"0-{start + len(chunk) - 1}"
            url = absolute(registry.url, r.headers["Location"])
        r = s.put(with_query(url, f"digest={digest}"))
        assert r.status_code == 201, r.text
        h = s.head(blob_url(registry.url, name, digest))
        assert h.headers["Content-Length"] == str(size)
        hasher = hashlib.sha256()
        received = 0
        with s.get(blob_url(registry.url, name, digest), stream=True) as g:
            assert g.status_code == 200
            for part in g.iter_content(1 << 20):
                hasher.update(part)
                received += len(part)
    assert received == size
    assert "sha256:" + hasher.hexdigest() == digest


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:xyz",
        "sha256:" + "0" * 63,
        "sha256:" + "0" * 65,
        "sha256:" + "A" * 64,
        "md5:" + "0" * 32,
        "sha1:" + "0" * 40,
        "sha256",
        "sha256:",
        ":" + "0" * 64,
        "sha512:" + "0" * 64,
        "SHA256:" + "0" * 64,
    ],
)
def test_malformed_digest_on_put(registry, digest):
    url = start_upload(registry.url, repo())
    r = requests.put(with_query(url, f"digest={digest}"), data=b"abc")
    assert_error(r, 400, "DIGEST_INVALID")


@pytest.mark.parametrize(
    "digest", ["sha256:xyz", "md5:" + "0" * 32, "sha256:" + "AB" * 32, "sha256:" + "g" * 64]
)
def test_malformed_digest_on_monolithic_post(registry, digest):
    name = repo()
    r = requests.post(f"{registry.url}/v2/{name}/blobs/uploads/?digest={digest}", data=b"abc")
    assert_error(r, 400, "DIGEST_INVALID")


@pytest.mark.parametrize(
    "upload_id",
    [
        "...",
        "random-string",
        "0123456789",
        "3f1c2a9e-8d4b-4c1e-9a7f-2b6d5e8c1a0f",  # well formed, never issued
        "3F1C2A9E-8D4B-4C1E-9A7F-2B6D5E8C1A0F",
        "3f1c2a9e8d4b4c1e9a7f2b6d5e8c1a0f",
        "%2e%2e",
    ],
)
def test_invalid_or_unknown_upload_ids(registry, upload_id):
    base = f"{registry.url}/v2/{repo()}/blobs/uploads/{upload_id}"
    assert_error(requests.get(base), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(requests.patch(base, data=b"abc"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(
        requests.put(with_query(base, f"digest={sha256(b'abc')}"), data=b"abc"),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    assert_error(requests.delete(base), 404, "BLOB_UPLOAD_UNKNOWN")


def test_patch_to_unknown_upload_creates_nothing(registry):
    name = repo()
    upload_id = str(uuid.uuid4())
    r = requests.patch(
        f"{registry.url}/v2/{name}/blobs/uploads/{upload_id}",
        data=b"abc",
        headers={"Content-Range": "0-2"},
    )
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    assert not (registry.root / "docker/registry/v2/repositories" / name).exists()


def test_upload_after_completion_is_unknown(registry):
    name = repo()
    data = b"done"
    url = start_upload(registry.url, name)
    assert requests.put(with_query(url, f"digest={sha256(data)}"), data=data).status_code == 201
    assert_error(requests.patch(url, data=b"more"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(
        requests.put(with_query(url, f"digest={sha256(data)}"), data=data),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )


def test_same_blob_uploaded_twice(registry):
    name = repo()
    data = rand_bytes(1000)
    for _ in range(2):
        url = start_upload(registry.url, name)
        r = requests.put(with_query(url, f"digest={sha256(data)}"), data=data)
        assert r.status_code == 201
    assert fetch_blob(registry.url, name, sha256(data)).content == data


def test_uploads_leave_no_session_directories(registry):
    name = repo()
    for i in range(3):
        url = start_upload(registry.url, name)
        data = f"blob {i}".encode()
        assert requests.put(with_query(url, f"digest={sha256(data)}"), data=data).status_code == 201
    uploads = registry.root / "docker/registry/v2/repositories" / name / "_uploads"
    assert not uploads.exists() or list(uploads.iterdir()) == []


def test_first_chunk_not_starting_at_zero(registry):
    url = start_upload(registry.url, repo())
    r = requests.patch(url, data=b"abcd", headers={"Content-Range": "1-4"})
    assert_error(r, 416, "RANGE_INVALID")
    assert _status(url).headers["Range"] == "0-0"


def test_put_with_stale_content_range_is_416_and_keeps_upload(registry):
    name = repo()
    data = b"0123456789"
    url = start_upload(registry.url, name)
    assert requests.patch(url, data=data[:5], headers={"Content-Range": "0-4"}).status_code == 202
    r = requests.put(
        with_query(url, f"digest={sha256(data)}"), data=data[5:], headers={"Content-Range": "3-7"}
    )
    assert_error(r, 416, "RANGE_INVALID")
    st = _status(url)
    assert st.status_code == 204
    assert st.headers["Range"] == "0-4"
    r = requests.put(
        with_query(url, f"digest={sha256(data)}"), data=data[5:], headers={"Content-Range": "5-9"}
    )
    assert r.status_code == 201, r.text
    assert fetch_blob(registry.url, name, sha256(data)).content == data


@pytest.mark.parametrize("body", [b"0123456789", b"0"], ids=["longer", "shorter"])
def test_chunk_not_matching_its_content_range_writes_nothing(registry, body):
    name = repo()
    url = start_upload(registry.url, name)
    assert requests.patch(url, data=b"abcd", headers={"Content-Range": "0-3"}).status_code == 202
    # chunked transfer encoding: no Content-Length to compare with before reading
    r = requests.patch(url, data=iter([body]), headers={"Content-Range": "4-5"})
    assert r.status_code in (400, 416)
    assert codes_of(r) & {"RANGE_INVALID", "SIZE_INVALID"}
    st = _status(url)
    assert st.status_code == 204
    assert st.headers["Range"] == "0-3"


def test_upload_id_of_another_repository(registry):
    url = start_upload(registry.url, repo())
    upload_id = url.split("?")[0].rsplit("/", 1)[-1]
    other = f"{registry.url}/v2/{repo()}/blobs/uploads/{upload_id}"
    assert_error(requests.patch(other, data=b"abc"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(
        requests.put(with_query(other, f"digest={sha256(b'abc')}"), data=b"abc"),
        404,
        "BLOB_UPLOAD_UNKNOWN",
    )
    assert_error(requests.delete(other), 404, "BLOB_UPLOAD_UNKNOWN")
    assert _status(url).status_code == 204


def test_empty_patch_changes_nothing(registry):
    url = start_upload(registry.url, repo())
    assert requests.patch(url, data=b"abc").status_code == 202
    r = requests.patch(url, data=b"")
    assert r.status_code == 202
    assert r.headers["Range"] == "0-2"


def test_chunked_body_whose_chunk_ends_arrive_late(registry):
    """Transfer-Encoding: chunked, with each chunk's closing CRLF sent after a pause, as a
    slow link or a client's write pattern can do: the server has read the chunk's bytes before
    it learns the chunk ended, and aiohttp then reports an empty read that is only a chunk
    boundary. The upload must take every byte of every chunk, not stop there."""
    name = repo()
    data = rand_bytes(3 * 100_000)
    url = start_upload(registry.url, name)
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(
            f"PATCH {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        for i in range(0, len(data), 100_000):
            piece = data[i : i + 100_000]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece)
            time.sleep(0.3)  # the server reads the bytes, then the chunk's end arrives
            sock.sendall(b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        response = b""
        while b"\r\n\r\n" not in response:
            got = sock.recv(65536)
            assert got, "connection closed before a response"
            response += got
    status_line, _, head = response.partition(b"\r\n")
    assert status_line.split()[1] == b"202", response[:500]
    headers = dict(
        line.split(": ", 1) for line in head.decode().split("\r\n\r\n")[0].split("\r\n") if line
    )
    assert headers["Range"] == f"0-{len(data) - 1}"
    location = absolute(registry.url, headers["Location"])
    r = requests.put(with_query(location, f"digest={sha256(data)}"))
    assert r.status_code == 201, r.text
    assert fetch_blob(registry.url, name, sha256(data)).content == data


def test_a_content_encoding_is_not_undone(registry):
    """A blob is the bytes the client sent: a ``Content-Encoding: gzip`` upload stores the gzip
    bytes under their digest (registry:2 does not decode request bodies either)."""
    name = repo()
    raw = gzip.compress(rand_bytes(50_000, seed=66))
    digest = sha256(raw)
    url = with_query(start_upload(registry.url, name), f"digest={digest}")
    r = requests.put(url, data=raw, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 201, r.text
    assert fetch_blob(registry.url, name, digest).content == raw
