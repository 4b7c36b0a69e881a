"""A replica's own disk cache of blobs held in remote storage (``storage.cache.blobdir``).

Without it, every GET of a blob on S3 with redirects off streams the object from the bucket
through this process: the store serves each blob once per pull, and the replica hashes every
byte it forwards (:mod:`cargohold.registry.integrity`). In a pull storm that is most of the
work. With it, the first GET of a blob on a replica streams from the store as before *and*
writes the bytes to a part file here while they are hashed; when the whole blob arrived and
its digest matched, the part file is renamed into place (a mismatch keeps nothing). Later GETs
are sent from the local file with ``sendfile``, and the file the fill just verified is not
hashed again by this process.

Content-addressed, so a cached file never goes stale: it is only ever consulted *after* the
registry's own checks for the request passed (the repository's link, the blob's presence in
the store), so a blob deleted or collected in the store answers 404 whatever sits here.

Concurrency: one fill per digest per host. In a process, later misses for a digest being
filled wait for that fill and are then sent from the file (or stream from the store
themselves if it failed or takes too long). Across the worker processes of one host the part
file is created with ``O_EXCL`` and held under ``flock``: a worker that finds another's part
file streams from the store as before. A part file whose ``flock`` can be taken belongs to a
process that died; the sweep removes it.

Bounded: after each fill (and at start) a sweep sums the cached files and removes the least
recently used (by atime, which a hit sets) until the total is under ``blobdirsize``. Removing
a file that is being sent is safe: the open file lives until its ``sendfile`` finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from cargohold import metrics
from cargohold.config.model import StorageConfig
from cargohold.digest import Digest
from cargohold.registry.integrity import BlobVerifier, identity

log = logging.getLogger("cargohold.blobcache")

PART = ".part"
# How long a miss waits for another request's fill of the same blob before streaming from the
# store itself: a fill goes at its client's pace, and a stalled client must not hold the rest.
FILL_WAIT = 30.0
# A hit refreshes the file's atime (the eviction order) at most this often.
TOUCH_EVERY_NS = 10 * 1_000_000_000


@dataclass
class Fill:
    """One blob being written to the cache while it streams to the first client."""

    cache: LocalBlobCache
    digest: Digest
    fd: int
    part: str
    written: int = 0
    failed: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stored: bool = False

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` (on the event loop: page-cache writes of a chunk cost less than a
        thread hand-off). A write that fails (disk full) gives the fill up; the client's
        stream is not affected."""
        if self.failed:
            return
        try:
            view = memoryview(chunk)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
            self.written += len(chunk)
        except OSError as exc:
            log.warning("blob cache: writing %s failed, not caching it: %s", self.part, exc)
            self.failed = True

    def commit(self, verifier: BlobVerifier) -> bool:
        """Put the verified blob in place; its identity is recorded as verified so this
        process sends it without hashing it again."""
        if self.failed:
            self.abort()
            return False
        final = self.cache.path_of(self.digest)
        try:
            key = identity(os.fstat(self.fd))
            os.rename(self.part, final)
        except OSError as exc:  # e.g. the part file was taken for a dead one's and removed
            log.warning("blob cache: could not put %s in place: %s", final, exc)
            self.abort()
            return False
        verifier.trust(key)
        self.stored = True
        self._close()
        metrics.blob_cache_fill("stored", self.written)
        self.cache.filled()
        return True

    def abort(self, result: str = "abandoned") -> None:
        """Keep nothing (the stream broke, or the bytes did not match their digest)."""
        if self.stored or self.fd < 0:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.part)
        self._close()
        metrics.blob_cache_fill(result, 0)

    def _close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # releases the flock
            self.fd = -1
        self.cache._fills.pop(self.digest, None)
        self.done.set()


class LocalBlobCache:
    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._fills: dict[Digest, Fill] = {}
        self._sweeping = threading.Lock()
        os.makedirs(directory, exist_ok=True)
        self.sweep()  # part files of a killed process; a smaller bound than last time

    def path_of(self, digest: Digest) -> str:
        # Digest.parse allows only [a-z0-9.+_-] in the algorithm and [a-zA-Z0-9=_-] in the
        # hex: no separator, so the name stays in this directory.
        return os.path.join(self.directory, f"{digest.algorithm}-{digest.hex}")

    def lookup(self, digest: Digest, size: int) -> tuple[str, os.stat_result] | None:
        """The cached file of ``digest`` if it is there whole; a hit refreshes its atime."""
        path = self.path_of(digest)
        try:
            st = os.stat(path)
        except OSError:
            return None
        if st.st_size != size:  # cannot be from a verified fill: not ours to trust
            self.discard(path)
            return None
        now = time.time_ns()
        if now - st.st_atime_ns > TOUCH_EVERY_NS:
            with contextlib.suppress(OSError):
                os.utime(path, ns=(now, st.st_mtime_ns))  # the mtime is part of its identity
        return path, st

    def discard(self, path: str) -> None:
        """Remove a cached file found bad (hashing it failed): the next GET fills it anew."""
        log.error("blob cache: removing %s, which does not match its digest", path)
        with contextlib.suppress(OSError):
            os.unlink(path)

    async def wait_for_fill(self, digest: Digest) -> bool:
        """Whether a fill of ``digest`` was in progress in this process and stored the blob."""
        fill = self._fills.get(digest)
        if fill is None:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(fill.done.wait()), FILL_WAIT)
        return fill.stored

    def begin_fill(self, digest: Digest) -> Fill | None:
        """A new fill of ``digest``, or None if one is already under way on this host (or
        the directory cannot take it)."""
        if digest in self._fills:
            return None
        part = self.path_of(digest) + PART
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return None  # another worker fills it (or died doing so: the sweep removes it)
        except OSError as exc:
            log.warning("blob cache: cannot create %s: %s", part, exc)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a sweep of another worker took it for a dead one's; give it up
            os.close(fd)
            return None
        if os.path.exists(self.path_of(digest)):  # another worker's fill landed meanwhile
            os.unlink(part)
            os.close(fd)
            return None
        fill = Fill(self, digest, fd, part)
        self._fills[digest] = fill
        return fill

    def filled(self) -> None:
        """After a fill: sweep in a thread if the bound may be passed."""
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, self.sweep)

    def sweep(self) -> None:
        """Remove dead part files, then the least recently used blobs over the bound."""
        if not self._sweeping.acquire(blocking=False):
            return
        try:
            files: list[tuple[int, int, str]] = []
            total = 0
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if entry.name.endswith(PART):
                        if _dead(entry.path):
                            with contextlib.suppress(OSError):
                                os.unlink(entry.path)
                            continue
                        total += st.st_size
                    elif entry.is_file(follow_symlinks=False):
                        total += st.st_size
                        files.append((st.st_atime_ns, st.st_size, entry.path))
            if total <= self.max_bytes:
                return
            files.sort()
            for _atime, size, path in files:
                if total <= self.max_bytes:
                    break
                with contextlib.suppress(OSError):
                    os.unlink(path)  # a sendfile in flight keeps its open file
                    total -= size
                    metrics.blob_cache_evicted(size)
        except OSError as exc:
            log.warning("blob cache: sweeping %s failed: %s", self.directory, exc)
        finally:
            self._sweeping.release()


def _dead(path: str) -> bool:
    """Whether the part file's writer is gone: its ``flock`` is free."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    finally:
        os.close(fd)
    return True


def from_config(storage: StorageConfig) -> LocalBlobCache | None:
    """The cache ``storage.cache.blobdir`` asks for, if the driver is a remote one."""
    if not storage.cache_blobdir:
        return None
    if storage.driver == "filesystem":
        log.warning(
            "storage.cache.blobdir is ignored with the filesystem driver: its blob files are "
            "already local and sent as they are"
        )
        return None
    log.info(
        "local blob cache in %s, up to %d bytes", storage.cache_blobdir, storage.cache_blobdirsize
    )
    try:
        return LocalBlobCache(storage.cache_blobdir, storage.cache_blobdirsize)
    except OSError as exc:
        log.error(
            "storage.cache.blobdir: cannot use %s, no local blob cache: %s",
            storage.cache_blobdir,
            exc,
        )
        return None
