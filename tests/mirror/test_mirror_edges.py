"""Edges of the mirror: a Range on a blob still arriving, a HEAD of a manifest not stored, and
read-only mode (serve and pass through, never store)."""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

import pytest
import requests
from support.images import MANIFEST_ACCEPT, sha256_digest
from support.waiting import eventually

from .conftest import blob_path, mirror_entry, seed_upstream
from .test_mirror_pull import _pull

READONLY = {"storage": {"maintenance": {"readonly": {"enabled": True}}}}


def test_range_on_a_blob_still_arriving(make_registry, proxy, upstream, upstream_session, images):
    image = images.get(seed=1361, payload_size=2 << 20)
    remote = seed_upstream(upstream, upstream_session, image)
    layer = image.layer_digests[0]
    whole = upstream_session.get(f"{upstream.url}/v2/{remote}/blobs/{layer}").content
    size = len(whole)
    gate = proxy.gate(f"/blobs/{layer}")  # the upstream sends the first bytes, then waits
    reg = make_registry(config={"mirrors": [mirror_entry(proxy)]}, workers=2)
    url = f"{reg.url}/v2/hub/{remote}/blobs/{layer}"

    def get(rng: str) -> requests.Response:
        return requests.get(url, headers={"Range": rng}, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        head = pool.submit(get, "bytes=100-199")
        eventually(lambda: proxy.count("GET", f"/blobs/{layer}") == 1, timeout=60)
        tail = pool.submit(get, "bytes=-1000")
        middle = pool.submit(get, f"bytes={size // 2}-")
        # Unsatisfiable: refused at once, whatever has arrived.
        r = get(f"bytes={size + 10}-")
        assert r.status_code == 416
        assert r.headers["Content-Range"] == f"bytes */{size}"
        assert not blob_path(reg.root, layer).exists()  # still arriving
        gate.set()
        for fut, start, stop in (
            (head, 100, 200),
            (tail, size - 1000, size),
            (middle, size // 2, size),
        ):
            r = fut.result(timeout=120)
            assert r.status_code == 206, r.text
            assert r.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{size}"
            assert int(r.headers["Content-Length"]) == stop - start
            assert r.content == whole[start:stop]
    assert proxy.count("GET", f"/blobs/{layer}") == 1  # one fetch for every range
    eventually(lambda: blob_path(reg.root, layer).exists(), timeout=30)
    # Stored now: the same range gets the same answer.
    r = get("bytes=100-199")
    assert r.status_code == 206 and r.content == whole[100:200]


def test_head_of_a_manifest_not_stored_asks_upstream_with_head(
    make_registry, proxy, upstream, upstream_session, images
):
    image = images.get(seed=1362)
    remote = seed_upstream(upstream, upstream_session, image)
    reg = make_registry(config={"mirrors": [mirror_entry(proxy)]})
    name = f"hub/{remote}"
    for ref in ("latest", image.digest):
        r = requests.head(
            f"{reg.url}/v2/{name}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT}
        )
        assert r.status_code == 200, ref
        assert r.headers["Docker-Content-Digest"] == image.digest
        assert int(r.headers["Content-Length"]) == len(image.top.data)
        assert r.headers["Content-Type"] == image.top.media_type
    assert proxy.count("HEAD", f"/v2/{remote}/manifests/latest") == 1
    assert proxy.count("HEAD", f"/v2/{remote}/manifests/{image.digest}") == 1
    assert proxy.count("GET", "/manifests/") == 0  # nothing fetched...
    assert not blob_path(reg.root, image.digest).exists()  # ...nothing stored
    # containerd's way: HEAD the tag, then GET by digest: one upstream GET in all.
    r = requests.get(
        f"{reg.url}/v2/{name}/manifests/{image.digest}", headers={"Accept": MANIFEST_ACCEPT}
    )
    assert r.status_code == 200 and r.content == image.top.data
    assert proxy.count("GET", "/manifests/") == 1
    # Stored now: a HEAD by digest is answered here; the tag is checked (HEAD) as always.
    proxy.reset()
    r = requests.head(f"{reg.url}/v2/{name}/manifests/{image.digest}")
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == image.digest
    r = requests.head(f"{reg.url}/v2/{name}/manifests/latest")
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == image.digest
    assert proxy.count("GET") == 0
    assert proxy.count("HEAD", "/manifests/") == 1
    r = requests.head(f"{reg.url}/v2/{name}/manifests/nosuchtag")
    assert r.status_code == 404


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            out[os.path.join(dirpath, f)] = (st.st_size, st.st_mtime_ns)
    return out


def test_read_only_serves_the_cache_and_passes_the_rest_through(
    make_registry, proxy, upstream, upstream_session, images, tmp_path
):
    cached, uncached = images.get(seed=1363), images.get(seed=1364, payload_size=1 << 20)
    remote = seed_upstream(upstream, upstream_session, cached)
    from support.images import push_image

    push_image(upstream.url, remote, uncached, tag="new", session=upstream_session)
    first = make_registry(config={"mirrors": [mirror_entry(proxy)]})
    got = _pull(first.url, f"hub/{remote}", "latest")
    root = first.root
    first.stop()
    before = _tree(root)

    reg = make_registry(config={"mirrors": [mirror_entry(proxy)], **READONLY}, root=root)
    proxy.reset()
    assert _pull(reg.url, f"hub/{remote}", "latest") == got  # the cache, as usual
    assert proxy.count("GET", "/blobs/") == 0
    for _ in range(2):  # not cached: passed through (bytes verified by _pull), every time
        assert _pull(reg.url, f"hub/{remote}", "new")
    layer = uncached.layer_digests[0]
    assert proxy.count("GET", f"/blobs/{layer}") == 2
    r = requests.head(f"{reg.url}/v2/hub/{remote}/manifests/new")
    assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == uncached.digest
    # Writes are refused as always; and not one file of the storage changed.
    r = requests.post(f"{reg.url}/v2/mine/app/blobs/uploads/")
    assert r.status_code == 405
    assert _tree(root) == before
    assert not blob_path(root, layer).exists()

    # A corrupt upstream body is cut off, never passed off as whole.
    proxy.corrupt.add(f"/blobs/{layer}")
    url = f"{reg.url}/v2/hub/{remote}/blobs/{layer}"
    with pytest.raises(requests.exceptions.RequestException):
        r = requests.get(url, timeout=60)
        if r.status_code == 200:
            assert sha256_digest(r.content) != layer
            assert len(r.content) < int(r.headers["Content-Length"])
        raise requests.exceptions.ConnectionError(f"status {r.status_code}")
    assert _tree(root) == before
