"""Garbage collection on S3 (moto): offline, online, and read by the reference afterwards."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import requests
from support.images import TestImage, push_image
from support.servers import free_port, unique_repo

_OPS = str(Path(__file__).resolve().parents[1])
if _OPS not in sys.path:
    sys.path.insert(0, _OPS)

from ops.helpers import image_digests, run_cli, verify_image, wait_debug  # noqa: E402

BLOBS = "docker/registry/v2/blobs/"


def _blobs(moto, bucket: str) -> set[str]:
    out = set()
    for key in moto.keys(bucket, BLOBS):
        parts = key[len(BLOBS) :].split("/")
        if len(parts) == 4 and parts[3] == "data":
            out.add(f"{parts[0]}:{parts[2]}")
    return out


def _garbage(reg, repo: str, image: TestImage) -> None:
    push_image(reg.url, repo, image, tag="g")
    resp = requests.delete(f"{reg.url}/v2/{repo}/manifests/{image.digest}", timeout=30)
    assert resp.status_code == 202


def test_online_gc_on_s3_with_redis_cache_and_two_workers(s3_registry, moto, redis_server, images):
    debug = f"127.0.0.1:{free_port()}"
    config = {
        "http": {"debug": {"addr": debug}},
        "storage": {
            "cache": {"blobdescriptor": "redis"},
            "maintenance": {"gc": {"graceperiod": "0s", "settle": "0.2s"}},
        },
        "redis": {"addr": redis_server.addr},
    }
    reg = s3_registry(config=config, workers=2)
    wait_debug(debug)
    repo = unique_repo("s3gc")
    kept, garbage = images.get(1200, multi_arch=True), images.get(1201)
    push_image(reg.url, repo, kept, tag="kept")
    _garbage(reg, repo, garbage)
    # HEAD through the cache, so that the cache holds the blobs GC will delete
    for blob in garbage.all_blobs():
        requests.head(f"{reg.url}/v2/{repo}/blobs/{blob.digest}", timeout=10)
    time.sleep(6)  # links written in the last seconds count as pushes in progress
    report = requests.post(f"http://{debug}/admin/gc?wait=true", timeout=120).json()
    assert not report["error"], report
    assert set(report["blobsDeleted"]) == image_digests(garbage)
    stored = _blobs(moto, reg.bucket)
    assert not image_digests(garbage) & stored
    assert image_digests(kept) <= stored
    verify_image(reg.url, repo, "kept", kept)
    for blob in garbage.all_blobs():  # no stale "exists" from the cache, on any worker
        for _ in range(4):
            resp = requests.head(f"{reg.url}/v2/{repo}/blobs/{blob.digest}", timeout=10)
            assert resp.status_code == 404
    push_image(reg.url, repo, garbage, tag="again")
    verify_image(reg.url, repo, "again", garbage)


def test_offline_gc_on_s3_then_the_reference_serves_it(
    s3_registry, make_reference_registry, moto, images
):
    reg = s3_registry()
    repo = unique_repo("s3off")
    kept, garbage, untagged = images.get(1210), images.get(1211), images.get(1212)
    push_image(reg.url, repo, kept, tag="kept")
    _garbage(reg, repo, garbage)
    push_image(reg.url, repo, untagged, tag="u")
    assert requests.delete(f"{reg.url}/v2/{repo}/manifests/u", timeout=30).status_code == 202
    reg.stop()
    run_cli("garbage-collect", str(reg.config_path), "--delete-untagged", "--quiet")
    stored = _blobs(moto, reg.bucket)
    assert not (image_digests(garbage) | image_digests(untagged)) & stored
    assert image_digests(kept) <= stored
    reference = make_reference_registry(config={"storage": moto.storage_section(reg.bucket)})
    verify_image(reference.url, repo, "kept", kept)
