"""Three stateless replicas behind haproxy (one backend pick per request) sharing storage (S3 or
a filesystem), Redis and http.secret: concurrent chunked pushes whose chunks land on different
replicas, a replica killed mid-run, Redis stopped mid-run. Every blob is pulled back and its
digest checked."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support.images import build_platform_image, get_manifest, push_manifest
from support.stores import RedisServer, ReplicaSet, chunked_upload

ReplicaFactory = Callable[..., ReplicaSet]
KiB, MiB = 1024, 1024 * 1024
PUSHES = 20


def payloads(seed: int) -> list[bytes]:
    """Twenty small blobs plus two that cross S3's 5 MiB part boundary."""
    rng = random.Random(seed)
    blobs = [rng.randbytes(MiB + 1000 * i) for i in range(PUSHES)]
    blobs += [rng.randbytes(11 * MiB + 3), rng.randbytes(9 * MiB + 5)]
    return blobs


def chunk_for(data: bytes) -> int:
    return 4 * MiB if len(data) > 5 * MiB else 256 * KiB


def push_all(
    rs: ReplicaSet, blobs: list[bytes], prefix: str, log: list[str], pause: float = 0.0
) -> dict[str, str]:
    """Chunked pushes of every blob, all at once; returns repo -> digest."""

    def one(i: int) -> tuple[str, str]:
        name = f"{prefix}/r{i}"
        if pause:
            time.sleep(pause * i)
        return name, chunked_upload(rs.url, name, blobs[i], chunk_for(blobs[i]), log=log)

    with ThreadPoolExecutor(max_workers=len(blobs)) as pool:
        return dict(pool.map(one, range(len(blobs))))


def check_all(rs: ReplicaSet, pushed: dict[str, str], blobs: list[bytes], prefix: str) -> None:
    for i, data in enumerate(blobs):
        name = f"{prefix}/r{i}"
        digest = pushed[name]
        assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
        r = requests.get(f"{rs.url}/v2/{name}/blobs/{digest}", timeout=120)
        assert r.status_code == 200, (name, r.status_code, r.text[:300])
        assert hashlib.sha256(r.content).hexdigest() == digest.split(":")[1], name


@pytest.mark.parametrize("storage", ["s3", "filesystem"])
def test_concurrent_chunked_pushes_across_replicas(
    replica_set: ReplicaFactory, redis_server: RedisServer, storage: str
) -> None:
    rs = replica_set(storage=storage, redis=redis_server)
    blobs = payloads(7)
    prefix = f"scale/{storage}-{random.getrandbits(32):08x}"
    log: list[str] = []
    started = time.monotonic()
    pushed = push_all(rs, blobs, prefix, log)
    elapsed = time.monotonic() - started
    check_all(rs, pushed, blobs, prefix)

    spread = rs.replicas_of_upload()
    ours = [ids for ids in spread.values() if ids]
    across = sum(1 for ids in ours if len(ids) >= 2)
    print(
        f"{storage}: {len(blobs)} concurrent chunked pushes in {elapsed:.1f}s; "
        f"{across}/{len(ours)} uploads were served by 2 or more replicas; retries: {len(log)}"
    )
    assert len(ours) >= len(blobs)
    assert across >= len(blobs) * 3 // 4, (spread, rs.describe_log())
    assert not log, log  # nothing failed: no retry was needed

    # Manifests through the balancer too, read back by tag from whichever replica.
    image = build_platform_image(900)
    name = f"{prefix}/image"
    for blob in image.blobs:
        chunked_upload(rs.url, name, blob.data, 1024)
    push_manifest(rs.url, name, "v1", image.manifest.data)
    for _ in range(len(rs.replicas)):
        r = get_manifest(rs.url, name, "v1")
        assert r.headers["Docker-Content-Digest"] == image.manifest_digest


@pytest.mark.parametrize("storage", ["s3", "filesystem"])
def test_a_replica_killed_mid_run_loses_nothing(
    replica_set: ReplicaFactory, redis_server: RedisServer, storage: str
) -> None:
    rs = replica_set(storage=storage, redis=redis_server)
    rng = random.Random(11)
    blobs = [rng.randbytes(768 * KiB + i) for i in range(PUSHES)]
    prefix = f"scale/kill-{storage}-{random.getrandbits(32):08x}"
    log: list[str] = []
    result: dict[str, str] = {}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.update(push_all(rs, blobs, prefix, log, pause=0.05))
        except BaseException as e:  # surfaced below
            errors.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.8)
    victim = rs.replicas[1]
    victim.stop(sig=9)  # SIGKILL: no draining, requests in flight break
    worker.join(timeout=300)
    assert not worker.is_alive()
    assert not errors, errors
    check_all(rs, result, blobs, prefix)
    print(f"{storage}: replica killed mid-run; {len(log)} requests retried by the clients")
    deadline = time.monotonic() + 10  # haproxy: a check every 500 ms, down after 2 failures
    states = rs.proxy.backend_states()
    while states.get("r1") != "DOWN" and time.monotonic() < deadline:
        time.sleep(0.2)
        states = rs.proxy.backend_states()
    assert states.get("r1") == "DOWN" and states.get("r0") == "UP", states


def test_redis_stopped_mid_run(replica_set: ReplicaFactory, tmp_path: Path) -> None:
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    try:
        rs = replica_set(storage="s3", redis=redis)
        rng = random.Random(13)
        blobs = [rng.randbytes(512 * KiB + i) for i in range(PUSHES)]
        prefix = f"scale/redis-{random.getrandbits(32):08x}"
        log: list[str] = []
        first = push_all(rs, blobs[:10], prefix, log)
        redis.stop()
        second = push_all(rs, blobs, prefix, log)  # 10 again (cached before) and 10 new
        assert first.items() <= second.items()
        check_all(rs, second, blobs, prefix)
        assert not log, log
        warned = sum("redis cache at" in r.log_tail(5_000_000) for r in rs.replicas)
        assert warned >= 1
        health = requests.get(f"{rs.url}/debug/health", timeout=30)
        assert health.status_code == 200 and health.json()["cache"]["kind"] == "redis"
    finally:
        redis.stop()
