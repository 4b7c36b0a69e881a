"""Blob uploads: resumable, chunked or monolithic, verified before anything becomes visible.

Python cannot serialise a ``hashlib`` state, so registry:2's trick of saving hash states next to
the upload is not available. Instead each process keeps the running hash of the uploads it is
receiving, keyed by upload id and tagged with the offset it covers and with the store's token for
the bytes it covers (:attr:`FileInfo.token`: S3 gives each committed write a fresh one; the
filesystem has none). When the next chunk (or the final PUT) lands on the same process, hashing
simply continues; when it lands on another worker or replica, that process finds no state, or a
state whose offset or token does not match what the store now holds, and does not trust it.

What it does then depends on where the bytes are:

- **Local storage** (filesystem): it re-hashes the bytes already stored, one sequential local
  read, before continuing. Clients keep their connection alive through an upload and
  ``SO_REUSEPORT`` keeps a connection on one worker, so this is rare.
- **Remote storage** (S3, with replicas behind a load balancer that may send every request of
  an upload to a different replica): re-reading the partial upload on every switch would cost a
  network read of everything so far per chunk. Instead the replica appends without hashing and
  forgets any state it had; at the final PUT, whichever replica receives it computes the digest
  from a state that covers every byte (all chunks went through it, none written elsewhere since,
  as the token proves) or else from one streaming read of the whole upload from the store
  (a ranged GET that resumes if the connection breaks, hashed while the next buffer arrives).

Either way the digest is computed from the bytes actually stored, and the blob is moved to its
content address only after it matches: nothing unverified ever becomes visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cargohold.digest import Digest
from cargohold.errors import ErrorCode, RegistryError
from cargohold.faults import crash_point
from cargohold.registry.blobs import BlobInfo, BlobStore
from cargohold.registry.buffers import BufferPool
from cargohold.registry.readinto import Body, ExactBody
from cargohold.storage import paths
from cargohold.storage.driver import FileInfo, FileWriter, PathNotFoundError, StorageDriver

log = logging.getLogger("cargohold.uploads")

UPLOAD_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
INLINE_LIMIT = 64 * 1024  # below this, hashing on the loop is cheaper than a thread hop
HAND_ON = 256 * 1024  # when others wait for buffers, hand on a partial one from this size
MAX_HASH_STATES = 1024


@dataclass
class _HashState:
    hasher: Any
    offset: int
    token: str | None = None  # the store's FileInfo.token for the bytes hashed so far


def check_upload_id(upload_id: str) -> str:
    if not UPLOAD_ID_RE.match(upload_id):
        raise RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, detail={"uuid": upload_id[:100]})
    return upload_id


class UploadManager:
    def __init__(self, driver: StorageDriver, blobs: BlobStore) -> None:
        self.driver = driver
        self.blobs = blobs
        self._states: OrderedDict[str, _HashState] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self.buffers = BufferPool()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, name: str) -> str:
        upload_id = str(uuid.uuid4())
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await self.driver.put_content(paths.upload_startedat(name, upload_id), started.encode())
        writer = await self.driver.writer(paths.upload_data(name, upload_id))
        await writer.commit()
        await writer.close()
        return upload_id

    async def offset(self, name: str, upload_id: str) -> int:
        """Bytes received so far; BLOB_UPLOAD_UNKNOWN for an unknown or finished upload."""
        return (await self._stat_data(name, upload_id)).size

    async def _stat_data(self, name: str, upload_id: str) -> FileInfo:
        check_upload_id(upload_id)
        try:
            await self.driver.stat(paths.upload_startedat(name, upload_id))
            return await self.driver.stat(paths.upload_data(name, upload_id))
        except PathNotFoundError:
            raise RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, detail={"uuid": upload_id}) from None

    async def started_at(self, name: str, upload_id: str) -> str:
        """The upload's ``startedat`` (RFC 3339), BLOB_UPLOAD_UNKNOWN if there is none."""
        check_upload_id(upload_id)
        try:
            raw = await self.driver.get_content(paths.upload_startedat(name, upload_id))
        except PathNotFoundError:
            raise RegistryError(ErrorCode.BLOB_UPLOAD_UNKNOWN, detail={"uuid": upload_id}) from None
        return raw.decode("ascii", "replace").strip()

    async def cancel(self, name: str, upload_id: str) -> None:
        await self.offset(name, upload_id)
        self._states.pop(upload_id, None)
        with contextlib.suppress(PathNotFoundError):
            await self.driver.delete(paths.upload_dir(name, upload_id))

    async def append(
        self,
        name: str,
        upload_id: str,
        body: Body,
        start: int | None = None,
        length: int | None = None,
    ) -> int:
        """Append a chunk; ``start`` (from Content-Range) must equal the bytes already received.

        A stale or out-of-order chunk answers 416 and writes nothing, so a client that retries a
        chunk it already sent cannot corrupt the upload.
        """
        data_path = paths.upload_data(name, upload_id)
        async with self._lock(upload_id), self.driver.lock(data_path):
            info = await self._stat_data(name, upload_id)
            current = info.size
            if start is not None and start != current:
                raise RegistryError(
                    ErrorCode.RANGE_INVALID,
                    f"chunk starts at {start} but the upload has {current} bytes",
                    headers={"Range": f"0-{current - 1}" if current else "0-0"},
                )
            writer = await self.driver.writer(data_path, append=True)
            if length is not None:
                body = ExactBody(body, length)
            try:
                state = await self._state_at(name, upload_id, writer.size, info.token)
                await self._ingest(body, writer, state)
                await writer.commit()
            except BaseException:
                if self.driver.local_path(data_path) is None:
                    # A remote writer that fails keeps none of this request's bytes.
                    self._states.pop(upload_id, None)
                elif length is not None:
                    # A chunk with a declared range is all or nothing: undo what arrived, so
                    # the client's retry of the same range fits.
                    self._states.pop(upload_id, None)
                    await writer.truncate(current)
                raise
            finally:
                await writer.close()
            if state is not None:
                state.token = writer.token
            return writer.size

    async def finish(
        self,
        name: str,
        upload_id: str,
        digest: Digest,
        body: Body | None = None,
        start: int | None = None,
        length: int | None = None,
    ) -> BlobInfo:
        """Append an optional final chunk (exactly ``length`` bytes when a Content-Range said
        so), verify the digest, then publish the blob atomically."""
        if body is not None:
            await self.append(name, upload_id, body, start, length)
        async with self._lock(upload_id):
            try:
                info = await self._stat_data(name, upload_id)
            except RegistryError:
                resumed = await self._finish_interrupted(name, upload_id, digest)
                if resumed is None:
                    raise
                return resumed
            size = info.size
            actual = await self._final_digest(name, upload_id, info, digest.algorithm)
            data_path = paths.upload_data(name, upload_id)
            if actual != digest:
                await self._discard(name, upload_id)
                raise RegistryError(
                    ErrorCode.DIGEST_INVALID,
                    detail={"expected": str(digest), "actual": str(actual)},
                )
            try:  # before the blob becomes visible: a refused upload leaves nothing behind
                await self.blobs.charge(name, [(digest, size)])
            except RegistryError:
                await self._discard(name, upload_id)
                raise
            existing = await self.blobs.stat(digest)
            fence = self.blobs.fence
            # Garbage collection may be deleting it: wait, then look again.
            if existing is not None and fence is not None and await fence.guard([digest], name):
                existing = await self.blobs.stat(digest)
            # docs/ordering.md: the blob, then the repository's link, then the upload goes.
            if existing is None:
                await self.driver.move(data_path, paths.blob_data(digest))
                crash_point("upload.finish.after-move")
            else:
                self.blobs.refresh(digest)
            await self.blobs.link(name, digest)
            crash_point("upload.finish.after-link")
            await self._discard(name, upload_id)
            return BlobInfo(digest, size, None)

    async def _finish_interrupted(
        self, name: str, upload_id: str, digest: Digest
    ) -> BlobInfo | None:
        """A retried PUT whose first attempt died after moving the verified data to its digest
        but before linking it (a replica killed mid-request): the upload still has its
        ``startedat`` and no data, and the blob is in place, so finish the link.

        Only data that passed verification is ever moved to a digest, and a live upload always
        has a data file (``start`` creates it), so this cannot be used to link arbitrary blobs.
        """
        try:
            await self.driver.stat(paths.upload_startedat(name, upload_id))
        except PathNotFoundError:
            return None
        try:
            await self.driver.stat(paths.upload_data(name, upload_id))
            return None  # data present: the ordinary path's error stands
        except PathNotFoundError:
            pass
        size = await self.blobs.stat(digest)
        if size is None:
            return None
        await self.blobs.charge(name, [(digest, size)])
        await self.blobs.link(name, digest)
        await self._discard(name, upload_id)
        return BlobInfo(digest, size, None)

    async def purge(self, repositories: list[str], older_than: float, dry_run: bool = False) -> int:
        """Delete uploads started more than ``older_than`` seconds ago (registry:2's purging)."""
        cutoff = time.time() - older_than
        purged = 0
        for name in repositories:
            try:
                ids = await self.driver.list(paths.uploads(name))
            except PathNotFoundError:
                continue
            for path in ids:
                upload_id = paths.parse(path).upload_id
                if not upload_id:
                    continue
                try:
                    startedat = paths.upload_startedat(name, upload_id)
                    raw = (await self.driver.get_content(startedat)).decode().strip()
                    started = datetime.strptime(raw[:19], "%Y-%m-%dT%H:%M:%S")
                    started_ts = started.replace(tzinfo=UTC).timestamp()
                except (PathNotFoundError, ValueError):
                    started_ts = (await self.driver.stat(path)).mtime
                if started_ts < cutoff:
                    purged += 1
                    log.info("purging upload %s/%s%s", name, upload_id, " (dry run)" * dry_run)
                    if not dry_run:
                        self._states.pop(upload_id, None)
                        with contextlib.suppress(PathNotFoundError):
                            await self.driver.delete(path)
        return purged

    # -- hashing -----------------------------------------------------------------------------

    def _lock(self, upload_id: str) -> asyncio.Lock:
        lock = self._locks.get(upload_id)
        if lock is None:
            if len(self._locks) > MAX_HASH_STATES:
                for key in [k for k, v in self._locks.items() if not v.locked()]:
                    del self._locks[key]
            lock = self._locks[upload_id] = asyncio.Lock()
        return lock

    async def _state_at(
        self, name: str, upload_id: str, size: int, token: str | None
    ) -> _HashState | None:
        """The running hash to continue, or None to append unhashed (see the module doc)."""
        state = self._states.get(upload_id)
        if state is None or state.offset != size or state.token != token:
            data_path = paths.upload_data(name, upload_id)
            if size == 0:
                state = _HashState(hashlib.sha256(), 0, token)
            elif self.driver.local_path(data_path) is None:
                self._states.pop(upload_id, None)
                return None
            else:
                hasher = hashlib.sha256()
                await self._hash_stored(data_path, hasher)
                state = _HashState(hasher, size, token)
        self._states[upload_id] = state
        self._states.move_to_end(upload_id)
        while len(self._states) > MAX_HASH_STATES:
            self._states.popitem(last=False)
        return state

    async def _final_digest(
        self, name: str, upload_id: str, stored: FileInfo, algorithm: str
    ) -> Digest:
        state = self._states.get(upload_id)
        if (
            algorithm == "sha256"
            and state is not None
            and state.offset == stored.size
            and state.token == stored.token
        ):
            return Digest("sha256", state.hasher.hexdigest())
        hasher = hashlib.new(algorithm)
        await self._hash_stored(paths.upload_data(name, upload_id), hasher)
        return Digest(algorithm, hasher.hexdigest())

    async def _hash_stored(self, path: str, hasher: Any) -> None:
        local = self.driver.local_path(path)
        if local is not None:
            # Read into a pooled buffer: a fresh megabyte per read, allocated in an executor
            # thread's own malloc arena, stayed resident after the uploads that needed it.
            buf = await self.buffers.acquire()
            job = asyncio.get_running_loop().run_in_executor(None, _hash_file, local, hasher, buf)
            job.add_done_callback(lambda _: self.buffers.release(buf))
            await asyncio.shield(job)  # cancelled or not, the buffer returns when the thread ends
            return
        # A streaming read from the store, hashing each buffer while the next one arrives.
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[Any] | None = None
        async for chunk in self.driver.reader(path):
            if pending is not None:
                await pending
            pending = loop.run_in_executor(None, hasher.update, chunk)
        if pending is not None:
            await pending

    async def _ingest(self, body: Body, writer: FileWriter, state: _HashState | None) -> None:
        """Read the body into pooled buffers (see :mod:`.buffers`) and write and hash each full
        one in worker threads while the next one fills."""
        pool = self.buffers
        pending: asyncio.Future[None] | None = None
        buf: bytearray | None = None
        space = memoryview(b"")  # buf, as the view the body reads into
        filled = 0

        async def submit() -> None:
            nonlocal pending, buf, space, filled
            assert buf is not None
            if pending is not None:
                await pending  # in order: the previous buffer is written and hashed first
                pending = None
            data, held, size = space[:filled], buf, filled
            space.release()
            buf, filled = None, 0
            if state is not None:
                state.offset += size
            if size < INLINE_LIMIT:  # small: no thread hop
                try:
                    if state is not None:
                        state.hasher.update(data)
                    await writer.write(data)
                finally:
                    data.release()
                    pool.release(held)
            else:
                pending = _write_and_hash(writer, data, state, lambda: pool.release(held))

        try:
            while True:
                if buf is None:
                    buf = await pool.acquire()
                    space = memoryview(buf)
                n = await body.readinto(space[filled:])
                if not n:
                    break
                filled += n
                if filled == pool.size or (filled >= HAND_ON and pool.contended):
                    await submit()
            if buf is not None and filled:
                await submit()
            if pending is not None:
                await pending
                pending = None
        finally:
            if buf is not None:
                space.release()
                pool.release(buf)
            if pending is not None:
                # The client went away mid-chunk: let the last write land so the stored size and
                # the hash offset agree, or the next request re-hashes from storage.
                with contextlib.suppress(Exception):
                    await pending

    async def _discard(self, name: str, upload_id: str) -> None:
        self._states.pop(upload_id, None)
        with contextlib.suppress(PathNotFoundError):
            await self.driver.delete(paths.upload_dir(name, upload_id))


def _write_and_hash(
    writer: FileWriter, data: memoryview, state: _HashState | None, done: Callable[[], None]
) -> asyncio.Future[None]:
    """Write ``data`` and feed it to the running hash, each in a worker thread; ``done`` runs
    once *both* have finished with ``data`` (not when the first one fails), so that its buffer
    is never reused while a thread still reads it."""
    loop = asyncio.get_running_loop()
    jobs: list[asyncio.Future[Any]] = [asyncio.ensure_future(writer.write(data))]
    if state is not None:
        jobs.append(loop.run_in_executor(None, state.hasher.update, data))
    result: asyncio.Future[None] = loop.create_future()
    left = len(jobs)

    def finished(_: asyncio.Future[Any]) -> None:
        nonlocal left
        left -= 1
        if left:
            return
        done()
        if result.cancelled():
            return
        errors = [e for j in jobs if not j.cancelled() and (e := j.exception()) is not None]
        if errors:
            result.set_exception(errors[0])
        elif any(j.cancelled() for j in jobs):
            result.cancel()
        else:
            result.set_result(None)

    for job in jobs:
        job.add_done_callback(finished)
    return result


def _hash_file(path: str, hasher: Any, buf: bytearray) -> None:
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            hasher.update(view[:n])
