"""``maxsize`` eviction while a client is still pulling the evicted image (issue 13 point 6).

The online collector deletes the blob file of an evicted image under a client that is reading
it slowly: the client must still get every byte (an open file outlives its unlink), the blob
must be gone from the store afterwards, and the next pull must fetch it from the upstream again.
"""

from __future__ import annotations

import hashlib

import requests
from support.images import push_image
from support.servers import unique_repo
from support.waiting import eventually

from .conftest import blob_path, mirror_entry
from .test_mirror_pull import _pull

FAST_GC = {"storage": {"maintenance": {"gc": {"graceperiod": "0s", "settle": "0s"}}}}
# Larger than what loopback's socket buffers hold, so the server is still sending (its
# sendfile waiting on the client) when the collector removes the file.
LAYER = 32 << 20


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
    url = f"{reg.url}/v2/hub/{remote_old}/blobs/{old_layer}"
    slow = requests.get(url, stream=True, timeout=300)
    assert slow.status_code == 200
    assert int(slow.headers["Content-Length"]) == old_size
    hasher = hashlib.sha256()
    first = slow.raw.read(64 * 1024)
    hasher.update(first)
    received = len(first)

    # The newer pull pushes the mirror past maxsize: the old image (least recently pulled)
    # is evicted and the collector deletes its layer while the slow client is mid-body.
    _pull(reg.url, f"hub/{remote_new}", "latest")
    eventually(lambda: not blob_path(reg.root, old_layer).exists(), timeout=120)
    assert blob_path(reg.root, new_layer).exists()
    assert "evicted" in reg.log_tail(50000)
    assert received < old_size  # still in flight when its file went

    for chunk in slow.iter_content(1 << 20):
        hasher.update(chunk)
        received += len(chunk)
    slow.close()
    assert received == old_size
    assert "sha256:" + hasher.hexdigest() == old_layer

    # Evicted is not lost: the next pull fetches the layer from the upstream again.
    assert proxy.count("GET", f"/blobs/{old_layer}") == 1
    r = requests.get(f"{reg.url}/v2/hub/{remote_old}/manifests/latest")
    assert r.status_code == 200
    assert _pull(reg.url, f"hub/{remote_old}", "latest")
    assert proxy.count("GET", f"/blobs/{old_layer}") == 2
