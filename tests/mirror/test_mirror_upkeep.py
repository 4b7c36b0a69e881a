"""The mirror's cache over time: ``cargohold du``'s mirror table, ``maxsize`` eviction of the
least recently pulled images through the online collector, ``ttl``, and pre-fetching."""

from __future__ import annotations

import json
import subprocess
import sys

import requests
from support.images import push_image
from support.servers import cargohold_env, unique_repo
from support.waiting import eventually

from .conftest import blob_path, mirror_entry, seed_upstream
from .test_mirror_pull import _pull

FAST_GC = {"storage": {"maintenance": {"gc": {"graceperiod": "0s", "settle": "0s"}}}}


def _du(config_path: str) -> dict:  # type: ignore[type-arg]
    proc = subprocess.run(
        [sys.executable, "-m", "cargohold", "du", config_path, "--json"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **cargohold_env()},
        timeout=120,
        check=True,
    )
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_du_shows_each_mirrors_size_and_hit_rate(
    make_registry, proxy, upstream, upstream_session, images
):
    image = images.get(seed=1331, payload_size=256 * 1024)
    remote = seed_upstream(upstream, upstream_session, image)
    reg = make_registry(config={"mirrors": [mirror_entry(proxy), mirror_entry(proxy, prefix="x")]})
    _pull(reg.url, f"hub/{remote}", "latest")  # 3 misses: manifest, config, layer
    _pull(reg.url, f"hub/{remote}", "latest")  # 3 hits
    reg.stop()  # a stopping worker writes its counts
    doc = _du(str(reg.config_path))
    hub, x = doc["mirrors"]
    size = sum(b.size for b in image.platforms[0].blobs) + len(image.top.data)
    assert (hub["mirror"], hub["repositories"], hub["images"]) == ("hub", 1, 1)
    assert hub["size"] == size
    assert (hub["hits"], hub["misses"], hub["hitRate"]) == (3, 3, 0.5)
    assert (x["mirror"], x["size"], x["hitRate"]) == ("x", 0, None)
    text = subprocess.run(
        [sys.executable, "-m", "cargohold", "du", str(reg.config_path)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **cargohold_env()},
        timeout=120,
        check=True,
    ).stdout
    assert "HIT RATE" in text and "50.0%" in text


def test_maxsize_evicts_the_least_recently_pulled_image(
    make_registry, proxy, upstream, upstream_session, images
):
    old, new = (
        images.get(seed=1332, payload_size=1 << 20),
        images.get(seed=1333, payload_size=1 << 20),
    )
    remote_old, remote_new = unique_repo("library"), unique_repo("library")
    push_image(upstream.url, remote_old, old, session=upstream_session)
    push_image(upstream.url, remote_new, new, session=upstream_session)
    entry = mirror_entry(proxy, maxsize="1600KiB", evictinterval="1s")
    reg = make_registry(config={"mirrors": [entry], **FAST_GC})
    _pull(reg.url, f"hub/{remote_old}", "latest")
    _pull(reg.url, f"hub/{remote_new}", "latest")
    old_layer, new_layer = old.layer_digests[0], new.layer_digests[0]
    # Both are 1 MiB: only one fits. The older pull goes, blobs and all; the newer stays.
    eventually(lambda: not blob_path(reg.root, old_layer).exists(), timeout=60)
    assert blob_path(reg.root, new_layer).exists()
    r = requests.get(f"{reg.url}/v2/hub/{remote_new}/manifests/latest")
    assert r.status_code == 200
    assert "evicted" in reg.log_tail(50000)
    # Evicted is not lost: the next pull fetches it again.
    assert _pull(reg.url, f"hub/{remote_old}", "latest")
    assert proxy.count("GET", f"/blobs/{old_layer}") == 2


def test_ttl_drops_images_not_pulled_within_it(
    make_registry, proxy, upstream, upstream_session, images
):
    image = images.get(seed=1334, payload_size=64 * 1024)
    remote = seed_upstream(upstream, upstream_session, image)
    entry = mirror_entry(proxy, ttl="2s", evictinterval="1s")
    reg = make_registry(config={"mirrors": [entry], **FAST_GC})
    _pull(reg.url, f"hub/{remote}", "latest")
    eventually(lambda: not blob_path(reg.root, image.layer_digests[0]).exists(), timeout=60)
    assert "(ttl)" in reg.log_tail(50000)


def test_prefetch_fills_the_cache_with_matching_tags(
    make_registry, proxy, upstream, upstream_session, images
):
    wanted, other = images.get(seed=1335), images.get(seed=1336)
    remote = unique_repo("library")
    push_image(upstream.url, remote, wanted, tag="v1.2", session=upstream_session)
    push_image(upstream.url, remote, other, tag="nightly", session=upstream_session)
    entry = mirror_entry(proxy, prefetch=[{"repository": remote, "tags": [r"v\d+\.\d+"]}])
    reg = make_registry(config={"mirrors": [entry]})
    for d in [wanted.config_digest, *wanted.layer_digests]:
        eventually(lambda d=d: blob_path(reg.root, d).exists(), timeout=60)
    assert not blob_path(reg.root, other.layer_digests[0]).exists()
    # Now the upstream can go: the pre-fetched image is served from the cache.
    proxy.down = True
    got = _pull(reg.url, f"hub/{remote}", "v1.2")
    assert got["manifest"] == wanted.top.data
