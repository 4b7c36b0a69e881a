"""Coalesced upstream fetches: one upstream request per missing blob or manifest per host.

Every worker process of a host sees the same directory of fetch files (under the storage
root's ``_cargohold/mirror/fetch`` on the filesystem driver, in the system's temp directory
otherwise). For a missing blob ``<hex>``:

- ``<hex>.lock``: whoever holds ``flock(LOCK_EX)`` on it is the one fetching. The lock dies with
  its process, so a fetcher that crashes never blocks the others. The fetcher removes the file
  (still holding the lock) when it is done, so the directory does not keep one file per blob
  ever fetched; a lock is therefore only worth something while its file is still the path's
  (:func:`_lock_at`: the usual lock-then-check-the-inode), and whoever wins a removed file
  opens (creates) the path again. Manifest and tag locks (``.mlock``) work the same way.
- ``<hex>.meta``: ``{"id", "size", "part"}``, written by the fetcher once the upstream answered.
- ``<hex>.<id>.part``: the bytes as they arrive. Every other request for the blob, in this
  process or another, opens it and sends what is there, then waits for more: nobody waits for
  the whole blob, and the upstream is read once.
- ``<hex>.result``: ``{"id", "ok", "status", "message"}``, written before the lock is released.

The fetcher hashes as it writes and, only when the digest and size match, renames the part file
to the blob's place in the store (one atomic rename, as uploads do; other drivers get a copy and
a move). Readers hold back the last byte of the announced size until the result says the fetch
with *their* id succeeded, so a corrupt or truncated upstream blob never reaches a client as a
complete-looking body: their connections are aborted instead. The fetch runs in its own task, so
a client that disconnects (even the one that started it) does not cancel it for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from cargohold.atomicfile import write_atomic
from cargohold.digest import Digest
from cargohold.errors import ErrorCode, RegistryError
from cargohold.mirror.replicas import ReplicaLocks
from cargohold.mirror.upstream import NotFound, Refused, Response, UpstreamError
from cargohold.registry.integrity import Identity, identity
from cargohold.storage import paths
from cargohold.storage.driver import PathNotFoundError, StorageDriver

log = logging.getLogger("cargohold.mirror")

CHUNK = 1 << 20
POLL = 0.02  # seconds between looks at a fetch running in another process
ATTACH_TRIES = 4
SWEEP_AGE = 3600.0  # results and leftovers older than this are removed (worker 0, hourly)
REPLICA_POLL = 0.2  # seconds between looks for a blob another replica is fetching


@dataclass(frozen=True, slots=True)
class Described:
    """A manifest the upstream has and this mirror does not store: what a HEAD answers."""

    digest: Digest
    media_type: str
    size: int


class FetchFailed(Exception):
    """The fetch this request was following failed after bytes were sent: abort the response."""


def error_of(exc: UpstreamError, what: str) -> RegistryError:
    """The spec's error for an upstream failure on content that is not cached."""
    if isinstance(exc, NotFound):
        code = ErrorCode.BLOB_UNKNOWN if what == "blob" else ErrorCode.MANIFEST_UNKNOWN
        return RegistryError(code, f"the upstream has no such {what}")
    if isinstance(exc, Refused):
        return RegistryError(ErrorCode.DENIED, f"the upstream refused to serve this {what}")
    return RegistryError(
        ErrorCode.UNAVAILABLE, f"the upstream cannot be reached and this {what} is not cached"
    )


def _read_json(path: str) -> dict[str, object] | None:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _write_json(path: str, doc: dict[str, object]) -> None:
    # Readers in other processes must see it whole; durable it need not be (a crash loses
    # only the bookkeeping of fetches that died with it).
    write_atomic(path, json.dumps(doc).encode(), fsync=False)


def _lock_free(fd: int) -> bool:
    """Whether nobody holds the fetch lock (a shared lock can be had, and is let go at once);
    ``fd`` -1 (no lock file) is free."""
    if fd < 0:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def _lock_at(fd: int, path: str) -> bool:
    """``flock(LOCK_EX | LOCK_NB)`` on ``fd``, opened from ``path``: True when it is held and
    the file is still the one at ``path`` (a holder that was done may have removed it after we
    opened it: that lock guards nothing, and is let go). BlockingIOError when another holds it."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        here = os.stat(path)
    except FileNotFoundError:
        here = None
    own = os.fstat(fd)
    if here is not None and (here.st_dev, here.st_ino) == (own.st_dev, own.st_ino):
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _acquire(path: str) -> int | None:
    """The descriptor holding the lock file at ``path``, or None when another holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if _lock_at(fd, path):
                return fd
        except BlockingIOError:
            os.close(fd)
            return None
        os.close(fd)  # removed under us by a holder that was done: open the path anew


def _release(fd: int, path: str) -> None:
    """Remove a held lock file, then let go of it: a waiter that opened it finds it is no longer
    the path's (:func:`_lock_at`), and a newcomer creates a new one."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    os.close(fd)


def _open_lock(path: str) -> int:
    """A descriptor to watch the lock at ``path`` with :func:`_lock_free`; -1 when there is no
    file (nobody fetching: its holder removed it when it was done)."""
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return -1


async def stored(driver: StorageDriver, d: Digest) -> bool:
    """Whether blob ``d`` is in the store."""
    try:
        await driver.stat(paths.blob_data(d))
    except PathNotFoundError:
        return False
    return True


def _write_hash(fd: int, hasher: hashlib._Hash, data: bytes) -> None:
    hasher.update(data)
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


@dataclass
class _Local:
    """A fetch running in this process: readers here wake on its writes instead of polling."""

    event: asyncio.Event


class Tail:
    """Follows one fetch's part file: the bytes so far, then the rest as it grows."""

    def __init__(
        self, fetches: BlobFetches, digest: Digest, meta: dict[str, object], fd: int
    ) -> None:
        self._fetches = fetches
        self.digest = digest
        self.id = str(meta["id"])
        size = meta.get("size")
        self.size: int | None = size if isinstance(size, int) else None
        self._fd = fd
        self.file = os.fdopen(fd, "rb", buffering=0, closefd=False)  # for loop.sendfile
        self._lock_fd = _open_lock(fetches.lock_path(digest))

    def close(self) -> None:
        """Idempotent: closing a descriptor number twice could close someone else's."""
        fds, self._fd, self._lock_fd = (self._fd, self._lock_fd), -1, -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)

    async def _wait(self) -> None:
        local = self._fetches.local.get(self.digest.hex)
        if local is None:
            await asyncio.sleep(POLL)
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(local.event.wait(), POLL * 5)

    def _succeeded(self) -> bool:
        result = _read_json(self._fetches.result_path(self.digest))
        return result is not None and result.get("id") == self.id and result.get("ok") is True

    async def segments(
        self, start: int = 0, stop: int | None = None
    ) -> AsyncIterator[tuple[int, int]]:
        """``(offset, count)`` of the bytes of :attr:`file` that may be sent, as they arrive
        (sent with ``sendfile``, as stored blobs are: no copy through Python), from ``start``
        up to ``stop`` (a range; default: to the end)."""
        pos = start
        if stop is None:
            stop = self.size
        # Everything but the last byte may go out before the blob is verified (of a range,
        # its last byte: no unverified body looks complete).
        limit = stop - 1 if stop is not None else None
        try:
            while True:
                end = os.fstat(self._fd).st_size
                if limit is not None:
                    end = min(end, limit)
                if end > pos:
                    yield pos, end - pos
                    pos = end
                    continue
                if not _lock_free(self._lock_fd):
                    await self._wait()
                    continue
                # The fetch is over: verified (ours) or failed.
                if not self._succeeded():
                    raise FetchFailed(f"the upstream fetch of {self.digest} failed")
                end = os.fstat(self._fd).st_size
                if self.size is not None and end != self.size:
                    raise FetchFailed(f"{self.digest}: {end} of {self.size} bytes")
                if stop is not None:
                    end = min(end, stop)
                if end > pos:
                    yield pos, end - pos
                return
        finally:
            self.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The same bytes, read (for callers that are not an HTTP response)."""
        async for offset, count in self.segments():
            done = 0
            while done < count:
                data = os.pread(self._fd, min(CHUNK, count - done), offset + done)
                if not data:
                    raise FetchFailed(f"{self.digest}: the part file is shorter than announced")
                done += len(data)
                yield data


class BlobFetches:
    """The fetch files of one store, and the fetches this process runs."""

    def __init__(
        self,
        driver: StorageDriver,
        replicas: ReplicaLocks | None = None,
        verified: Callable[[Identity], None] | None = None,
    ) -> None:
        self.driver = driver
        self.replicas = replicas
        # Told the identity of each blob file this process published: hashed as it arrived,
        # it need not be hashed again before this process first serves it from the store.
        self.verified = verified
        local_root = driver.local_path("/")
        if local_root is not None:
            self.dir = local_root + paths.MIRROR_FETCH
        else:
            tag = hashlib.sha256(driver.identity.encode()).hexdigest()[:16]
            self.dir = os.path.join(tempfile.gettempdir(), f"cargohold-mirror-{tag}")
        os.makedirs(self.dir, exist_ok=True)
        self.local: dict[str, _Local] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._manifest_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def lock_path(self, d: Digest) -> str:
        return os.path.join(self.dir, f"{d.algorithm}-{d.hex}.lock")

    def meta_path(self, d: Digest) -> str:
        return os.path.join(self.dir, f"{d.algorithm}-{d.hex}.meta")

    def result_path(self, d: Digest) -> str:
        return os.path.join(self.dir, f"{d.algorithm}-{d.hex}.result")

    async def stored(self, d: Digest) -> bool:
        return await stored(self.driver, d)

    # -- blobs -----------------------------------------------------------------------------

    async def open(
        self, d: Digest, opener: Callable[[], Awaitable[Response]]
    ) -> tuple[Tail | None, bool]:
        """``(None, _)`` when the blob is (now) in the store; else a :class:`Tail` following the
        fetch, and whether it is another request's fetch (a coalesced wait). Raises the spec's
        error when the fetch fails before any byte could be sent."""
        coalesced = False
        for _ in range(ATTACH_TRIES):
            if await self.stored(d):
                return None, coalesced
            began = time.time()
            fd = _acquire(self.lock_path(d))
            if fd is None:
                coalesced = True
            else:
                if await self.stored(d):
                    _release(fd, self.lock_path(d))
                    return None, coalesced
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.meta_path(d))
                fetch_id = uuid.uuid4().hex
                self.local[d.hex] = _Local(asyncio.Event())
                task = asyncio.create_task(self._fetch(d, fd, fetch_id, opener))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            tail = await self._attach(d, began)
            if tail is not None:
                return tail, coalesced
        raise RegistryError(ErrorCode.UNAVAILABLE, "the upstream fetch did not complete")

    async def _attach(self, d: Digest, began: float) -> Tail | None:
        lock_fd = _open_lock(self.lock_path(d))
        try:
            while True:
                meta = _read_json(self.meta_path(d))
                if meta is not None and isinstance(meta.get("part"), str):
                    try:
                        fd = os.open(os.path.join(self.dir, str(meta["part"])), os.O_RDONLY)
                    except FileNotFoundError:
                        fd = -1
                    if fd >= 0:
                        return Tail(self, d, meta, fd)
                if _lock_free(lock_fd):
                    if await self.stored(d):
                        return None
                    result = _read_json(self.result_path(d))
                    if (
                        result is not None
                        and not result.get("ok")
                        and float(result.get("time", 0)) >= began - 1  # type: ignore[arg-type]
                    ):
                        code = ErrorCode.__members__.get(str(result.get("code")))
                        raise RegistryError(
                            code or ErrorCode.UNAVAILABLE,
                            str(result.get("message", "the upstream fetch failed")),
                        )
                    return None
                local = self.local.get(d.hex)
                if local is not None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(local.event.wait(), POLL * 5)
                else:
                    await asyncio.sleep(POLL)
        finally:
            if lock_fd >= 0:
                os.close(lock_fd)

    def _notify(self, d: Digest) -> None:
        local = self.local.get(d.hex)
        if local is not None:
            local.event.set()
            local.event = asyncio.Event()

    async def _fetch(
        self, d: Digest, lock_fd: int, fetch_id: str, opener: Callable[[], Awaitable[Response]]
    ) -> None:
        part = f"{d.algorithm}-{d.hex}.{fetch_id}.part"
        part_path = os.path.join(self.dir, part)
        result: dict[str, object] = {"id": fetch_id, "ok": False, "code": "UNAVAILABLE"}
        fd = -1
        keeper: asyncio.Task[None] | None = None
        try:
            if self.replicas is not None:
                # Another replica fetching it: wait for it in the shared store instead.
                while not await self.replicas.acquire(d):
                    if await self.stored(d):
                        break
                    await asyncio.sleep(REPLICA_POLL)
                else:
                    keeper = asyncio.create_task(self.replicas.keep(d))
                if await self.stored(d):
                    result.update(ok=True, code="")
                    return
            try:
                resp = await opener()
            except UpstreamError as exc:
                err = error_of(exc, "blob")
                log.warning("upstream fetch of %s failed: %s", d, exc)
                result.update(code=err.code.name, message=err.message)
                return
            try:
                length = resp.headers.get("Content-Length")
                size = int(length) if length is not None and length.isdigit() else None
                fd = os.open(part_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
                _write_json(self.meta_path(d), {"id": fetch_id, "size": size, "part": part})
                self._notify(d)
                hasher = hashlib.new(d.algorithm)
                written = 0
                async for chunk in resp.chunks(CHUNK):
                    if len(chunk) >= 65536:
                        await asyncio.to_thread(_write_hash, fd, hasher, chunk)
                    else:
                        _write_hash(fd, hasher, chunk)
                    written += len(chunk)
                    self._notify(d)
            finally:
                resp.release()
            actual = hasher.hexdigest()
            if actual != d.hex or (size is not None and written != size):
                log.error(
                    "upstream sent a blob that does not match %s (%d bytes, %s:%s): not stored",
                    d, written, d.algorithm, actual,
                )  # fmt: skip
                result.update(message="the upstream sent a corrupt blob (digest mismatch)")
                return
            await self._publish(d, part_path)
            result.update(ok=True, code="", size=written)
        except Exception as exc:
            log.warning("upstream fetch of %s failed: %r", d, exc)
            result.update(message=f"the upstream fetch failed: {type(exc).__name__}")
        finally:
            if keeper is not None:
                keeper.cancel()
                assert self.replicas is not None
                await self.replicas.release(d)
            if fd >= 0:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part_path)  # after a rename, already gone; readers keep their fd
            result["time"] = time.time()
            with contextlib.suppress(OSError):
                _write_json(self.result_path(d), result)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.meta_path(d))
            _release(lock_fd, self.lock_path(d))  # waiters read the result
            self._notify(d)
            self.local.pop(d.hex, None)

    async def _publish(self, d: Digest, part_path: str) -> None:
        target = self.driver.local_path(paths.blob_data(d))
        if target is not None:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            try:
                os.link(part_path, target)  # never replaces a blob another path put there
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                return
            if self.verified is not None:
                with contextlib.suppress(OSError):
                    self.verified(identity(os.stat(target)))
            return
        incoming = paths.mirror_incoming(uuid.uuid4().hex)
        writer = await self.driver.writer(incoming)
        try:
            with open(part_path, "rb") as f:
                while data := await asyncio.to_thread(f.read, CHUNK):
                    await writer.write(data)
            await writer.commit()
        except BaseException:
            await writer.cancel()
            raise
        await writer.close()
        await self.driver.move(incoming, paths.blob_data(d))

    def sweep(self, age: float = SWEEP_AGE) -> int:
        """Remove results, tag outcomes and leftovers (of fetchers that died) older than ``age``
        whose blob nobody is fetching, and the lock files that dead fetchers left (taken first,
        then removed: see :func:`_lock_at`)."""
        removed = 0
        cutoff = time.time() - age
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return 0
        for name in names:
            path = os.path.join(self.dir, name)
            if name.endswith(".lock") or name.endswith(".mlock"):
                removed += self._sweep_lock(path, cutoff)
                continue
            try:
                if os.stat(path).st_mtime >= cutoff:
                    continue
                lock = os.path.join(self.dir, name.split(".", 1)[0] + ".lock")
                try:
                    fd = os.open(lock, os.O_RDWR)
                except FileNotFoundError:
                    fd = -1  # no lock file: nobody is fetching it
                try:
                    if fd >= 0 and not _lock_free(fd):
                        continue
                    os.unlink(path)
                    removed += 1
                finally:
                    if fd >= 0:
                        os.close(fd)
            except FileNotFoundError:
                continue
        return removed

    @staticmethod
    def _sweep_lock(path: str, cutoff: float) -> int:
        try:
            if os.stat(path).st_mtime >= cutoff:
                return 0
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return 0
        try:
            held = _lock_at(fd, path)
        except BlockingIOError:
            held = False  # someone is fetching it right now
        if not held:
            os.close(fd)
            return 0
        _release(fd, path)
        return 1

    def busy(self) -> bool:
        """Whether a blob fetch is running on this host (a lock file is held: done fetches
        remove theirs). A blob whose image was evicted while it was arriving lands in the
        store unreferenced, so the collector must run again after it."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return False
        for name in names:
            if not name.endswith(".lock"):
                continue
            fd = _open_lock(os.path.join(self.dir, name))
            try:
                if not _lock_free(fd):
                    return True
            finally:
                if fd >= 0:
                    os.close(fd)
        return False

    # -- manifests -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def exclusive(self, stem: str) -> AsyncIterator[bool]:
        """Held while fetching a manifest (``stem``: :meth:`stem_of` its digest) or checking a
        tag upstream (:meth:`tag_stem`): one request of the host asks the upstream, the others
        wait here and then find its outcome. Yields whether another request held it first."""
        lock = self._manifest_locks.get(stem)
        if lock is None:
            lock = self._manifest_locks[stem] = asyncio.Lock()
        waited = lock.locked()
        async with lock:
            path = os.path.join(self.dir, f"{stem}.mlock")
            while (fd := _acquire(path)) is None:
                waited = True
                await asyncio.sleep(POLL / 2)
            try:
                yield waited
            finally:
                _release(fd, path)

    @staticmethod
    def stem_of(d: Digest) -> str:
        return f"{d.algorithm}-{d.hex}"

    @staticmethod
    def tag_stem(name: str, tag: str) -> str:
        return "tag-" + hashlib.sha256(f"{name}:{tag}".encode()).hexdigest()[:40]

    def outcome(self, stem: str) -> tuple[float, str] | None:
        """When the last check under ``stem`` ended, and how ("ok", "missing", "down", or
        "described": a HEAD found a manifest that is not stored, see :meth:`described`)."""
        doc = _read_json(os.path.join(self.dir, f"{stem}.checked"))
        if doc is None:
            return None
        try:
            return float(doc["time"]), str(doc["state"])  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            return None

    def described(self, stem: str) -> tuple[float, Described] | None:
        """When a HEAD's check under ``stem`` ended, and the manifest it found not stored."""
        doc = _read_json(os.path.join(self.dir, f"{stem}.checked"))
        if doc is None or doc.get("state") != "described":
            return None
        digest = Digest.try_parse(str(doc.get("digest")))
        size, media_type, when = doc.get("size"), doc.get("mediaType"), doc.get("time")
        if digest is None or not isinstance(size, int) or not isinstance(media_type, str):
            return None
        if not isinstance(when, (int, float)):
            return None
        return float(when), Described(digest, media_type, size)

    def record(self, stem: str, state: str, described: Described | None = None) -> None:
        doc: dict[str, object] = {"time": time.time(), "state": state}
        if described is not None:
            doc.update(
                digest=str(described.digest),
                mediaType=described.media_type,
                size=described.size,
            )
        with contextlib.suppress(OSError):
            _write_json(os.path.join(self.dir, f"{stem}.checked"), doc)

    async def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(task), 5)
        if self.replicas is not None:
            await self.replicas.close()
