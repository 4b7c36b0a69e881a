"""The catalog of a bucket with ~2000 repositories: what a catalog request costs on S3.

Measures (printed; no timing is asserted, these VMs vary too much) the first catalog call on a
bucket nobody indexed yet (one reconciliation walk), then full and paged catalog calls served
from the repository index, and the reference registry's catalog on the same bucket (a directory
walk per request). S3 requests are counted from moto's request log. What a page costs in a
bucket of 100,000 repositories is asserted in test_catalog_100k.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support.images import build_platform_image, push_blob, push_manifest
from support.servers import RegistryProcess, reference_available
from support.stores import MotoServer
from support.waiting import eventually

from cargohold.storage import paths

Factory = Callable[..., RegistryProcess]
REPOSITORIES = 2000
DIGEST = "sha256:" + "ab" * 32


def name_of(i: int) -> str:
    return f"team{i % 20:02d}/app-{i:05d}"


@pytest.fixture
def big_moto(tmp_path: Path) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path / "moto")
    server.start()
    yield server
    server.stop()


def requests_served(moto: MotoServer) -> int:
    return moto.log_tail(1 << 30).count(' HTTP/1.1" ')


def populate(moto: MotoServer, bucket: str) -> None:
    """A layer link, a revision and a tag per repository: what registry:2 leaves behind."""
    client = moto.client()
    hexpart = DIGEST.split(":")[1]

    def one(i: int) -> None:
        base = f"docker/registry/v2/repositories/{name_of(i)}"
        for key in (
            f"{base}/_layers/sha256/{hexpart}/link",  # what registry:2.8's catalog looks for
            f"{base}/_manifests/revisions/sha256/{hexpart}/link",  # what cargohold's does
            f"{base}/_manifests/tags/latest/current/link",
        ):
            client.put_object(Bucket=bucket, Key=key, Body=DIGEST.encode())

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(one, range(REPOSITORIES)))


def full_catalog(url: str) -> tuple[list[str], int]:
    """Every repository, following ``Link`` pages of 1000; returns (names, calls)."""
    names: list[str] = []
    nxt: str | None = f"{url}/v2/_catalog?n=1000"
    calls = 0
    while nxt:
        r = requests.get(nxt, timeout=600)
        assert r.status_code == 200, r.text
        calls += 1
        names += r.json()["repositories"]
        link = r.headers.get("Link")
        nxt = url + link.split(";")[0].strip("<> ") if link else None
    return names, calls


def measure(moto: MotoServer, what: Callable[[], object]) -> tuple[float, int, object]:
    before = requests_served(moto)
    started = time.perf_counter()
    result = what()
    elapsed = time.perf_counter() - started
    time.sleep(0.2)  # let moto flush its log
    return elapsed, requests_served(moto) - before, result


def test_catalog_of_2000_repositories(
    big_moto: MotoServer, make_registry: Factory, make_reference_registry: Factory
) -> None:
    bucket = big_moto.new_bucket("catalog")
    started = time.perf_counter()
    populate(big_moto, bucket)
    print(f"\npopulated {REPOSITORIES} repositories in {time.perf_counter() - started:.1f}s")
    storage = {"storage": big_moto.storage_section(bucket)}
    reg = make_registry(config=storage)
    expected = sorted((name_of(i) for i in range(REPOSITORIES)), key=lambda n: n.split("/"))
    rows: list[tuple[str, float, int]] = []

    t, n, result = measure(big_moto, lambda: full_catalog(reg.url))
    names, calls = result  # type: ignore[misc]
    assert names == expected
    rows.append((f"cargohold, first catalog (walk; index written after), {calls} pages", t, n))
    built = paths.CATALOG_BUILT.lstrip("/")
    eventually(lambda: built in big_moto.keys(bucket, built), timeout=120, interval=0.5)
    for _ in range(2):
        t, n, result = measure(big_moto, lambda: full_catalog(reg.url))
        assert result[0] == expected  # type: ignore[index]
        rows.append((f"cargohold, full catalog from the index, {calls} pages", t, n))
    t, n, page = measure(
        big_moto, lambda: requests.get(f"{reg.url}/v2/_catalog?n=100", timeout=60).json()
    )
    assert page["repositories"] == expected[:100]  # type: ignore[index]
    rows.append(("cargohold, one page of 100 from the index", t, n))
    last = expected[1234]
    t, n, page = measure(
        big_moto,
        lambda: requests.get(f"{reg.url}/v2/_catalog?n=100&last={last}", timeout=60).json(),
    )
    assert page["repositories"] == expected[1235:1335]  # type: ignore[index]
    rows.append(("cargohold, one page of 100 after the 1235th, from the index", t, n))

    # A push shows up at once (the index is kept on push), on this and other replicas: pages
    # are read from the index itself, never from a list a replica keeps.
    other = make_registry(config=storage)
    image = build_platform_image(5)
    for blob in image.blobs:
        push_blob(reg.url, "zz/new-repository", blob.data)
    push_manifest(reg.url, "zz/new-repository", "v1", image.manifest.data)
    names, _ = full_catalog(other.url)
    assert names[-1] == "zz/new-repository" and len(names) == REPOSITORIES + 1
    names, _ = full_catalog(reg.url)
    assert names[-1] == "zz/new-repository" and len(names) == REPOSITORIES + 1

    if reference_available():
        ref = make_reference_registry(config=storage)
        t, n, result = measure(
            big_moto,
            lambda: requests.get(f"{ref.url}/v2/_catalog?n=1000", timeout=600).json(),
        )
        assert len(result["repositories"]) == 1000  # type: ignore[index]
        rows.append(("reference registry, first page of 1000 (walks the bucket)", t, n))

    print(f"\ncatalog of {REPOSITORIES + 1} repositories on S3 (moto, loopback):")
    for what, seconds, count in rows:
        print(f"  {what:62s} {seconds * 1000:9.0f} ms  {count:6d} S3 requests")
