"""A pull storm's simultaneous misses cost the store one request each, not one per client.

When 200 clients ask three replicas for the same manifest and blobs at once, none of the
answers is cached yet: every request used to stat the blob, its repository link and the
revision link in S3 itself (~700 HEADs and GETs for 1,200 requests in ``bench/replica_storm.py``
with redirect on). The blob descriptor cache (:class:`CachingDriver`) now lets concurrent misses
of one file share one store request, ``exists`` of a cached kind is answered from the cache,
and the manifest store shares concurrent loads of one digest. What must not change: an
"absent" answer is never handed to a caller that arrived after the request left (the file may
have been written since, by another replica), and nothing that predates a delete through the
layer is handed out or cached after it.

The store is a real filesystem driver; :class:`Gate` is a layer between it and the cache that
counts the requests reaching the store and can hold the next one until released, so that the
others arrive while it is under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import pytest

from cargohold.config.model import ValidationConfig
from cargohold.digest import Digest
from cargohold.errors import ErrorCode, RegistryError
from cargohold.registry.blobs import BlobStore
from cargohold.registry.manifests import ManifestStore
from cargohold.storage import paths
from cargohold.storage.cache import CachingDriver, InMemoryCache
from cargohold.storage.driver import FileInfo, PathNotFoundError
from cargohold.storage.filesystem import FilesystemDriver
from cargohold.storage.wrapper import DriverWrapper

REPO = f"{paths.REPOSITORIES}/team/app"
LINK = f"{REPO}/_layers/sha256/{'a' * 64}/link"
REVISION = f"{REPO}/_manifests/revisions/sha256/{'b' * 64}/link"
BLOB = f"{paths.BLOBS}/sha256/aa/{'a' * 64}/data"
LINK_BODY = b"sha256:" + b"a" * 64
T = TypeVar("T")


class Gate(DriverWrapper):
    """Counts the stats, exists and reads that reach the store; holds the answers of the next
    ``hold`` of them (taken from the store at once, handed back late) until :meth:`release`."""

    def __init__(self, inner: FilesystemDriver) -> None:
        super().__init__(inner)
        self.calls: Counter[str] = Counter()
        self.hold = 0
        self.entered = asyncio.Event()
        self.released = asyncio.Event()

    async def _pass(self, op: str, answer: Awaitable[T]) -> T:
        self.calls[op] += 1
        held = self.hold > 0
        self.hold -= held
        try:
            return await answer
        finally:
            if held:
                self.entered.set()
                await self.released.wait()

    def release(self) -> None:
        self.released.set()

    async def stat(self, path: str) -> FileInfo:
        return await self._pass("stat", self.inner.stat(path))

    async def exists(self, path: str) -> bool:
        return await self._pass("exists", self.inner.exists(path))

    async def get_content(self, path: str) -> bytes:
        return await self._pass("get_content", self.inner.get_content(path))


async def settle() -> None:
    """Let every task started so far run up to where it waits (no time passes: the loop runs
    each ready task once per turn)."""
    for _ in range(5):
        await asyncio.sleep(0)


def layers(tmp_path: Path) -> tuple[FilesystemDriver, Gate, CachingDriver]:
    base = FilesystemDriver(str(tmp_path))
    gate = Gate(base)
    return base, gate, CachingDriver(gate, InMemoryCache())


def test_concurrent_misses_share_one_stat(tmp_path: Path) -> None:
    async def go() -> None:
        base, gate, cached = layers(tmp_path)
        await base.put_content(BLOB, b"x" * 1000)
        gate.hold = 1
        storm = [asyncio.ensure_future(cached.stat(BLOB)) for _ in range(50)]
        await gate.entered.wait()
        await settle()
        assert gate.calls["stat"] == 1
        gate.release()
        assert {info.size for info in await asyncio.gather(*storm)} == {1000}
        assert (await cached.stat(BLOB)).size == 1000  # and then from the cache
        assert gate.calls["stat"] == 1

    asyncio.run(go())


def test_a_cancelled_first_caller_leaves_the_others_their_answer(tmp_path: Path) -> None:
    async def go() -> None:
        base, gate, cached = layers(tmp_path)
        await base.put_content(LINK, LINK_BODY)
        gate.hold = 1
        first = asyncio.ensure_future(cached.stat(LINK))
        await gate.entered.wait()
        second = asyncio.ensure_future(cached.stat(LINK))
        await settle()
        first.cancel()  # its client went away
        await settle()
        gate.release()
        assert (await second).size == len(LINK_BODY)
        assert gate.calls["stat"] == 1
        with contextlib.suppress(asyncio.CancelledError):
            await first

    asyncio.run(go())


def test_absent_is_not_shared_with_later_callers(tmp_path: Path) -> None:
    """The first stat leaves while the link is missing; another replica writes it; a caller
    arriving now must see it, not the first request's "absent"."""

    async def go() -> None:
        base, gate, cached = layers(tmp_path)
        gate.hold = 1
        first = asyncio.ensure_future(cached.stat(LINK))
        await gate.entered.wait()
        await base.put_content(LINK, LINK_BODY)  # behind the cache: another replica's push
        second = asyncio.ensure_future(cached.stat(LINK))
        await settle()
        gate.release()
        with pytest.raises(PathNotFoundError):
            await first  # it left before the write: either answer was right for it
        assert (await second).size == len(LINK_BODY)
        assert gate.calls["stat"] == 2  # the second asked the store itself

    asyncio.run(go())


def test_nothing_older_than_a_delete_is_shared_or_cached(tmp_path: Path) -> None:
    async def go() -> None:
        base, gate, cached = layers(tmp_path)
        await base.put_content(LINK, LINK_BODY)
        gate.hold = 1
        before = asyncio.ensure_future(cached.stat(LINK))
        await gate.entered.wait()
        await cached.delete(LINK.rsplit("/", 1)[0])  # through the layer, while the stat runs
        with pytest.raises(PathNotFoundError):  # arrived after the delete: not joined to
            await asyncio.wait_for(cached.stat(LINK), 20)  # `before` (which waits for release)
        gate.release()
        await before  # overlapped the delete: "exists" was a right answer for it...
        with pytest.raises(PathNotFoundError):
            await cached.stat(LINK)  # ...but it was not put into the cache

    asyncio.run(go())


def test_exists_of_a_cached_kind_comes_from_the_cache(tmp_path: Path) -> None:
    """The revision link every manifest GET checks: one store request, then the cache."""

    async def go() -> None:
        base, gate, cached = layers(tmp_path)
        await base.put_content(REVISION, b"sha256:" + b"b" * 64)
        assert all([await cached.exists(REVISION) for _ in range(10)])
        assert gate.calls["stat"] + gate.calls["exists"] == 1
        missing = REVISION.replace("b" * 64, "c" * 64)
        assert not await cached.exists(missing)
        assert not await cached.exists(missing)  # "absent" is never cached
        assert gate.calls["stat"] + gate.calls["exists"] == 3
        assert await cached.exists(REPO)  # a directory: the store's own answer
        assert gate.calls["exists"] == 1

    asyncio.run(go())


def test_concurrent_manifest_loads_share_one_read(tmp_path: Path) -> None:
    async def go() -> None:
        base = FilesystemDriver(str(tmp_path))
        gate = Gate(base)
        store = ManifestStore(gate, BlobStore(gate), ValidationConfig())
        data = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": "sha256:" + "1" * 64,
                    "size": 2,
                },
                "layers": [],
            }
        ).encode()
        digest = Digest("sha256", hashlib.sha256(data).hexdigest())
        await base.put_content(paths.blob_data(digest), data)
        gate.hold = 1
        storm = [asyncio.ensure_future(store.load(digest)) for _ in range(40)]
        await gate.entered.wait()
        await settle()
        gate.release()
        assert {m.data for m in await asyncio.gather(*storm)} == {data}
        assert gate.calls["get_content"] == 1
        with pytest.raises(RegistryError) as failed:  # a failed shared read: nothing cached
            await store.load(Digest("sha256", "f" * 64))
        assert failed.value.code is ErrorCode.MANIFEST_UNKNOWN

    asyncio.run(go())
