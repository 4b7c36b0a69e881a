"""Upload ingestion on a real filesystem store: bodies in any chunking come out byte-exact, and
the shared buffer pool stays bounded and gets every buffer back, even when a write fails."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cargohold.digest import Digest
from cargohold.registry.blobs import BlobStore
from cargohold.registry.buffers import BufferPool
from cargohold.registry.readinto import ChunkBody
from cargohold.registry.uploads import UploadManager
from cargohold.storage import paths
from cargohold.storage.filesystem import FilesystemDriver

MiB = 1 << 20


def manager(root: Path, buffers: int = 2, size: int = 256 * 1024) -> UploadManager:
    driver = FilesystemDriver(str(root))
    uploads = UploadManager(driver, BlobStore(driver))
    uploads.buffers = BufferPool(buffers, size, patience=60)
    return uploads


def chunks(data: bytes, sizes: list[int]) -> ChunkBody:
    return ChunkBody(pieces(data, sizes))


async def pieces(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        yield data[pos : pos + n]
        pos += n
        i += 1
        await asyncio.sleep(0)  # let other uploads interleave, as sockets would


def test_pool_never_makes_more_than_its_count_and_serves_waiters_in_order() -> None:
    async def main() -> None:
        pool = BufferPool(2, 16)
        a, b = await pool.acquire(), await pool.acquire()
        order: list[str] = []

        async def wait(tag: str) -> None:
            buf = await pool.acquire()
            order.append(tag)
            pool.release(buf)

        first = asyncio.create_task(wait("first"))
        second = asyncio.create_task(wait("second"))
        await asyncio.sleep(0)
        assert pool.made == 2 and not first.done()
        pool.release(a)
        await asyncio.gather(first, second)
        assert order == ["first", "second"]
        pool.release(b)
        assert pool.made == 2 and pool.idle == 2

    asyncio.run(main())


def test_shrink_lets_go_of_buffers_unused_for_a_whole_round() -> None:
    """The memory upkeep's rounds: buffers taken since the last round stay; free buffers that
    sat out a whole round go (the pool makes them again); a buffer in use is never touched."""

    async def main() -> None:
        pool = BufferPool(2, 16)
        a, b = await pool.acquire(), await pool.acquire()
        pool.release(b)
        assert pool.shrink() == 0 and pool.made == 2  # taken this round
        assert pool.shrink() == 1  # b sat out a round; a is in use
        assert pool.made == 1 and pool.idle == 0
        pool.release(a)
        assert pool.shrink() == 1 and pool.made == 0 and pool.idle == 0
        c, d = await pool.acquire(), await pool.acquire()  # made again, up to the count
        assert pool.made == 2 and len(c) == len(d) == 16
        third = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0)
        assert not third.done()  # still bounded by the count
        pool.release(c)
        assert (await third) is c
        pool.release(c)
        pool.release(d)

    asyncio.run(main())


def test_a_buffer_handed_to_a_cancelled_waiter_is_not_lost() -> None:
    async def main() -> None:
        pool = BufferPool(1, 16)
        held = await pool.acquire()
        waiter = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0)
        pool.release(held)  # handed to the waiter...
        waiter.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert pool.idle == 1
        assert await asyncio.wait_for(pool.acquire(), 1) is held

    asyncio.run(main())


@pytest.mark.parametrize(
    "sizes",
    [[1], [7, 65536, 300_000], [3 * MiB], [256 * 1024], [100, 256 * 1024 - 100], [MiB + 1]],
    ids=["bytes", "mixed", "bigger-than-buffer", "exact", "straddling", "odd"],
)
def test_any_chunking_is_stored_and_hashed_exactly(tmp_path: Path, sizes: list[int]) -> None:
    data = random.Random(len(sizes) * 31 + sizes[0]).randbytes(1 * MiB + 12345)
    if sizes == [1]:
        data = data[:5000]
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())

    async def main() -> None:
        uploads = manager(tmp_path)
        upload_id = await uploads.start("r")
        await uploads.append("r", upload_id, chunks(data, sizes))
        info = await uploads.finish("r", upload_id, digest)
        assert info.size == len(data)
        assert uploads.buffers.idle == uploads.buffers.made <= 2

    asyncio.run(main())
    stored = tmp_path / paths.blob_data(digest).lstrip("/")
    assert stored.read_bytes() == data


def test_many_concurrent_uploads_share_a_small_pool(tmp_path: Path) -> None:
    bodies = [os.urandom(700_000 + i * 4099) for i in range(12)]

    async def one(uploads: UploadManager, i: int) -> None:
        body = bodies[i]
        upload_id = await uploads.start(f"r{i}")
        half = len(body) // 2
        await uploads.append(f"r{i}", upload_id, chunks(body[:half], [65536, 1000]), 0, half)
        rest = chunks(body[half:], [200_000])
        digest = Digest("sha256", hashlib.sha256(body).hexdigest())
        await uploads.finish(f"r{i}", upload_id, digest, rest, half)

    async def main() -> None:
        uploads = manager(tmp_path, buffers=2)
        await asyncio.gather(*(one(uploads, i) for i in range(len(bodies))))
        assert uploads.buffers.made == 2
        assert uploads.buffers.idle == 2

    asyncio.run(main())
    for body in bodies:
        digest = Digest("sha256", hashlib.sha256(body).hexdigest())
        assert (tmp_path / paths.blob_data(digest).lstrip("/")).read_bytes() == body


def test_a_failing_write_returns_its_buffer_and_the_upload_recovers(tmp_path: Path) -> None:
    data = os.urandom(2 * MiB)
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())

    async def main() -> None:
        uploads = manager(tmp_path)
        upload_id = await uploads.start("r")
        # A full disk, for real: the upload's data file is /dev/full, whose writes fail ENOSPC.
        data_file = tmp_path / paths.upload_data("r", upload_id).lstrip("/")
        data_file.unlink()
        data_file.symlink_to("/dev/full")
        with pytest.raises(OSError) as failed:
            await uploads.append("r", upload_id, chunks(data, [300_000]))
        assert failed.value.errno == errno.ENOSPC
        assert uploads.buffers.made >= 1
        assert uploads.buffers.idle == uploads.buffers.made
        assert not (tmp_path / paths.blob_data(digest).lstrip("/")).exists()
        # Space is back (an empty data file again): the client's retry of the whole body
        # goes through, hashed from what is really stored, not from the failed attempt.
        data_file.unlink()
        data_file.write_bytes(b"")
        await uploads.append("r", upload_id, chunks(data, [300_000]), 0, len(data))
        await uploads.finish("r", upload_id, digest)
        assert uploads.buffers.idle == uploads.buffers.made

    asyncio.run(main())
    assert (tmp_path / paths.blob_data(digest).lstrip("/")).read_bytes() == data


def test_a_client_sitting_on_a_buffer_delays_others_only_briefly() -> None:
    async def main() -> None:
        pool = BufferPool(1, 16, patience=0.05)
        held = await pool.acquire()  # a client that went quiet mid-body
        extra = await asyncio.wait_for(pool.acquire(), 5)
        assert extra is not held and pool.made == 2
        pool.release(extra)  # the extra one is let go...
        pool.release(held)  # ...the pooled one kept
        assert pool.made == 1 and pool.idle == 1

    asyncio.run(main())
