"""Coalescing across replicas with Redis (best effort): two replicas on one S3 bucket that do
not share a host's fetch files (each its own TMPDIR) fetch a blob once between them."""

from __future__ import annotations

import concurrent.futures
import hashlib
import threading

import requests
from support.images import MANIFEST_ACCEPT
from support.waiting import eventually

from .conftest import mirror_entry, seed_upstream


def test_two_replicas_with_redis_fetch_once(
    make_registry, proxy, upstream, upstream_session, images, moto, redis_server, tmp_path
):
    image = images.get(seed=1341, payload_size=4 << 20)
    remote = seed_upstream(upstream, upstream_session, image)
    layer = image.layer_digests[0]
    gate = proxy.gate(f"/blobs/{layer}")
    bucket = moto.new_bucket()
    config = {
        "storage": {**moto.storage_section(bucket), "redirect": {"disable": True}},
        "redis": {"addr": redis_server.addr},
        "http": {"secret": "replicas"},
        "mirrors": [mirror_entry(proxy)],
    }
    replicas = []
    for i in range(2):
        tmp = tmp_path / f"tmp{i}"
        tmp.mkdir()
        replicas.append(make_registry(config=config, env={"TMPDIR": str(tmp)}))
    clients = 12
    got: list[str | None] = [None] * clients
    asked = threading.Semaphore(0)

    def pull(i: int) -> None:
        base = replicas[i % 2].url
        name = f"hub/{remote}"
        r = requests.get(f"{base}/v2/{name}/manifests/latest", headers={"Accept": MANIFEST_ACCEPT})
        assert r.status_code == 200, r.text
        asked.release()
        b = requests.get(f"{base}/v2/{name}/blobs/{layer}", timeout=300)
        assert b.status_code == 200, b.text
        got[i] = "sha256:" + hashlib.sha256(b.content).hexdigest()

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(pull, i) for i in range(clients)]
        for _ in range(clients):
            assert asked.acquire(timeout=120)
        eventually(lambda: proxy.count("GET", f"/blobs/{layer}") >= 1, timeout=60)
        gate.set()
        for f in futures:
            f.result(timeout=300)
    assert got == [layer] * clients
    assert proxy.count("GET", f"/blobs/{layer}") == 1, proxy.requests
