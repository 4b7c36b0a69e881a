"""The blob descriptor cache: Redis shared by replicas (namespaced by storage, invalidated on
delete, optional when down) and the in-memory variant."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from support.images import build_platform_image, get_manifest, push_blob, push_manifest
from support.servers import RegistryProcess, unique_repo
from support.stores import MotoServer, RedisServer

S3RegistryFactory = Callable[..., RegistryProcess]


def redis_config(redis: RedisServer) -> dict[str, object]:
    return {
        "storage": {"cache": {"blobdescriptor": "redis"}},
        "redis": {"addr": redis.addr, "dialtimeout": "500ms", "readtimeout": "500ms"},
    }


def push(url: str, name: str, seed: int, tag: str = "v1") -> str:
    image = build_platform_image(seed)
    for blob in image.blobs:
        push_blob(url, name, blob.data)
    push_manifest(url, name, tag, image.manifest.data)
    return image.manifest_digest


def tag_digest(url: str, name: str, tag: str) -> str | None:
    r = get_manifest(url, name, tag)
    return r.headers["Docker-Content-Digest"] if r.status_code == 200 else None


def cache_keys(redis: RedisServer) -> list[str]:
    return redis.command_line("--scan", "--pattern", "cargohold:*").split()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_entries_are_namespaced_by_storage(
    s3_registry: S3RegistryFactory, redis_server: RedisServer
) -> None:
    """Two registries on different buckets share one Redis: same repository and tag names,
    different images, and neither ever answers with the other's."""
    a = s3_registry(config=redis_config(redis_server))
    b = s3_registry(config=redis_config(redis_server))
    name = unique_repo("cache/same-name")
    da, db = push(a.url, name, 301), push(b.url, name, 302)
    for _ in range(2):  # second round answered from the cache
        assert tag_digest(a.url, name, "v1") == da
        assert tag_digest(b.url, name, "v1") == db
    keys = [k for k in cache_keys(redis_server) if name in k or "/blobs/" in k]
    namespaces = {k.split(":")[1] for k in keys}
    assert len(namespaces) >= 2
    kinds = " ".join(keys)
    assert "/_layers/" in kinds and "/_manifests/tags/v1/current/link" in kinds
    assert "/docker/registry/v2/blobs/" in kinds


def test_replicas_see_each_others_changes_at_once(
    s3_registry: S3RegistryFactory, moto: MotoServer, redis_server: RedisServer
) -> None:
    bucket = moto.new_bucket("shared")
    a = s3_registry(bucket=bucket, config=redis_config(redis_server))
    b = s3_registry(bucket=bucket, config=redis_config(redis_server))
    name = unique_repo("cache/replicas")
    first = push(a.url, name, 311)
    assert tag_digest(b.url, name, "v1") == first  # b caches tag -> digest
    second = push(a.url, name, 312)  # the tag moves on a
    assert tag_digest(b.url, name, "v1") == second
    layer = build_platform_image(312).layer_digests[0]
    blob = f"/v2/{name}/blobs/{layer}"
    assert requests.head(b.url + blob, timeout=30).status_code == 200  # b caches the link
    assert requests.delete(a.url + blob, timeout=30).status_code == 202
    assert requests.head(b.url + blob, timeout=30).status_code == 404
    assert requests.delete(f"{a.url}/v2/{name}/manifests/{second}", timeout=30).status_code == 202
    assert get_manifest(b.url, name, second).status_code == 404
    assert tag_digest(b.url, name, "v1") is None


def test_requests_work_while_redis_is_down(
    s3_registry: S3RegistryFactory, own_redis: RedisServer
) -> None:
    reg = s3_registry(config=redis_config(own_redis))
    name = unique_repo("cache/down")
    digest = push(reg.url, name, 321)
    assert tag_digest(reg.url, name, "v1") == digest
    assert cache_keys(own_redis)
    own_redis.stop()
    started = time.monotonic()
    for i in range(5):
        assert tag_digest(reg.url, name, "v1") == digest
        push(reg.url, unique_repo("cache/down"), 330 + i)
    elapsed = time.monotonic() - started
    health = requests.get(f"{reg.url}/debug/health", timeout=30)
    assert health.status_code == 200
    assert health.json()["cache"]["status"].startswith("unavailable")
    warnings = reg.log_tail(200_000).count("redis cache at")
    assert 1 <= warnings <= 3, reg.log_tail()  # rate-limited, not one per request
    own_redis.start()  # same port: the cache comes back without a restart
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not cache_keys(own_redis):
        assert tag_digest(reg.url, name, "v1") == digest
        time.sleep(0.3)
    assert cache_keys(own_redis)
    print(f"5 pulls + 5 pushes with Redis down: {elapsed:.2f}s")


def test_inmemory_cache_on_s3(s3_registry: S3RegistryFactory) -> None:
    reg = s3_registry(config={"storage": {"cache": {"blobdescriptor": "inmemory"}}})
    name = unique_repo("cache/inmemory")
    digest = push(reg.url, name, 341)
    for _ in range(2):
        assert tag_digest(reg.url, name, "v1") == digest
    layer = build_platform_image(341).layer_digests[0]
    blob = f"{reg.url}/v2/{name}/blobs/{layer}"
    assert requests.head(blob, timeout=30).status_code == 200
    assert requests.delete(blob, timeout=30).status_code == 202
    assert requests.head(blob, timeout=30).status_code == 404


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def test_redis_over_tls(tmp_path: Path) -> None:
    """redis.tls.enabled with the server's CA in redis.tls.clientcas; without it, no cache."""
    import asyncio
    import shutil

    from cargohold.config import RedisConfig
    from cargohold.storage.rediscache import RedisCache

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=cargohold-test-ca", cwd=tmp_path)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
             "-subj", "/CN=127.0.0.1", cwd=tmp_path)  # fmt: skip
    (tmp_path / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "srv.crt", "-days", "2", "-extfile", "ext",
             cwd=tmp_path)  # fmt: skip

    class TlsRedis(RedisServer):
        def command(self) -> list[str]:
            return [
                "redis-server", "--port", "0", "--tls-port", str(self.port), "--bind",
                "127.0.0.1", "--tls-cert-file", str(tmp_path / "srv.crt"), "--tls-key-file",
                str(tmp_path / "srv.key"), "--tls-ca-cert-file", str(tmp_path / "ca.crt"),
                "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
            ]  # fmt: skip

        def ready(self) -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

    server = TlsRedis(tmp_path / "redis")
    server.start()

    async def go() -> tuple[str, str | None, str]:
        trusted = RedisCache(
            RedisConfig(
                addr=f"127.0.0.1:{server.port}",
                tls_enabled=True,
                tls_clientcas=[str(tmp_path / "ca.crt")],
            )
        )
        stranger = RedisCache(RedisConfig(addr=f"127.0.0.1:{server.port}", tls_enabled=True))
        try:
            state = await trusted.check()
            await trusted.put("cargohold:test:key", "value", 30)
            return state, await trusted.get("cargohold:test:key"), await stranger.check()
        finally:
            await trusted.close()
            await stranger.close()

    try:
        state, value, refused = asyncio.run(go())
    finally:
        server.stop()
    assert (state, value) == ("ok", "value")
    assert refused.startswith("unavailable") and "CERTIFICATE_VERIFY_FAILED" in refused
