"""The layers over a driver (cache, repository index): complete delegation and invalidation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from cargohold.registry.gc import invalidate_cached
from cargohold.registry.repoindex import IndexingDriver
from cargohold.storage import paths
from cargohold.storage.cache import CachingDriver, InMemoryCache, _InvalidatingWriter, classify
from cargohold.storage.driver import FileWriter, PathNotFoundError, StorageDriver
from cargohold.storage.filesystem import FilesystemDriver
from cargohold.storage.inmemory import InMemoryDriver
from cargohold.storage.wrapper import DriverWrapper

T = TypeVar("T")
REPO = f"{paths.REPOSITORIES}/team/app"
LINK = f"{REPO}/_layers/sha256/{'a' * 64}/link"
TAG = f"{REPO}/_manifests/tags/v1/current/link"
BLOB = f"{paths.BLOBS}/sha256/aa/{'a' * 64}/data"


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def public(cls: type) -> set[str]:
    return {
        name
        for name, value in vars(cls).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    }


@pytest.mark.parametrize(
    ("base", "wrapper"), [(StorageDriver, DriverWrapper), (FileWriter, _InvalidatingWriter)]
)
def test_wrappers_forward_every_operation(base: type, wrapper: type) -> None:
    """A new driver operation must be forwarded, or a layer silently drops it (a lock, say)."""
    assert public(base) - public(wrapper) == set()


def test_classify() -> None:
    assert classify(LINK) == "layer"
    assert classify(TAG) == "tag"
    assert classify(BLOB) == "blob"
    assert classify(f"{REPO}/_manifests/revisions/sha256/{'b' * 64}/link") == "revision"
    assert classify(f"{REPO}/_uploads/x/data") is None
    assert classify(f"{REPO}/_manifests/tags/v1/index/sha256/{'b' * 64}/link") is None


def test_cache_never_serves_a_deleted_file(tmp_path: Path) -> None:
    async def go() -> None:
        base = FilesystemDriver(str(tmp_path))
        cache = InMemoryCache()
        cached = CachingDriver(base, cache)
        await cached.put_content(LINK, b"sha256:" + b"a" * 64)
        await cached.put_content(TAG, b"sha256:" + b"b" * 64)
        assert (await cached.stat(LINK)).size == 71
        assert await cached.get_content(TAG) == b"sha256:" + b"b" * 64  # not cached in memory
        # Behind the cache's back (another replica): the in-memory copy still answers...
        await base.delete(LINK.rsplit("/", 1)[0])
        assert (await cached.stat(LINK)).size == 71
        # ...but a delete through the layer drops it, and a racing refill is refused.
        await base.put_content(LINK, b"x")
        await cached.delete(LINK.rsplit("/", 1)[0])
        with pytest.raises(PathNotFoundError):
            await cached.stat(LINK)
        await cache.fill(cached.prefix + LINK, "71|0|", None)  # a stale refill
        with pytest.raises(PathNotFoundError):
            await cached.stat(LINK)
        # Deleting the whole repository drops everything below it.
        await cached.put_content(LINK, b"y")
        await cached.stat(LINK)
        await cached.delete(REPO)
        assert not [k for k in cache._entries if k.startswith(cached.prefix + REPO + "/")]

    run(go())


def test_layer_finds_each_driver_in_the_stack(tmp_path: Path) -> None:
    base = FilesystemDriver(str(tmp_path))
    indexed = IndexingDriver(base)
    cached = CachingDriver(indexed, InMemoryCache())
    assert cached.layer(FilesystemDriver) is base
    assert cached.layer(IndexingDriver) is indexed
    assert cached.layer(CachingDriver) is cached
    assert indexed.layer(CachingDriver) is None
    assert base.layer(FilesystemDriver) is base and base.layer(IndexingDriver) is None
    assert cached.layer(InMemoryDriver) is None


def test_gc_invalidates_the_cache_below_an_index(tmp_path: Path) -> None:
    """Online GC drops what another process deleted from the cache, wherever it sits."""

    async def go() -> None:
        base = FilesystemDriver(str(tmp_path))
        cached = CachingDriver(base, InMemoryCache())
        driver = IndexingDriver(cached)
        await driver.put_content(LINK, b"sha256:" + b"a" * 64)
        await driver.stat(LINK)
        await base.delete(LINK)  # behind the cache's back
        assert (await driver.stat(LINK)).size == 71
        await invalidate_cached(driver, [LINK])
        with pytest.raises(PathNotFoundError):
            await driver.stat(LINK)

    run(go())


def test_namespaces_differ_by_storage(tmp_path: Path) -> None:
    a = CachingDriver(FilesystemDriver(str(tmp_path / "a")), InMemoryCache())
    b = CachingDriver(FilesystemDriver(str(tmp_path / "b")), InMemoryCache())
    assert a.prefix != b.prefix and a.prefix.startswith("cargohold:")


def test_index_follows_pushes_and_deletes(tmp_path: Path) -> None:
    def revision(name: str) -> str:
        return f"{paths.REPOSITORIES}/{name}/_manifests/revisions/sha256/{'c' * 64}/link"

    async def go() -> None:
        driver = IndexingDriver(FilesystemDriver(str(tmp_path)))
        index = driver.index
        assert await index.names() == []  # nothing yet: the first call indexes (a walk)
        await driver.put_content(revision("team/app"), b"sha256:" + b"c" * 64)
        await driver.put_content(TAG, b"sha256:" + b"b" * 64)  # (a current link: no entry PUT)
        await driver.put_content(revision("a-c"), b"")
        while index._building is not None:
            await asyncio.sleep(0.01)
        assert await index.names() == ["a-c", "team/app"]
        await driver.delete(f"{REPO}/_manifests")  # S3 has no empty directories left behind
        assert await index.names() == ["a-c"]
        # A tag's index link (the last write of a tag) puts the entry too.
        tag_index = f"{paths.REPOSITORIES}/x/_manifests/tags/t/index/sha256/{'c' * 64}/link"
        await driver.put_content(tag_index, b"")
        assert await index.names() == ["a-c", "x"]
        for name in ("a/b", "a/b/c", "a/b-d", "a0"):
            await driver.put_content(revision(name), b"")
        # registry:2's component order, whole and in pages from anywhere
        everything = ["a/b", "a/b/c", "a/b-d", "a-c", "a0", "x"]
        assert await index.names() == everything
        for i in range(len(everything)):
            for limit in (1, 2, 10):
                page = await index.page(everything[i - 1] if i else None, limit)
                assert page == everything[i : i + limit]
        await driver.delete(f"{paths.REPOSITORIES}/a")  # a namespace, whole
        assert await index.names() == ["a-c", "a0", "x"]
        assert sorted(p.name for p in (tmp_path / paths.CATALOG.lstrip("/")).iterdir()) == [
            "a-c",
            "a0",
            "x",
        ]

    run(go())


def test_reconciliation_is_skipped_while_a_replica_did_one_lately(tmp_path: Path) -> None:
    """Every replica's worker 0 asks every ~10 minutes; the marker says when the last walk of
    the layout ended, so N replicas do not walk it N times as often."""
    from datetime import UTC, datetime, timedelta

    from cargohold.registry.repoindex import RECONCILE_SECONDS, STAMP_FORMAT

    def stamp(age: float) -> bytes:
        return (datetime.now(UTC) - timedelta(seconds=age)).strftime(STAMP_FORMAT).encode()

    async def go() -> None:
        base = FilesystemDriver(str(tmp_path))
        index = IndexingDriver(base).index
        await base.put_content(f"{REPO}/_manifests/revisions/sha256/{'c' * 64}/link", b"")
        await base.put_content(paths.CATALOG_BUILT, stamp(RECONCILE_SECONDS / 2))
        assert await index.reconcile_if_due() is None  # another replica did, 5 minutes ago
        assert await index.names() == []  # (so the repository written behind its back waits)
        await base.put_content(paths.CATALOG_BUILT, stamp(RECONCILE_SECONDS))
        assert await index.reconcile_if_due() == (1, 0)
        assert await index.names() == ["team/app"]
        assert await index.reconcile_if_due() is None  # it just did

    run(go())
