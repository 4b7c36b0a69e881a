"""A corrupt blob is never served: the download fails rather than deliver wrong bytes."""

from __future__ import annotations

import http.client
import os
from urllib.parse import urlsplit

import requests

from tests.api.helpers import assert_error, push_blob, rand_bytes, repo, sha256

from .helpers import blob_file


def _raw_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, int, bytes, bool]:
    """GET with http.client: status, Content-Length, the bytes that arrived, and whether the
    body ended short (the connection was cut)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("GET", parts.path, headers=headers or {})
        resp = conn.getresponse()
        length = int(resp.headers.get("Content-Length", "-1"))
        body = b""
        cut = False
        try:
            while chunk := resp.read(1 << 16):
                body += chunk
        except (http.client.IncompleteRead, ConnectionError) as e:
            if isinstance(e, http.client.IncompleteRead):
                body += e.partial
            cut = True
        if length >= 0 and len(body) < length:
            cut = True
        return resp.status, length, body, cut
    finally:
        conn.close()


def test_a_blob_rotten_on_disk_is_cut_off_then_refused(make_registry):
    reg = make_registry()
    name = repo("rot")
    good, bad = rand_bytes(3_000_000, seed=1), rand_bytes(3_000_000, seed=2)
    good_d, bad_d = push_blob(reg.url, name, good), push_blob(reg.url, name, bad)
    path = blob_file(reg.root, bad_d)
    rotten = bytearray(path.read_bytes())
    rotten[-10] ^= 0x01  # same size, same inode: only the bytes changed
    with open(path, "r+b") as f:
        f.write(rotten)
        os.fsync(f.fileno())

    status, length, body, cut = _raw_get(f"{reg.url}/v2/{name}/blobs/{bad_d}")
    assert status == 200 and length == len(bad)
    assert cut, "the corrupt body must not arrive whole"
    assert len(body) < length and body != bytes(rotten)
    # the verdict is remembered: the next request is refused before any byte
    r = requests.get(f"{reg.url}/v2/{name}/blobs/{bad_d}", timeout=60)
    assert_error(r, 500, "UNKNOWN")
    assert "fsck" in r.text
    assert "is corrupt" in reg.log_tail(20000)

    # a sound blob arrives whole, the first time (verified while sent) and after
    for _ in range(2):
        r = requests.get(f"{reg.url}/v2/{name}/blobs/{good_d}", timeout=60)
        assert r.status_code == 200 and r.content == good
        assert sha256(r.content) == good_d
    r = requests.get(
        f"{reg.url}/v2/{name}/blobs/{good_d}", headers={"Range": "bytes=10-19"}, timeout=60
    )
    assert r.status_code == 206 and r.content == good[10:20]


def test_a_range_of_a_rotten_blob_is_cut_off_too(make_registry):
    reg = make_registry()
    name = repo("rotrange")
    data = rand_bytes(2_000_000, seed=3)
    digest = push_blob(reg.url, name, data)
    path = blob_file(reg.root, digest)
    with open(path, "r+b") as f:
        f.seek(1_500_000)
        f.write(b"\x00" * 16)
    status, length, body, cut = _raw_get(
        f"{reg.url}/v2/{name}/blobs/{digest}", {"Range": "bytes=0-999"}
    )
    assert status == 206 and length == 1000
    assert cut and len(body) < 1000
