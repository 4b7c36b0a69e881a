"""A replica's local blob cache (``storage.cache.blobdir``) on S3 with redirects off.

cargohold runs on moto through the fault proxy (``support.faultproxy``), which counts the S3
requests: a blob is fetched from the bucket once per replica (concurrent GETs of a blob being
filled wait for that fill) and sent from the local file afterwards. The registry's own checks
still answer first: a blob deleted through the API, or whose data left the bucket, is 404
although its bytes are cached. Bytes altered in the bucket are never cached. Eviction at the
size bound does not cut a client that is still reading the evicted file.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support.faultproxy import FaultProxy, blob_key, sha256
from support.images import push_blob
from support.pausing import held
from support.servers import RegistryProcess, free_port, unique_repo
from support.stores import MotoServer
from support.waiting import eventually

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from ops.helpers import run_cli  # noqa: E402

Factory = Callable[..., RegistryProcess]
TIMEOUT = 120


def start(
    proxy: FaultProxy,
    make_registry: Factory,
    moto: MotoServer,
    blobdir: Path,
    size: str = "1GiB",
    workers: int = 1,
    redirect: bool = False,
    env: dict[str, str] | None = None,
) -> RegistryProcess:
    bucket = moto.new_bucket("blobcache")
    debug = f"127.0.0.1:{free_port()}"
    storage = {
        **proxy.storage_section(bucket),
        "redirect": {"disable": not redirect},
        "delete": {"enabled": True},
        "cache": {"blobdir": str(blobdir), "blobdirsize": size},
    }
    reg = make_registry(
        config={
            "storage": storage,
            "http": {"debug": {"addr": debug, "prometheus": {"enabled": True}}},
        },
        workers=workers,
        env=env,
    )
    reg.bucket = bucket  # type: ignore[attr-defined]
    reg.debug = debug  # type: ignore[attr-defined]
    return reg


def push(reg: RegistryProcess, name: str, data: bytes) -> str:
    """The blob's URL after a POST + PUT upload (registry:2 takes no single-request one)."""
    return f"{reg.url}/v2/{name}/blobs/{push_blob(reg.url, name, data, timeout=TIMEOUT)}"


def gets_of(proxy: FaultProxy, data: bytes) -> int:
    """S3 GetObject requests for ``data``'s blob so far."""
    key = blob_key(sha256(data))
    with proxy._lock:
        return sum(1 for s in proxy.seen if s.method == "GET" and key in s.path_qs)


def cached(blobdir: Path) -> list[str]:
    return sorted(p.name for p in blobdir.iterdir())


def metric(reg: RegistryProcess, name: str, labels: str) -> float:
    text = requests.get(f"http://{reg.debug}/metrics", timeout=TIMEOUT).text  # type: ignore[attr-defined]
    m = re.search(rf"^{name}{{{labels}}} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture
def blobdir(tmp_path: Path) -> Path:
    return tmp_path / "blobcache"


def test_a_blob_is_fetched_once_then_sent_from_the_local_file(
    proxy: FaultProxy, make_registry: Factory, moto: MotoServer, blobdir: Path
) -> None:
    reg = start(proxy, make_registry, moto, blobdir)
    data = os.urandom(6 << 20)
    url = push(reg, unique_repo("bc/once"), data)
    assert cached(blobdir) == []  # pushes do not fill it
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: requests.get(url, timeout=TIMEOUT), range(8)))
    assert all(r.status_code == 200 and r.content == data for r in bodies)
    assert gets_of(proxy, data) == 1  # one fill; the others waited for it
    assert cached(blobdir) == [f"sha256-{sha256(data)[7:]}"]
    for _ in range(3):
        again = requests.get(url, timeout=TIMEOUT)
        assert again.status_code == 200 and again.content == data
        assert again.headers["Docker-Content-Digest"] == sha256(data)
    part = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=TIMEOUT)
    assert part.status_code == 206 and part.content == data[100:200]
    head = requests.head(url, timeout=TIMEOUT)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
    assert gets_of(proxy, data) == 1  # nothing more from the bucket
    assert metric(reg, "registry_storage_cache_total", 'cache="blobdir",type="hit"') >= 11
    assert metric(reg, "cargohold_blob_cache_fills_total", 'result="stored"') == 1


def test_workers_of_one_host_fill_a_blob_once(
    proxy: FaultProxy, make_registry: Factory, moto: MotoServer, blobdir: Path
) -> None:
    """Two workers, one cache directory: one of them fills (its part file is O_EXCL); the
    other streams from S3 meanwhile, then both send the file."""
    reg = start(proxy, make_registry, moto, blobdir, workers=2)
    data = os.urandom(6 << 20)
    url = push(reg, unique_repo("bc/workers"), data)
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(lambda _: requests.get(url, timeout=TIMEOUT), range(8)))
    assert all(r.status_code == 200 and r.content == data for r in bodies)
    assert metric(reg, "cargohold_blob_cache_fills_total", 'result="stored"') == 1
    assert cached(blobdir) == [f"sha256-{sha256(data)[7:]}"]
    fetched = gets_of(proxy, data)
    assert 1 <= fetched <= 8
    for _ in range(4):  # both workers, by now
        assert requests.get(url, timeout=TIMEOUT).content == data
    assert gets_of(proxy, data) == fetched


def test_deleted_or_collected_blob_is_404_though_cached(
    proxy: FaultProxy, make_registry: Factory, moto: MotoServer, blobdir: Path
) -> None:
    reg = start(proxy, make_registry, moto, blobdir)
    name = unique_repo("bc/deleted")
    deleted, collected = os.urandom(300_000), os.urandom(300_001)
    for data in (deleted, collected):
        url = push(reg, name, data)
        assert requests.get(url, timeout=TIMEOUT).content == data
    assert len(cached(blobdir)) == 2
    r = requests.delete(f"{reg.url}/v2/{name}/blobs/{sha256(deleted)}", timeout=TIMEOUT)
    assert r.status_code == 202
    assert_unknown(reg, name, deleted)  # its data is still in the bucket: the link answered
    # No manifest refers to it: the collection deletes its data from the bucket.
    run_cli("garbage-collect", str(reg.config_path), "--quiet")
    assert blob_key(sha256(collected)) not in moto.keys(reg.bucket)  # type: ignore[attr-defined]
    assert_unknown(reg, name, collected)
    assert len(cached(blobdir)) == 2  # the bytes are still here: the checks answered


def assert_unknown(reg: RegistryProcess, name: str, data: bytes) -> None:
    for method in ("GET", "HEAD"):
        gone = requests.request(
            method, f"{reg.url}/v2/{name}/blobs/{sha256(data)}", timeout=TIMEOUT
        )
        assert gone.status_code == 404, (method, gone.status_code)
        if method == "GET":
            assert gone.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_bytes_altered_in_the_bucket_are_not_cached(
    proxy: FaultProxy, make_registry: Factory, moto: MotoServer, blobdir: Path
) -> None:
    reg = start(proxy, make_registry, moto, blobdir)
    data = os.urandom(2 << 20)
    url = push(reg, unique_repo("bc/altered"), data)
    altered = bytearray(data)
    altered[1 << 20] ^= 0xFF
    client, key = moto.client(), blob_key(sha256(data))
    client.put_object(Bucket=reg.bucket, Key=key, Body=bytes(altered))  # type: ignore[attr-defined]
    for _ in range(2):
        try:
            got = requests.get(url, timeout=TIMEOUT)
        except requests.exceptions.ChunkedEncodingError:
            pass  # cut mid-body
        else:
            assert len(got.content) < len(data), got.status_code
    assert cached(blobdir) == []  # neither the file nor a part file
    assert metric(reg, "cargohold_blob_cache_fills_total", 'result="mismatch"') == 2
    client.put_object(Bucket=reg.bucket, Key=key, Body=data)  # type: ignore[attr-defined]
    good = requests.get(url, timeout=TIMEOUT)
    assert good.status_code == 200 and good.content == data
    assert len(cached(blobdir)) == 1


def test_eviction_at_the_bound_leaves_a_slow_reader_its_bytes(
    proxy: FaultProxy, make_registry: Factory, moto: MotoServer, blobdir: Path
) -> None:
    reg = start(proxy, make_registry, moto, blobdir, size="20MiB")
    name = unique_repo("bc/evict")
    first, second = os.urandom(16 << 20), os.urandom(16 << 20)
    url_first, url_second = push(reg, name, first), push(reg, name, second)
    assert requests.get(url_first, timeout=TIMEOUT).content == first  # filled
    first_file = blobdir / f"sha256-{sha256(first)[7:]}"
    assert first_file.exists()
    with requests.get(url_first, stream=True, timeout=TIMEOUT) as slow:  # a hit, sent by sendfile
        assert slow.status_code == 200
        head = slow.raw.read(64 << 10)
        assert requests.get(url_second, timeout=TIMEOUT).content == second  # fills: over 20 MiB
        eventually(lambda: not first_file.exists(), timeout=60)  # the least recently used went
        rest = slow.raw.read()
    assert head + rest == first
    assert cached(blobdir) == [f"sha256-{sha256(second)[7:]}"]
    assert metric(reg, "cargohold_blob_cache_bytes_total", 'type="evicted"') == len(first)
    again = requests.get(url_first, timeout=TIMEOUT)  # fetched again, and served whole
    assert again.status_code == 200 and again.content == first


def test_a_file_evicted_between_lookup_and_open_is_a_miss(
    proxy: FaultProxy, make_registry: Factory, moto: MotoServer, blobdir: Path, tmp_path: Path
) -> None:
    """The sweep may remove a cached file at any moment. One removed after a GET found it and
    before it was opened is fetched from the bucket as a miss (it was an empty 404). The server
    is held exactly there (``CARGOHOLD_PAUSE_AT``) while the test removes the file."""
    fifo = tmp_path / "pause"
    os.mkfifo(fifo)
    reg = start(
        proxy, make_registry, moto, blobdir, env={"CARGOHOLD_PAUSE_AT": f"blobcache-found:{fifo}"}
    )
    data = os.urandom(1 << 20)
    url = push(reg, unique_repo("bc/vanish"), data)
    assert requests.get(url, timeout=TIMEOUT).content == data  # a miss: fetched and filled
    cached_file = blobdir / f"sha256-{sha256(data)[7:]}"
    eventually(cached_file.exists, timeout=60)
    assert gets_of(proxy, data) == 1

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(requests.get, url, timeout=TIMEOUT)  # a hit: found, then held
        with held(fifo):
            cached_file.unlink()  # as the sweep would
        resp = pending.result()
    assert resp.status_code == 200 and resp.content == data
    assert resp.headers["Docker-Content-Digest"] == sha256(data)
    assert gets_of(proxy, data) == 2  # streamed from the bucket, as a miss


def test_redirected_gets_do_not_use_it(
    proxy: FaultProxy, make_registry: Factory, moto: MotoServer, blobdir: Path
) -> None:
    reg = start(proxy, make_registry, moto, blobdir, redirect=True)
    data = os.urandom(100_000)
    url = push(reg, unique_repo("bc/redirect"), data)
    for _ in range(2):
        r = requests.get(url, allow_redirects=False, timeout=TIMEOUT)
        assert r.status_code == 307 and r.headers["Location"].startswith(proxy.endpoint)
    assert cached(blobdir) == []
    assert gets_of(proxy, data) == 0


def test_part_files_of_a_dead_process_are_removed_at_start(
    proxy: FaultProxy, make_registry: Factory, moto: MotoServer, blobdir: Path
) -> None:
    blobdir.mkdir()
    stale = blobdir / f"sha256-{'ab' * 32}.part"
    stale.write_bytes(b"half a blob")
    start(proxy, make_registry, moto, blobdir)
    assert not stale.exists()


def test_the_reference_registry_starts_with_the_setting(
    moto: MotoServer, make_reference_registry: Factory, tmp_path: Path
) -> None:
    """registry:2 ignores the extension: it starts and serves with it in its config."""
    bucket = moto.new_bucket("bcref")
    storage = {
        **moto.storage_section(bucket),
        "cache": {"blobdescriptor": "inmemory", "blobdir": str(tmp_path), "blobdirsize": "1GiB"},
    }
    env = {"REGISTRY_STORAGE_CACHE_BLOBDIRSIZE": "2GiB"}
    ref = make_reference_registry(config={"storage": storage}, env=env)
    data = os.urandom(1000)
    url = push(ref, unique_repo("bc/ref"), data)
    r = requests.get(url, timeout=TIMEOUT, allow_redirects=True)
    assert r.status_code == 200 and r.content == data
