"""``maxsize`` eviction while a client is still pulling the evicted image (issue 13 point 6).

The online collector deletes the blob file of an evicted image under a client that is reading
it slowly: the client must still get every byte (an open file outlives its unlink), the blob
must be gone from the store afterwards, and the next pull must fetch it from the upstream again.
"""

from __future__ import annotations

import hashlib

import requests
from support.images import MANIFEST_ACCEPT, push_image
from support.servers import unique_repo
from support.waiting import eventually

from .conftest import blob_path, mirror_entry
from .test_mirror_pull import _pull

FAST_GC = {"storage": {"maintenance": {"gc": {"graceperiod": "0s", "settle": "0s"}}}}
# Larger than what loopback's socket buffers hold, so the server is still sending (its
# sendfile waiting on the client) when the collector removes the file.
LAYER = 32 << 20


class _Slow:
    """A client that takes the first 64 KiB of a blob, then stops reading until told."""

    def __init__(self, url: str) -> None:
        self.response = requests.get(url, stream=True, timeout=300)
        assert self.response.status_code == 200
        self.hasher = hashlib.sha256()
        self.received = 0
        self._take(self.response.raw.read(64 * 1024))

    def _take(self, data: bytes) -> None:
        self.hasher.update(data)
        self.received += len(data)

    def finish(self) -> tuple[int, str]:
        """Read the rest: (bytes received in all, their sha256 digest)."""
        for chunk in self.response.iter_content(1 << 20):
            self._take(chunk)
        self.response.close()
        return self.received, "sha256:" + self.hasher.hexdigest()


def test_eviction_with_a_pull_in_flight(make_registry, proxy, upstream, upstream_session, images):
    old, new = (
        images.get(seed=1341, payload_size=LAYER),
        images.get(seed=1342, payload_size=LAYER),
    )
    remote_old, remote_new = unique_repo("library"), unique_repo("library")
    push_image(upstream.url, remote_old, old, session=upstream_session)
    push_image(upstream.url, remote_new, new, session=upstream_session)
    old_layer, new_layer = old.layer_digests[0], new.layer_digests[0]
    old_size = old.platforms[0].blobs[-1].size
    # Room for one image, not two.
    entry = mirror_entry(proxy, maxsize=str(old_size * 3 // 2), evictinterval="1s")
    reg = make_registry(config={"mirrors": [entry], **FAST_GC})
    _pull(reg.url, f"hub/{remote_old}", "latest")
    assert blob_path(reg.root, old_layer).exists()

    # A slow client starts on the cached layer of the old image and stops reading.
    slow = _Slow(f"{reg.url}/v2/hub/{remote_old}/blobs/{old_layer}")
    assert int(slow.response.headers["Content-Length"]) == old_size

    # The newer pull pushes the mirror past maxsize: the old image (least recently pulled)
    # is evicted and the collector deletes its layer while the slow client is mid-body.
    _pull(reg.url, f"hub/{remote_new}", "latest")
    eventually(lambda: not blob_path(reg.root, old_layer).exists(), timeout=120)
    assert blob_path(reg.root, new_layer).exists()
    assert "evicted" in reg.log_tail(50000)
    assert slow.received < old_size  # still in flight when its file went
    assert slow.finish() == (old_size, old_layer)

    # Evicted is not lost: the next pull fetches the layer from the upstream again.
    assert proxy.count("GET", f"/blobs/{old_layer}") == 1
    r = requests.get(f"{reg.url}/v2/hub/{remote_old}/manifests/latest")
    assert r.status_code == 200
    assert _pull(reg.url, f"hub/{remote_old}", "latest")
    assert proxy.count("GET", f"/blobs/{old_layer}") == 2


def test_eviction_while_a_blob_of_the_image_is_still_arriving(
    make_registry, proxy, upstream, upstream_session, images
):
    """The evicted image's second layer is still being fetched (the upstream holds it back)
    when the collector runs: the client gets it whole, it lands in the store unreferenced, and
    the collector runs again after the fetch, so it does not stay behind."""
    old = images.get(seed=1343, layer_count=2, payload_size=1 << 20)
    new = images.get(seed=1344, payload_size=1 << 20)
    remote_old, remote_new = unique_repo("library"), unique_repo("library")
    push_image(upstream.url, remote_old, old, session=upstream_session)
    push_image(upstream.url, remote_new, new, session=upstream_session)
    cached, arriving = old.layer_digests
    arriving_size = old.platforms[0].blobs[-1].size
    entry = mirror_entry(proxy, maxsize="1600KiB", evictinterval="1s")
    reg = make_registry(config={"mirrors": [entry], **FAST_GC})
    base = f"{reg.url}/v2/hub/{remote_old}"
    r = requests.get(f"{base}/manifests/latest", headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 200
    for d in (old.config_digest, cached):
        assert requests.get(f"{base}/blobs/{d}").status_code == 200
    assert blob_path(reg.root, cached).exists()

    gate = proxy.gate(f"/blobs/{arriving}")
    slow = _Slow(f"{base}/blobs/{arriving}")

    _pull(reg.url, f"hub/{remote_new}", "latest")  # past maxsize: the old image goes
    eventually(lambda: not blob_path(reg.root, cached).exists(), timeout=120)
    assert not blob_path(reg.root, arriving).exists()  # still arriving
    gate.set()
    assert slow.finish() == (arriving_size, arriving)
    # Verified and stored after its image was gone: collected by a later pass.
    eventually(lambda: not blob_path(reg.root, arriving).exists(), timeout=120)
    assert blob_path(reg.root, new.layer_digests[0]).exists()
    # And pulled again, both layers come from the upstream again.
    assert _pull(reg.url, f"hub/{remote_old}", "latest")
    assert proxy.count("GET", f"/blobs/{cached}") == 2
    assert proxy.count("GET", f"/blobs/{arriving}") == 2
